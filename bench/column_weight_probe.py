#!/usr/bin/python3
"""Probe: what activation-aware column weighting would buy on the Fashion-MNIST models, measured
with the real codec before it exists in it (issue 21).

usage: column_weight_probe.py BUILD_DIR MODELS_DIR WORK_DIR [MODELS] [TIERS] [ALPHAS] [ORDERS] [KINDS] [UNWEIGHTED]
       (defaults: fc_cnn,mlp  q26,q28,q30,q32  0,0.25,0.5  kept  rms,fisher  none)

A weight error in column j of a linear layer reaches its output scaled by that column's input,
so the expected output error is sum_j |dW[:, j]|^2 E[x_j^2]. At a fixed QP the codec spreads
error evenly over the elements; coding W diag(s) instead and dividing the decoded columns by s
moves error from the columns whose inputs are large to those whose inputs are small (high-rate
theory: s_j proportional to the input's RMS equalizes the weighted error). This probe measures
the input RMS of every picture layer (2-D, >= 4096 weights) on 10,000 *training* images (forward
hooks), and codes W diag(s) with weightcast-pack (default policy and front end, preset veryfast),
s_j = (rms_j / mean rms)^alpha clipped to [1/16, 16], divides the decoded columns by s and
measures top-1 on the 10,000 test images. alpha 0 is today's codec. HEVC's transforms spread a
block's error over all its columns, so columns of very different scales side by side defeat the
weighting: order `sorted` also permutes the columns by s before coding (and back after); the
permutation follows from the scales (a stable sort), so it costs no bytes. Importance `fisher`
weighs each column by the square root of its empirical Fisher information instead (per-image
cross-entropy gradients on the same training images: the input's size times how much the
layer's outputs matter to the loss; what a server could compute from an evaluation bundle with
autograd, without hooks into the model). UNWEIGHTED names layers (e.g. fc3.weight) left
unweighted. Bytes: the tier file plus
the column scales as float16 (what a format would have to carry; 2 bytes per column).
MODELS_DIR holds MODEL.pt as bench/eval trains them (fashion.py train). Markdown on stdout.
"""
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval"))
import fashion  # noqa: E402


def column_importance(name, state, x, y, kind):
    """Per picture layer, one figure per input column: the input's RMS over X (kind "rms"), or
    the square root of the column's empirical Fisher information, sum over rows and images of
    (dL/dW_ij)^2 for the cross-entropy L of each image (kind "fisher": per-image gradients, from
    each layer's input and output gradient, g_i x_j)."""
    model = fashion.MODELS[name][0]()
    model.load_state_dict(state)
    model.eval()
    sums, inputs, hooks = {}, {}, []
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.weight.numel() >= 4096:
            key = module_name + ".weight"

            def forward_hook(_, args, __, key=key):
                inputs[key] = args[0].detach().reshape(-1, args[0].shape[-1]).double()

            def backward_hook(_, __, grad_output, key=key):
                g = grad_output[0].reshape(-1, grad_output[0].shape[-1]).double()
                sums[key] = sums.get(key, 0) + (g ** 2).sum(1) @ (inputs[key] ** 2)

            hooks.append(module.register_forward_hook(forward_hook))
            if kind == "fisher":
                hooks.append(module.register_full_backward_hook(backward_hook))
    for i in range(0, len(x), 500):
        if kind == "fisher":
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 500]), y[i:i + 500], reduction="sum").backward()
        else:
            with torch.no_grad():
                model(x[i:i + 500])
            for key, value in inputs.items():
                sums[key] = sums.get(key, 0) + (value ** 2).sum(0)
    for h in hooks:
        h.remove()
    return {k: v.sqrt().float() for k, v in sums.items()}


def column_scales(importance, alpha):
    s = (importance / importance.mean().clamp_min(1e-12)).clamp_min(1e-12) ** alpha
    return s.clamp(1.0 / 16, 16.0)


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        sys.exit(2)
    build, models_dir, work = sys.argv[1:4]
    names = (sys.argv[4] if len(sys.argv) > 4 else "fc_cnn,mlp").split(",")
    tiers = (sys.argv[5] if len(sys.argv) > 5 else "q26,q28,q30,q32").split(",")
    alphas = [float(a) for a in (sys.argv[6] if len(sys.argv) > 6 else "0,0.25,0.5").split(",")]
    orders = (sys.argv[7] if len(sys.argv) > 7 else "kept").split(",")
    kinds = (sys.argv[8] if len(sys.argv) > 8 else "rms,fisher").split(",")
    unweighted = set((sys.argv[9] if len(sys.argv) > 9 else "").split(","))
    pack = os.path.join(build, "client", "pack", "weightcast-pack")
    train_x, train_y = fashion.load("train")
    test = fashion.load("test")
    print("| model | importance | alpha | columns | tier | bytes | % of float32 | top-1 % | drop |")
    print("|---|---|---:|---|---|---:|---:|---:|---:|")
    for name in names:
        state = fashion.load_state(os.path.join(models_dir, name + ".pt"))
        float_bytes = sum(t.numel() * t.element_size() for t in state.values())
        float_top1, _ = fashion.accuracy_of_state(name, state, test)
        importance = {kind: column_importance(name, state, train_x[:10000], train_y[:10000], kind)
                      for kind in kinds}
        runs = [(k, a, o) for a in alphas for k in (kinds if a != 0 else kinds[:1])
                for o in (orders if a != 0 else orders[:1])]
        for kind, alpha, order in runs:
            scales = {k: column_scales(v, alpha) for k, v in importance[kind].items() if k not in unweighted}
            perms = {k: (torch.sort(s, stable=True).indices if order == "sorted" else torch.arange(s.numel()))
                     for k, s in scales.items()}
            scaled = {k: ((v * scales[k])[:, perms[k]] if k in scales else v) for k, v in state.items()}
            out = os.path.join(work, name, f"{kind}-alpha{alpha}-{order}")
            os.makedirs(out, exist_ok=True)
            scaled_path = os.path.join(out, "scaled.pt")
            torch.save(scaled, scaled_path)
            subprocess.run([pack, scaled_path, "-o", out, "--tiers", ",".join(tiers)], check=True,
                           capture_output=True)
            side = 0 if alpha == 0 else sum(2 * s.numel() for s in scales.values())
            for tier in tiers:
                wcm = os.path.join(out, tier + ".wcm")
                unpacked = os.path.join(out, tier + ".pt")
                subprocess.run([pack, "--unpack", wcm, "-o", unpacked], check=True, capture_output=True)
                back = torch.load(unpacked)
                restored = {k: (v[:, torch.argsort(perms[k])] / scales[k] if k in scales else v)
                            for k, v in back.items()}
                top1, _ = fashion.accuracy_of_state(name, restored, test)
                size = os.path.getsize(wcm) + side
                print(f"| {name} | {kind if alpha else '-'} | {alpha:g} | {order} | `{tier}` | {size:,} | {100.0 * size / float_bytes:.2f} | "
                      f"{top1:.2f} | {top1 - float_top1:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
