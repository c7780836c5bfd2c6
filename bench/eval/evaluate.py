#!/usr/bin/python3
"""Accuracy per tier on Fashion-MNIST through the real server and client (issue 6's harness).

usage: evaluate.py BUILD_DIR WORK_DIR RESULTS.json [MODEL,...]

Trains the reference models (cached in WORK_DIR/models), starts weightcastd on a fresh data
directory, registers every model (or the MODELs named) with its evaluation bundle (TorchScript
module + the 10,000 test images) under each layer policy studied, encodes every tier, registers
byte-budget tiers matched to the uniform tiers' sizes, pulls every tier with the `weightcast` CLI
as a float state_dict, measures top-1/top-2 and the output cosine to the float model here in
PyTorch (beside the server's own figures), computes the int8 and requantize+zstd baselines, and
writes everything to RESULTS.json for report.py (with the commit, times and load averages of the
run under "_run").
"""
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures"))
import baselines  # noqa: E402
import fashion  # noqa: E402
import server_process  # noqa: E402

UNIFORM = ["lossless", "q22", "q24", "q26", "q28", "q30", "q32", "q34", "q37"]
SHORT = ["lossless", "q22", "q27", "q32", "q37"]
PICTURE_CONVS = {"min_picture_elements": 512, "convolutions": "picture"}
# mobilenet: convolutions of >= 4096 elements are pictures at the tier's QP (the 1x1 convolutions
# of blocks 1-4: 64x128 to 256x256); the stem, the depthwise convolutions, block 0's 32x64 1x1 and
# the 256x10 classifier stay int8 + zstd.
POINTWISE = {"convolutions": "picture"}

# Per model: what it is, its large FC layers (table columns) and the layer policies studied (one
# registered version each). "budget": also register budget tiers matched to these HEVC tiers.
MODELS = {
    "fc_cnn": {
        "title": "FC-dominated CNN (in the spirit of VGG16): 4 conv layers, FC 1568x1024, 1024x1024, 1024x10",
        "fc": ["fc1.weight", "fc2.weight"],
        "variants": [{"version": "fc", "policy": None, "ladder": UNIFORM, "budget": ["q26", "q28", "q30", "q32", "q34"]}],
    },
    "res_cnn": {
        "title": "Residual CNN with BatchNorm (in the spirit of ResNet18/50): 3 basic blocks, FC 64x10",
        "fc": ["fc.weight"],
        "variants": [
            {"version": "fc", "policy": {"min_picture_elements": 512}, "ladder": SHORT},
            {"version": "conv-qp22", "policy": dict(PICTURE_CONVS, convolution_qp=22), "ladder": SHORT},
            {"version": "conv-qp27", "policy": dict(PICTURE_CONVS, convolution_qp=27), "ladder": SHORT},
            {"version": "conv-tier", "policy": PICTURE_CONVS, "ladder": SHORT, "budget": ["q27", "q32", "q37"]},
        ],
    },
    "mobilenet": {
        "title": "MobileNet-style CNN (in the spirit of MobileNet v1): strided 3x3 stem, 5 depthwise-separable blocks "
                 "(3x3 depthwise + 1x1 pointwise, 32 -> 256 channels), trained with batch norm and registered with it "
                 "folded into every convolution, FC 256x10",
        "fc": ["blocks.3.pw.weight", "blocks.4.pw.weight"],
        # The same tiers with per-tensor int8 scales everywhere (weightcast before issue 21) and with
        # the default front end (auto: per-tensor or per-row scales, chosen per layer).
        "variants": [
            {"version": "per-tensor", "policy": dict(POINTWISE, scheme="per-tensor"), "ladder": SHORT},
            {"version": "auto", "policy": POINTWISE, "ladder": SHORT, "budget": ["q27", "q32", "q37"]},
        ],
    },
    "mlp": {
        "title": "Plain MLP: FC 784x1024, 1024x1024, 1024x10",
        "fc": ["fc1.weight", "fc2.weight"],
        "variants": [{"version": "fc", "policy": None, "ladder": UNIFORM, "budget": ["q26", "q28", "q30", "q32", "q34"]}],
    },
}


class Server(server_process.Weightcastd):
    def __init__(self, build, data_dir, *flags):
        shutil.rmtree(data_dir, ignore_errors=True)
        super().__init__(build, data_dir, "--workers", "2", *flags)

    def describe(self, model, version):
        return json.loads(self.run("describe", model, version, "--json"))

    def await_tiers(self, model, version, limit_s=3600):
        """Describe until every tier is READY with its accuracy measured (or FAILED)."""
        deadline = time.time() + limit_s
        while time.time() < deadline:
            info = self.describe(model, version)
            if all(t["state"] == "FAILED" or (t["state"] == "READY" and t["accuracy"]) for t in info["tiers"]):
                return info
            time.sleep(1)
        raise RuntimeError(f"{model}/{version}: tiers not ready within {limit_s} s")


def register(server, work, model, version, ladder, policy, eval_data=None):
    """Registers MODEL (WORK/models) with its evaluation bundle: the scripted module and EVAL_DATA
    (default: WORK/models/test_data.pt, the 10,000 test images)."""
    args = ["register", model, version, os.path.join(work, "models", model + ".pt"), "--ladder", ",".join(ladder),
            "--eval-module", os.path.join(work, "models", model + ".module.pt"),
            "--eval-data", eval_data or os.path.join(work, "models", "test_data.pt")]
    if policy:
        path = os.path.join(work, f"{model}-{version}.policy.json")
        with open(path, "w") as f:
            json.dump(policy, f)
        args += ["--policy", path]
    server.run(*args)
    server.run("warm", model, version)


