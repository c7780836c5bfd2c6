#!/usr/bin/python3
"""Quantization front ends on the Fashion-MNIST models: bytes and top-1 at each ladder tier with
per-tensor scales only (weightcast before issue 21) and with the auto front end (the default now:
per-tensor or per-channel per layer), optionally per-channel everywhere.

usage: front_end.py BUILD_DIR WORK_DIR RESULTS.json [--schemes per-tensor,auto] [--variants MODEL:POLICY,...]

The models are bench/eval/fashion.py's (trained once, cached in WORK_DIR/models: about 6 minutes
on 2 cores) plus res_cnn_folded: res_cnn with every batch norm folded into the convolution before
it (what an inference runtime or an export does; the rows of each convolution are then scaled by
gamma / sqrt(var + eps)). Each model is packed with weightcast-pack (the codec library the server
encodes with) at lossless,q22,q27,q32,q37 under each scheme and layer policy (VARIANTS), unpacked
to float, and evaluated on the 10,000 test images. A few minutes with the models cached.
"""
import json
import os
import re
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion  # noqa: E402

TIERS = ["lossless", "q22", "q27", "q32", "q37"]
# Layer policies as in evaluate.py: "default" (2-D weights of >= 4096 elements are pictures,
# convolutions int8 + zstd), "fc" (also res_cnn's 64x10 classifier) and "conv-tier" (convolutions
# as pictures at the tier's QP too).
POLICIES = {"default": None, "fc": {"min_picture_elements": 512},
            "conv-tier": {"min_picture_elements": 512, "convolutions": "picture"}}
VARIANTS = ["fc_cnn:default", "mlp:default", "res_cnn:fc", "res_cnn:conv-tier", "res_cnn_folded:fc",
            "res_cnn_folded:conv-tier"]


class FoldedBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = torch.nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride))

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))


