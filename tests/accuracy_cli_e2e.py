#!/usr/bin/python3
"""Server-reported accuracy against PyTorch's, end to end through weightcastd and the CLI.

Registers SmallNet's checkpoint with its evaluation bundle (the TorchScript module PyTorch wrote
and 64 labelled inputs), waits until the server has measured every tier, pulls every tier as a
float state_dict, loads it into the module in PyTorch and checks that top-1 and top-2 equal the
server's figures, and that the server's output cosine (each tier's logits against the float
model's) equals PyTorch's; then `pull --max-accuracy-drop` takes the smallest tier within the drop.
A second version registered with a bundle of inputs only (no labels) gets the output cosine per
tier, `--min-output-cosine` takes the smallest tier at or above a cosine, and selection by top-1
(`--max-accuracy-drop`, acc-X tiers) is refused clearly; its cos-0.99 tier, found by the server's
search, keeps that cosine in fewer bytes than lossless.
usage: accuracy_cli_e2e.py BUILD_DIR FIXTURE_DIR WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import server_process  # noqa: E402


def accuracy(module, state, data):
    module.load_state_dict(state)
    with torch.no_grad():
        best = module(data["inputs"]).topk(2, 1).indices
    labels = data["labels"][:, None]
    return ((best[:, :1] == labels).any(1).double().mean().item() * 100,
            (best == labels).any(1).double().mean().item() * 100)


def cosine(module, state, reference_state, inputs):
    """Mean over the inputs of the cosine between the outputs under `state` and `reference_state`."""
    with torch.no_grad():
        module.load_state_dict(reference_state)
        expected = module(inputs).double()
        module.load_state_dict(state)
        got = module(inputs).double()
    return torch.nn.functional.cosine_similarity(got, expected, dim=1).mean().item()


def expect_smallest(cli, pull_args, measured, floor):
    """`pull pull_args` takes the smallest tier whose measure (measured: {tier: (bytes, measure)})
    is at least floor, or exits 3 (not found) when none is."""
    fits = [name for name, (size, value) in measured.items() if value >= floor]
    result = subprocess.run(cli + ["pull"] + pull_args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not fits:
        assert result.returncode == 3, result.stdout  # not found
        return
    want = min(fits, key=lambda name: measured[name][0])
    assert result.returncode == 0 and f"tier {want}:" in result.stdout, (pull_args, want, result.stdout)


def warm_and_measure(server, model, version):
    """Warms the version's ladder and waits until every tier is READY with its accuracy measured;
    returns `describe --json`. The bound is generous: a cos-C tier's search encodes and evaluates
    many candidates, and the sanitizer builds run it several times slower on a loaded machine."""
    server.run("warm", model, version)
    deadline = time.time() + 400
    while True:
        info = json.loads(server.run("describe", model, version, "--json"))
        if all(t["state"] == "READY" and t["accuracy"] for t in info["tiers"]):
            return info
        if any(t["state"] == "FAILED" for t in info["tiers"]) or time.time() > deadline:
            server.print_log_tail()
            raise AssertionError(f"{model}/{version}: a tier failed or was not measured in 400 s: {info}")
        time.sleep(0.2)


def main():
    build, fixtures, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    # The cos-0.99 search plain only: the column-weighted second search (twice the encodes and
    # evaluations) is accuracy_e2e_test's; under ThreadSanitizer both did not finish in 400 s.
    server = server_process.Weightcastd(build, os.path.join(work, "data"), "--preset", "ultrafast",
                                        "--no-column-weighting")
    try:
        cli, run = server.cli, server.run
        run("register", "cnn", "v1", os.path.join(fixtures, "cnn_bn.pt"), "--ladder", "lossless,q27,q37,q45",
            "--eval-module", os.path.join(fixtures, "script.pt"), "--eval-data", os.path.join(fixtures, "eval_data.pt"))
        info = warm_and_measure(server, "cnn", "v1")

        module = torch.jit.load(os.path.join(fixtures, "script.pt"))
        data = torch.load(os.path.join(fixtures, "eval_data.pt"))
        float_state = torch.load(os.path.join(fixtures, "cnn_bn.pt"))
        reference = accuracy(module, float_state, data)
        assert info["reference_accuracy"]["output_cosine"] == 1.0, info["reference_accuracy"]
        assert reference == (info["reference_accuracy"]["top1"], info["reference_accuracy"]["top2"]), (reference, info)
        top1 = {}
        for tier in info["tiers"]:
            path = os.path.join(work, tier["name"] + ".pt")
            run("pull", "cnn", "--tier", tier["name"], "-o", path)
            mine = accuracy(module, torch.load(path), data)
            server_says = (tier["accuracy"]["top1"], tier["accuracy"]["top2"])
            print(f"{tier['name']:>9}: PyTorch top-1/top-2 {mine[0]:.2f}/{mine[1]:.2f}, "
                  f"server {server_says[0]:.2f}/{server_says[1]:.2f}")
            assert mine == server_says, (tier["name"], mine, server_says)
            mine_cosine = cosine(module, torch.load(path), float_state, data["inputs"])
            assert abs(mine_cosine - tier["accuracy"]["output_cosine"]) < 1e-5, (tier, mine_cosine)
            top1[tier["name"]] = (tier["bytes"], mine[0])
        assert len({acc for _, acc in top1.values()}) > 1, "every tier scored the same: the check would prove nothing"

        for drop in (0.0, 5.0, 100.0):
            expect_smallest(cli, ["cnn", "--max-accuracy-drop", str(drop), "-o", os.path.join(work, f"drop{drop}.pt")],
                            top1, reference[0] - drop)
        print("server accuracy equals PyTorch's on every tier; --max-accuracy-drop picks the smallest within")

        # A bundle of inputs only: the output cosine is the measure; top-1 selections are refused.
        inputs_only = os.path.join(fixtures, "eval_inputs.pt")
        refused = subprocess.run(cli + ["register", "cnn", "acc", os.path.join(fixtures, "cnn_bn.pt"),
                                        "--ladder", "lossless,acc-1", "--eval-module",
                                        os.path.join(fixtures, "script.pt"), "--eval-data", inputs_only],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert refused.returncode != 0 and "labels" in refused.stdout, refused.stdout
        out = run("register", "cnn", "embed", os.path.join(fixtures, "cnn_bn.pt"), "--ladder", "lossless,q37,cos-0.99",
                  "--eval-module", os.path.join(fixtures, "script.pt"), "--eval-data", inputs_only)
        assert "without labels: 64 inputs" in out, out
        info = warm_and_measure(server, "cnn", "embed")
        assert info["reference_accuracy"]["labelled"] is False, info["reference_accuracy"]
        for tier in info["tiers"]:
            path = os.path.join(work, "embed-" + tier["name"] + ".pt")
            run("pull", "cnn@embed", "--tier", tier["name"], "-o", path)
            mine_cosine = cosine(module, torch.load(path), float_state, data["inputs"])
            assert tier["accuracy"]["labelled"] is False and tier["accuracy"]["top1"] == 0, tier
            assert abs(mine_cosine - tier["accuracy"]["output_cosine"]) < 1e-5, (tier, mine_cosine)
            print(f"embed {tier['name']:>9}: output cosine PyTorch {mine_cosine:.6f}, "
                  f"server {tier['accuracy']['output_cosine']:.6f}")
        # cos-0.99, found by the server's search: its outputs keep the cosine (as PyTorch measures it) in
        # fewer bytes than lossless.
        searched = next(t for t in info["tiers"] if t["name"] == "cos-0.99")
        lossless = next(t for t in info["tiers"] if t["name"] == "lossless")
        assert searched["accuracy"]["output_cosine"] >= 0.99, searched
        assert searched["bytes"] < lossless["bytes"], (searched, lossless)
        print(f"embed cos-0.99: {searched['bytes']} bytes (lossless {lossless['bytes']}), "
              f"output cosine {searched['accuracy']['output_cosine']:.6f}")
        table = run("tiers", "cnn", "embed")
        assert "no labels" in table and "cosine" in table, table
        result = subprocess.run(cli + ["pull", "cnn@embed", "--max-accuracy-drop", "1", "-o",
                                       os.path.join(work, "embed-drop.pt")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert result.returncode != 0 and "no labels" in result.stdout, result.stdout
        # The smallest tier whose cosine is at least C: a label-free selection.
        cosines = {t["name"]: (t["bytes"], t["accuracy"]["output_cosine"]) for t in info["tiers"]}
        for floor in (0.9, 0.99, 0.9999999):
            expect_smallest(cli, ["cnn@embed", "--min-output-cosine", str(floor), "-o",
                                  os.path.join(work, f"embed-cos{floor}.pt")], cosines, floor)
        print("a bundle without labels: every tier's output cosine equals PyTorch's; top-1 selections refused")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
