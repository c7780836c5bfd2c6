#!/usr/bin/python3
"""Probe: what a random-sign Hadamard rotation would buy on bench/transformer_layers.py's layers,
measured with the real codec before it exists in it.

usage: hadamard_probe.py BUILD_DIR LAYERS.safetensors WORK_DIR [TIERS]

Each row of each [R, C] layer is multiplied by random signs (seed 21, one sign per column) and
then, block by block, by the orthonormal Walsh-Hadamard matrix of the largest power of two <= 256
dividing C: W' = W diag(s) blockdiag(H). weightcast-pack codes W' (preset veryfast, each
front end: per-tensor, per-channel, auto); the float output is rotated back
(W = W' blockdiag(H)^T diag(s)) and compared with W. Bits per weight are the layer's payload
bits from the pack summary (the rotation adds no bytes: a seed). Markdown on stdout.
"""
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
import safetensors_io  # noqa: E402


def hadamard(n):
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


def block_size(cols):
    b = 1
    while b < 256 and cols % (2 * b) == 0:
        b *= 2
    return b


def rotate(w, signs, h, inverse=False):
    rows, cols = w.shape
    b = h.shape[0]
    if not inverse:
        return ((w * signs).reshape(rows, cols // b, b) @ h).reshape(rows, cols)
    return ((w.reshape(rows, cols // b, b) @ h.T).reshape(rows, cols)) * signs


def sqnr(ref, rec):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - rec).astype(np.float64) ** 2))


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        sys.exit(2)
    build, layers_path, work = sys.argv[1:4]
    tiers = sys.argv[4] if len(sys.argv) > 4 else "q22,q27,q32"
    pack = os.path.join(build, "client", "pack", "weightcast-pack")
    os.makedirs(work, exist_ok=True)
    layers = {k: v.numpy().astype(np.float64) for k, v in safetensors_io.load(layers_path).items()}
    rng = np.random.default_rng(21)
    rotated, keys = {}, {}
    for name, w in layers.items():
        b = block_size(w.shape[1])
        keys[name] = (np.where(rng.random(w.shape[1]) < 0.5, -1.0, 1.0), hadamard(b))
        rotated[name] = torch.from_numpy(rotate(w, *keys[name]).astype(np.float32))
    rotated_path = os.path.join(work, "rotated.safetensors")
    safetensors_io.save(rotated, rotated_path)
    print("| layer | tier | front end | rotated bpw | rotated SQNR dB (rotated back) |")
    print("|---|---|---|---|---|")
    for scheme in ("per-tensor", "per-channel", "auto"):
        out = os.path.join(work, scheme)
        summary = subprocess.run([pack, rotated_path, "-o", out, "--tiers", tiers, "--scheme", scheme],
                                 check=True, capture_output=True, text=True).stdout
        bpw, tier = {}, None
        for line in summary.splitlines():
            if line.startswith("tier "):
                tier = line.split()[1]
            parts = line.split()
            if tier and len(parts) >= 6 and parts[0] in layers:
                end = next(i for i, p in enumerate(parts) if p.endswith("]"))  # shape "[768, 768]"
                bpw[(tier, parts[0])] = (float(parts[end + 2]), parts[2])
        for t in tiers.split(","):
            unpacked = os.path.join(out, t + ".pt")
            subprocess.run([pack, "--unpack", os.path.join(out, t + ".wcm"), "-o", unpacked], check=True,
                           capture_output=True)
            back = torch.load(unpacked)
            for name, w in layers.items():
                rec = rotate(back[name].numpy().astype(np.float64), *keys[name], inverse=True)
                bits, scales = bpw[(t, name)]
                print(f"| {name} | `{t}` | {scheme} ({scales}) | {bits:.3f} | {sqnr(w, rec):.2f} |", flush=True)


if __name__ == "__main__":
    main()
