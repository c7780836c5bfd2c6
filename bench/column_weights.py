#!/usr/bin/python3
"""Activation-aware column weighting through the real codec (issue 21): every tier of each
Fashion-MNIST model packed by weightcast-pack without and with --eval-bundle, unpacked, and
measured in PyTorch on the 10,000 test images, side by side.

usage: column_weights.py BUILD_DIR MODELS_DIR WORK_DIR [MODELS] [TIERS]
       (defaults: fc_cnn,mlp,res_cnn  q26,q28,q30,q32)

MODELS_DIR holds MODEL.pt as bench/eval trains them (fashion.py train). The bundle is the model
scripted (fashion.py export) and the first 10,000 *training* images, so the statistics do not
come from the images the accuracy is measured on. Each model is coded under its bench/eval
policy (res_cnn: convolutions as pictures). Bytes are the tier file's (column scales included).
Markdown on stdout.
"""
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval"))
import evaluate  # noqa: E402
import fashion  # noqa: E402

POLICIES = {"res_cnn": evaluate.PICTURE_CONVS}


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        sys.exit(2)
    build, models_dir, work = sys.argv[1:4]
    names = (sys.argv[4] if len(sys.argv) > 4 else "fc_cnn,mlp,res_cnn").split(",")
    tiers = sys.argv[5] if len(sys.argv) > 5 else "q26,q28,q30,q32"
    pack = os.path.join(build, "client", "pack", "weightcast-pack")
    os.makedirs(work, exist_ok=True)
    train_x, _ = fashion.load("train")
    inputs = os.path.join(work, "train_inputs.pt")
    torch.save({"inputs": train_x[:10000]}, inputs)
    test = fashion.load("test")
    print("| model | tier | plain bytes | % of float32 | top-1 (drop) | weighted bytes | % | top-1 (drop) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        state_path = os.path.join(models_dir, name + ".pt")
        state = fashion.load_state(state_path)
        float_bytes = sum(t.numel() * t.element_size() for t in state.values())
        float_top1, _ = fashion.accuracy_of_state(name, state, test)
        module = os.path.join(work, name + ".module.pt")
        fashion.export(name, state_path, module, os.path.join(work, name + ".test_data.pt"), count=16)
        policy = os.path.join(work, name + ".policy.json")
        with open(policy, "w") as f:
            json.dump(POLICIES.get(name, {}), f)
        rows = {}
        for variant, extra in (("plain", []), ("weighted", ["--eval-bundle", module + "," + inputs])):
            out = os.path.join(work, name, variant)
            subprocess.run([pack, state_path, "-o", out, "--tiers", tiers, "--policy", policy] + extra,
                           check=True, capture_output=True)
            for tier in tiers.split(","):
                wcm = os.path.join(out, tier + ".wcm")
                unpacked = os.path.join(out, tier + ".pt")
                subprocess.run([pack, "--unpack", wcm, "-o", unpacked], check=True, capture_output=True)
                top1, _ = fashion.accuracy(name, unpacked, test)
                size = os.path.getsize(wcm)
                rows.setdefault(tier, []).append(
                    f"{size:,} | {100.0 * size / float_bytes:.2f} | {top1:.2f} ({top1 - float_top1:+.2f})")
        for tier in tiers.split(","):
            print(f"| {name} | `{tier}` | " + " | ".join(rows[tier]) + " |", flush=True)


if __name__ == "__main__":
    main()