def measure_tiers(server, work, model, version, data, reference):
    """Pulls every READY tier as float and measures it here (REFERENCE: the float model's
    logits): list of tier records."""
    info = server.await_tiers(model, version)
    out_dir = os.path.join(work, "pulled", model, version)
    os.makedirs(out_dir, exist_ok=True)
    tiers = []
    for t in info["tiers"]:
        if t["state"] != "READY":
            print(f"{model}/{version} {t['name']}: {t['state']} {t['error']}")
            continue
        path = os.path.join(out_dir, t["name"] + ".pt")
        server.run("pull", f"{model}@{version}", "--tier", t["name"], "-o", path)
        logits = fashion.logits_of_state(model, fashion.load_state(path), data)
        top1, top2 = fashion.accuracy_of_logits(logits, data[1])
        tiers.append({"name": t["name"], "bytes": t["bytes"], "top1": top1, "top2": top2,
                      "cosine": fashion.output_cosine(logits, reference),
                      "server_top1": t["accuracy"]["top1"], "server_top2": t["accuracy"]["top2"],
                      "worst_layer_sqnr_db": t["worst_layer_sqnr_db"], "worst_layer": t["worst_layer"],
                      "per_channel": [l["name"] for l in t["layers"] if "channel" in l["quant_scheme"]],
                      "layers": t["layers"], "path": path})
        print(f"{model}/{version} {t['name']:>16}: {t['bytes']:>9} B  top-1 {top1:.2f} (server {t['accuracy']['top1']:.2f})"
              f"  cosine {tiers[-1]['cosine']:.4f}  worst layer {t['worst_layer_sqnr_db']} dB", flush=True)
    return info, tiers


def requant_baselines(model, float_state, tiers, data):
    """For each HEVC tier: uniform requantization + zstd of the same layers within its bytes."""
    lossless = next(t for t in tiers if t["name"] == "lossless")
    base_state = torch.load(lossless["path"])
    rows = []
    for t in tiers:
        hevc = [l for l in t["layers"] if l["codec"] == "LAYER_CODEC_HEVC"]
        if not hevc or t["name"].startswith("budget"):
            continue
        target = sum(l["bytes"] for l in hevc)
        weights = {l["name"]: float_state[l["name"]] for l in hevc}
        coded, sizes, step = baselines.requantize_to_size(weights, target)
        coded_bytes = sum(sizes.values())
        state = dict(base_state)
        state.update(coded)
        top1, top2 = fashion.accuracy_of_state(model, state, data)
        rows.append({"matched": t["name"], "bytes": t["bytes"] - target + coded_bytes, "step": step, "top1": top1,
                     "top2": top2, "sqnr": {n: baselines.sqnr_db(weights[n], coded[n]) for n in coded},
                     "bits_per_weight": {n: 8 * sizes[n] / weights[n].numel() for n in coded}})
        print(f"{model} requant+zstd ~{t['name']}: {rows[-1]['bytes']} B step {step:.2f} top-1 {top1:.2f}")
    return rows


def main():
    build, work, results_path = sys.argv[1:4]
    torch.set_num_threads(1)  # measuring here: one thread wastes no time spinning on a loaded machine
    names = sys.argv[4].split(",") if len(sys.argv) > 4 else list(MODELS)
    os.makedirs(os.path.join(work, "models"), exist_ok=True)
    run = {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain")),
           "start": now(), "load_average_start": os.getloadavg(), "cores": os.cpu_count()}
    for model in names:
        state = os.path.join(work, "models", model + ".pt")
        fashion.train(model, state)
        module = os.path.join(work, "models", model + ".module.pt")
        if not os.path.exists(module):
            fashion.export(model, state, module, os.path.join(work, "models", "test_data.pt"))
    data = fashion.load("test")
    server = Server(build, os.path.join(work, "server"))
    results = {}
    try:
        for model in names:
            spec = MODELS[model]
            float_state = fashion.load_state(os.path.join(work, "models", model + ".pt"))
            reference = fashion.logits_of_state(model, float_state, data)
            top1, top2 = fashion.accuracy_of_logits(reference, data[1])
            entry = {"title": spec["title"], "fc": spec["fc"], "float": {"top1": top1, "top2": top2},
                     "float_bytes": sum(t.numel() * t.element_size() for t in float_state.values()),
                     "int8_bytes": sum(t.numel() * (1 if t.is_floating_point() and t.dim() >= 2 else t.element_size())
                                       for t in float_state.values()),
                     "fc_float_bytes": {n: float_state[n].numel() * 4 for n in spec["fc"]},
                     "variants": []}
            for v in spec["variants"]:
                register(server, work, model, v["version"], v["ladder"], v["policy"])
            for v in spec["variants"]:
                info, tiers = measure_tiers(server, work, model, v["version"], data, reference)
                variant = {"version": v["version"], "policy": info["layer_policy"], "tiers": tiers,
                           "front_end": (v["policy"] or {}).get("scheme", "auto"),
                           "server_reference": info["reference_accuracy"]}
                if v.get("budget"):
                    budgets = [server_process.budget_tier(t['bytes']) for t in tiers if t["name"] in v["budget"]]
                    register(server, work, model, v["version"] + "-budget", budgets, v["policy"])
                    variant["budget_tiers"] = measure_tiers(server, work, model, v["version"] + "-budget", data,
                                                             reference)[1]
                    variant["requant"] = requant_baselines(model, float_state, tiers, data)
                entry["variants"].append(variant)
            results[model] = entry
    finally:
        server.stop()
    for entry in results.values():
        for v in entry["variants"]:
            for t in v["tiers"] + v.get("budget_tiers", []):
                t.pop("path", None)
    run.update(end=now(), load_average_end=os.getloadavg())
    results["_run"] = run
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)


def git(*args):
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


if __name__ == "__main__":
    main()