class ResCnnFolded(torch.nn.Module):
    """fashion.ResCnn with each BatchNorm folded into its convolution (inference only)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 16, 3, 1, 1)
        self.layer1 = FoldedBlock(16, 16, 1)
        self.layer2 = FoldedBlock(16, 32, 2)
        self.layer3 = FoldedBlock(32, 64, 2)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def fold(state):
    """res_cnn's state_dict -> ResCnnFolded's: w' = w * g / s, b' = beta - g * mean / s per row."""
    out = {}
    pairs = {"stem": "bn"}
    for block in ("layer1", "layer2", "layer3"):
        pairs[f"{block}.conv1"] = f"{block}.bn1"
        pairs[f"{block}.conv2"] = f"{block}.bn2"
        if f"{block}.shortcut.0.weight" in state:
            pairs[f"{block}.shortcut.0"] = f"{block}.shortcut.1"
    for conv, bn in pairs.items():
        g = state[f"{bn}.weight"] / torch.sqrt(state[f"{bn}.running_var"] + 1e-5)
        out[f"{conv}.weight"] = state[f"{conv}.weight"] * g.view(-1, 1, 1, 1)
        out[f"{conv}.bias"] = state[f"{bn}.bias"] - g * state[f"{bn}.running_mean"]
    out["fc.weight"], out["fc.bias"] = state["fc.weight"], state["fc.bias"]
    return {k: v.contiguous() for k, v in out.items()}


def model_class(name):
    return ResCnnFolded if name == "res_cnn_folded" else fashion.MODELS[name][0]


def accuracy(name, state, data):
    x, y = data
    model = model_class(name)()
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    return (logits.argmax(dim=1) == y).float().mean().item() * 100


def pack(build, checkpoint, out_dir, scheme, policy):
    args = [os.path.join(build, "client", "pack", "weightcast-pack"), checkpoint, "-o", out_dir,
            "--tiers", ",".join(TIERS), "--scheme", scheme, "--threads", "2"]
    if POLICIES[policy] is not None:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "policy.json")
        with open(path, "w") as f:
            json.dump(POLICIES[policy], f)
        args += ["--policy", path]
    report = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    # Per tier: the per-layer rows (scales column) and the summary row.
    layers, tier = {}, None
    for line in report.splitlines():
        m = re.match(r"tier (\S+) ->", line)
        if m:
            tier = m.group(1)
            layers[tier] = {}
            continue
        m = re.match(r"\s+(\S+)\s+(\S+)\s+(tensor|channel|tensor-asym|channel-asym|-)\s+(\[.*?\])\s+(\d+)\s+(\S+)"
                     r"\s+(\S+)\s+(\S+)\s+(\S+)$", line)
        if tier and m:
            name, codec, scales, _, size, _, sqnr = m.groups()[:7]
            layers[tier][name] = {"codec": codec, "scales": scales, "bytes": int(size),
                                  "sqnr_db": float(sqnr) if sqnr not in ("inf", "-inf") else None}
    return layers


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        sys.exit(2)
    build, work, results_path = sys.argv[1:4]
    options = dict(zip(sys.argv[4::2], sys.argv[5::2]))
    schemes = options.get("--schemes", "per-tensor,auto").split(",")
    variants = options.get("--variants", ",".join(VARIANTS)).split(",")
    models = sorted({v.split(":")[0] for v in variants})
    models_dir = os.path.join(work, "models")
    os.makedirs(models_dir, exist_ok=True)
    for name in models:
        fashion.train(name.replace("_folded", ""), os.path.join(models_dir, name.replace("_folded", "") + ".pt"))
    folded_path = os.path.join(models_dir, "res_cnn_folded.pt")
    if "res_cnn_folded" in models and not os.path.exists(folded_path):
        torch.save(fold(torch.load(os.path.join(models_dir, "res_cnn.pt"))), folded_path)
    data = fashion.load("test")
    results = {"tiers": TIERS, "schemes": schemes, "models": {}}
    for variant in variants:
        name, policy = variant.split(":")
        checkpoint = os.path.join(models_dir, name + ".pt")
        state = torch.load(checkpoint)
        entry = {"float_top1": accuracy(name, state, data),
                 "float_bytes": sum(t.numel() * 4 for t in state.values() if t.is_floating_point()),
                 "schemes": {}}
        for scheme in schemes:
            out_dir = os.path.join(work, "front_end", name, policy, scheme)
            start = time.time()
            layers = pack(build, checkpoint, out_dir, scheme, policy)
            seconds = time.time() - start
            per_tier = {}
            for tier in TIERS:
                packed = os.path.join(out_dir, tier + ".wcm")
                unpacked = os.path.join(out_dir, tier + ".pt")
                subprocess.run([os.path.join(build, "client", "pack", "weightcast-pack"), "--unpack", packed,
                                "-o", unpacked], check=True, capture_output=True)
                sqnrs = [l["sqnr_db"] for l in layers[tier].values() if l["sqnr_db"] is not None]
                per_tier[tier] = {
                    "bytes": os.path.getsize(packed),
                    "top1": accuracy(name, torch.load(unpacked), data),
                    "worst_sqnr_db": min(sqnrs) if sqnrs else None,
                    "per_channel": sorted(k for k, l in layers[tier].items() if l["scales"] == "channel"),
                    "layers": layers[tier],
                }
                print(f"{variant:<25} {scheme:<11} {tier:<9} {per_tier[tier]['bytes']:>10} "
                      f"{per_tier[tier]['top1']:6.2f} % worst {per_tier[tier]['worst_sqnr_db']} dB "
                      f"per-channel {per_tier[tier]['per_channel']}", flush=True)
            entry["schemes"][scheme] = {"tiers": per_tier, "pack_seconds": seconds}
        results["models"][variant] = entry
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)
    print(markdown(results))


def markdown(results):
    schemes = results["schemes"]
    lines = []
    head = "| model | tier | " + " | ".join(f"{s} bytes | {s} top-1 % | {s} worst SQNR dB" for s in schemes) + \
        " | per-channel layers (auto) |"
    lines.append(head)
    lines.append("|" + "---|" * (3 + 3 * len(schemes)))
    for variant, entry in results["models"].items():
        name = variant
        lines.append(f"| {name} | float | " + " | ".join(f"{entry['float_bytes']:,} | {entry['float_top1']:.2f} | "
                                                      for _ in schemes) + " |")
        for tier in results["tiers"]:
            cells = []
            for s in schemes:
                t = entry["schemes"][s]["tiers"][tier]
                worst = "inf" if t["worst_sqnr_db"] is None else f"{t['worst_sqnr_db']:.1f}"
                cells.append(f"{t['bytes']:,} | {t['top1']:.2f} | {worst}")
            chosen = entry["schemes"].get("auto", {}).get("tiers", {}).get(tier, {}).get("per_channel", [])
            lines.append(f"| {name} | `{tier}` | " + " | ".join(cells) + f" | {', '.join(chosen) or '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
