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
the input RMS of every picture layer (linear layers of >= 4096 weights; res_cnn: also its
convolutions, as bench/eval codes them, a column per input channel and kernel position) on
10,000 *training* images (forward hooks), codes W diag(s) with weightcast-pack (the model's
bench/eval policy, default front end, preset veryfast), s_j = (rms_j / mean rms)^alpha clipped
to [1/16, 16], divides the decoded columns by s and measures top-1 on the 10,000 test images.
alpha 0 is today's codec. Bytes: the tier file plus the scales as float16 (what a format would
have to carry: 2 bytes per input, or per input channel of a convolution).

Variants: HEVC's transforms spread a block's error over all its columns, so columns of very
different scales side by side may defeat the weighting: order `sorted` also permutes the columns
by s before coding (and back after; the permutation follows from the scales, a stable sort, so
it costs no bytes). Importance `fisher` weighs each column of a linear layer by the square root
of its empirical Fisher information instead (per-image cross-entropy gradients on the same
training images: the input's size times how much the layer's outputs matter to the loss;
convolutions are then left unweighted). UNWEIGHTED names layers (e.g. fc3.weight) left
unweighted.
MODELS_DIR holds MODEL.pt as bench/eval trains them (fashion.py train). Markdown on stdout.
"""
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval"))
import evaluate  # noqa: E402
import fashion  # noqa: E402

# The layer policy each model is coded under (bench/eval's): res_cnn's convolutions are pictures.
POLICIES = {"res_cnn": evaluate.PICTURE_CONVS}


def picture_layers(model, policy):
    """Module name -> module, for the layers the policy codes as pictures: linear layers (and
    convolutions of one group when the policy says so) of at least min_picture_elements weights."""
    smallest = policy.get("min_picture_elements", 4096)
    convs = policy.get("convolutions") == "picture"
    layers = {}
    for name, m in model.named_modules():
        kind_ok = isinstance(m, torch.nn.Linear) or (convs and isinstance(m, torch.nn.Conv2d) and m.groups == 1)
        if kind_ok and m.weight.numel() >= smallest:
            layers[name] = m
    return layers


def column_importance(name, state, x, y, kind, policy):
    """Per picture layer, one figure per column of its picture [out, in * kh * kw] and how many
    distinct figures there are (its inputs, or its input channels): the input's
    RMS over X (kind "rms"; a convolution's input channel's RMS over images and positions, for
    each of its kh * kw columns), or for linear layers the square root of the column's empirical
    Fisher information, sum over rows and images of (dL/dW_ij)^2 for the cross-entropy L of each
    image (kind "fisher": per-image gradients, from each layer's input and output gradient,
    g_i x_j; convolutions are left unweighted)."""
    model = fashion.MODELS[name][0]()
    model.load_state_dict(state)
    model.eval()
    sums, inputs, hooks = {}, {}, []
    for module_name, module in picture_layers(model, policy).items():
        key = module_name + ".weight"
        conv = isinstance(module, torch.nn.Conv2d)
        if kind == "fisher" and conv:
            continue

        def forward_hook(_, args, __, key=key, conv=conv):
            a = args[0].detach().double()
            inputs[key] = a.transpose(0, 1).reshape(a.shape[1], -1).T if conv else a.reshape(-1, a.shape[-1])

        def backward_hook(_, __, grad_output, key=key):
            g = grad_output[0].reshape(-1, grad_output[0].shape[-1]).double()
            sums[key] = sums.get(key, 0) + (g ** 2).sum(1) @ (inputs[key] ** 2)

        hooks.append(module.register_forward_hook(forward_hook))
        if kind == "fisher":
            hooks.append(module.register_full_backward_hook(backward_hook))
    counts = {}
    for i in range(0, len(x), 500):
        if kind == "fisher":
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 500]), y[i:i + 500], reduction="sum").backward()
        else:
            with torch.no_grad():
                model(x[i:i + 500])
            for key, value in inputs.items():
                sums[key] = sums.get(key, 0) + (value ** 2).sum(0)
                counts[key] = counts.get(key, 0) + len(value)
    for h in hooks:
        h.remove()
    per_column = {}
    for key, total in sums.items():
        figure = (total / counts.get(key, 1)).sqrt().float()
        weight = state[key]
        per_column[key] = (figure.repeat_interleave(weight[0].numel() // figure.numel()), figure.numel())
    return per_column


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
        policy = POLICIES.get(name, {})
        importance = {kind: column_importance(name, state, train_x[:10000], train_y[:10000], kind, policy)
                      for kind in kinds}
        runs = [(k, a, o) for a in alphas for k in (kinds if a != 0 else kinds[:1])
                for o in (orders if a != 0 else orders[:1])]
        for kind, alpha, order in runs:
            scales = {k: column_scales(v, alpha) for k, (v, _) in importance[kind].items() if k not in unweighted}
            perms = {k: (torch.sort(s, stable=True).indices if order == "sorted" else torch.arange(s.numel()))
                     for k, s in scales.items()}
            scaled = {k: ((v.reshape(len(v), -1) * scales[k])[:, perms[k]].reshape(v.shape) if k in scales else v)
                      for k, v in state.items()}
            out = os.path.join(work, name, f"{kind}-alpha{alpha}-{order}")
            os.makedirs(out, exist_ok=True)
            scaled_path = os.path.join(out, "scaled.pt")
            torch.save(scaled, scaled_path)
            policy_path = os.path.join(out, "policy.json")
            with open(policy_path, "w") as f:
                json.dump(policy, f)
            subprocess.run([pack, scaled_path, "-o", out, "--tiers", ",".join(tiers), "--policy", policy_path],
                           check=True, capture_output=True)
            side = 0 if alpha == 0 else sum(2 * importance[kind][k][1] for k in scales)
            for tier in tiers:
                wcm = os.path.join(out, tier + ".wcm")
                unpacked = os.path.join(out, tier + ".pt")
                subprocess.run([pack, "--unpack", wcm, "-o", unpacked], check=True, capture_output=True)
                back = torch.load(unpacked)
                restored = {k: ((v.reshape(len(v), -1)[:, torch.argsort(perms[k])] / scales[k]).reshape(v.shape)
                                if k in scales else v) for k, v in back.items()}
                top1, _ = fashion.accuracy_of_state(name, restored, test)
                size = os.path.getsize(wcm) + side
                print(f"| {name} | {kind if alpha else '-'} | {alpha:g} | {order} | `{tier}` | {size:,} | {100.0 * size / float_bytes:.2f} | "
                      f"{top1:.2f} | {top1 - float_top1:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
