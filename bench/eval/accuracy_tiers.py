#!/usr/bin/python3
"""acc-X tiers on Fashion-MNIST through the real server and client (issue 21).

usage: accuracy_tiers.py BUILD_DIR WORK_DIR RESULTS.json [--plain] [--held-out]
                         [--mosaic | --auto-mosaic]
                         [--models M,M] [TIER ...]
       (default tier: acc-0.5; --plain: weightcastd --no-column-weighting, the search without
       weighed columns, for an A/B; --held-out: the bundle holds the first half of the test
       images and the pulled tier is also measured on the other half, which the search never
       saw; --mosaic: the policy codes mlp's and fc_cnn's fc1 as mosaics of the images they
       weigh, "mosaics" in the layer policy; --auto-mosaic: every model's policy has
       "mosaics": {"*": "auto"}, the server finds them; --models: a subset of fc_cnn,mlp,res_cnn)

Trains the reference models as evaluate.py does (cached in WORK_DIR/models), starts weightcastd
on a fresh data directory, registers each model with its evaluation bundle (TorchScript module +
the 10,000 test images) and a ladder of the acc-X tiers only (res_cnn with its convolutions as
pictures at the tier's QP, the policy its budget tiers were measured under), lets the server
search and encode them, pulls each with the `weightcast` CLI as a float state_dict and measures
top-1 here in PyTorch. Records bytes (as % of float32), the wall time from warm to a measured
tier, and the server's count of models it classified for the tier (its search's sensitivity
probes and candidates and the encoded tier's own measurement: weightcast_accuracy_evaluations_total).
"""
import json
import os
import re
import sys
import time
import urllib.request

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evaluate  # noqa: E402
import fashion  # noqa: E402

POLICIES = {"fc_cnn": None, "mlp": None, "res_cnn": evaluate.PICTURE_CONVS}
# --mosaic: the first linear layer's pictures as the images it weighs (common/pack/mosaic.h):
# mlp's fc1 reads 28x28 pixels, fc_cnn's 32 feature maps of 7x7.
MOSAICS = {"mlp": [28, 28], "fc_cnn": [7, 7]}


def evaluations(server, tier):
    with urllib.request.urlopen(server.metrics_url, timeout=30) as response:
        text = response.read().decode()
    match = re.search(r'weightcast_accuracy_evaluations_total\{tier="%s"\} (\S+)' % re.escape(tier), text)
    return int(float(match.group(1))) if match else 0


def main():
    build, work, results_path = sys.argv[1:4]
    rest = sys.argv[4:]
    flags = []
    held_out = False
    mosaic = False
    models = list(POLICIES)
    while rest and rest[0].startswith("--"):
        if rest[0] == "--plain":
            flags.append("--no-column-weighting")
            rest = rest[1:]
        elif rest[0] == "--mosaic":
            mosaic = True
            rest = rest[1:]
        elif rest[0] == "--auto-mosaic":
            mosaic = "auto"
            rest = rest[1:]
        elif rest[0] == "--held-out":
            held_out = True
            rest = rest[1:]
        elif rest[0] == "--models" and len(rest) > 1:
            models = rest[1].split(",")
            rest = rest[2:]
        else:
            sys.exit(f"accuracy_tiers.py: unknown option {rest[0]}")
    if any(m not in POLICIES for m in models):
        sys.exit(f"accuracy_tiers.py: --models takes some of {','.join(POLICIES)}")
    tiers = rest or ["acc-0.5"]
    os.makedirs(os.path.join(work, "models"), exist_ok=True)
    for model in models:
        state = os.path.join(work, "models", model + ".pt")
        fashion.train(model, state)
        module = os.path.join(work, "models", model + ".module.pt")
        if not os.path.exists(module):
            fashion.export(model, state, module, os.path.join(work, "models", "test_data.pt"))
    data = fashion.load("test")
    bundle, unseen = os.path.join(work, "models", "test_data.pt"), None
    if held_out:
        half = len(data[0]) // 2
        bundle = os.path.join(work, "models", "test_data_first_half.pt")
        torch.save({"inputs": data[0][:half].contiguous(), "labels": data[1][:half].contiguous()}, bundle)
        unseen = (data[0][half:], data[1][half:])
    server = evaluate.Server(build, os.path.join(work, "server-acc"), *flags)
    results = {}
    try:
        for model in models:
            policy = POLICIES[model]
            if mosaic == "auto":
                policy = dict(policy or {}, mosaics={"*": "auto"})
            elif mosaic and model in MOSAICS:
                policy = dict(policy or {}, mosaics={"fc1.weight": MOSAICS[model]})
            float_state = fashion.load_state(os.path.join(work, "models", model + ".pt"))
            float_bytes = sum(t.numel() * t.element_size() for t in float_state.values())
            top1, _ = fashion.accuracy_of_state(model, float_state, data)
            unseen_top1 = fashion.accuracy_of_state(model, float_state, unseen)[0] if unseen else None
            start = time.time()
            # The counter is per tier name, across models: this model's are the growth.
            counted = {tier: evaluations(server, tier) for tier in tiers}
            evaluate.register(server, work, model, "acc", tiers, policy, eval_data=bundle)
            info = server.await_tiers(model, "acc")
            seconds = time.time() - start
            rows = []
            for t in info["tiers"]:
                row = {"name": t["name"], "state": t["state"], "error": t["error"],
                       "evaluations": evaluations(server, t["name"]) - counted.get(t["name"], 0)}
                if t["state"] == "READY":
                    path = os.path.join(work, "pulled", model, t["name"] + ".pt")
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    server.run("pull", f"{model}@acc", "--tier", t["name"], "-o", path)
                    pulled_top1, _ = fashion.accuracy(model, path, data)
                    row.update({"bytes": t["bytes"], "percent_of_float32": 100.0 * t["bytes"] / float_bytes,
                                "top1": pulled_top1, "server_top1": t["accuracy"]["top1"],
                                "qps": {l["name"]: l["qp"] for l in t["layers"] if l["qp"]},
                                "weighed": [l["name"] for l in t["layers"]
                                            if "+cols" in l.get("quant_scheme", "")]})
                    if unseen:
                        row["top1_unseen_half"] = fashion.accuracy(model, path, unseen)[0]
                rows.append(row)
                print(f"{model} {t['name']}: {json.dumps(row)}", flush=True)
            results[model] = {"float_top1": top1, "float_top1_unseen_half": unseen_top1,
                              "server_reference_top1": info["reference_accuracy"]["top1"],
                              "float_bytes": float_bytes, "seconds_register_to_measured": seconds, "tiers": rows}
    finally:
        server.stop()
        server.reader.join(timeout=10)
        for line in server.log:
            if " tier acc-" in line:
                print(line, end="")
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
