"""The baselines every HEVC tier is held against, computed in Python from the float checkpoint:
per-tensor symmetric int8 (the server's quantization), and uniform requantization of that int8
(one step for every picture layer, like one QP) entropy-coded with zstd at level 3, the level the
server's lossless tier uses (docs/BENCHMARKS.md: level 19 is no smaller on int8)."""
import subprocess

import numpy as np
import torch


def int8(w):
    """Per-tensor symmetric int8 as the server quantizes: q = round(w / s), s = max|w| / 127."""
    scale = w.abs().max().item() / 127 or 1.0
    return torch.clamp(torch.round(w / scale), -127, 127).to(torch.int8), scale


def zstd_bytes(data):
    return len(subprocess.run(["zstd", "-3", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout)


def sqnr_db(w, approx):
    noise = (w - approx).double().pow(2).sum().item()
    return float("inf") if noise == 0 else 10 * np.log10(w.double().pow(2).sum().item() / noise)


def requantize(w, step):
    """int8 of W requantized with STEP (>= 1, in int8 units): (reconstruction, zstd bytes)."""
    q, scale = int8(w)
    coarse = torch.round(q.float() / step)
    data = coarse.to(torch.int8 if coarse.abs().max() <= 127 else torch.int16).numpy().tobytes()
    return coarse * step * scale, zstd_bytes(data)


def requantize_to_size(weights, target_bytes):
    """The smallest uniform step whose zstd output for all of WEIGHTS (name -> tensor) fits
    TARGET_BYTES: ({name: reconstruction}, {name: bytes}, step). Bisection on the step (bytes
    fall as it grows)."""
    def code(step):
        out, sizes = {}, {}
        for name, w in weights.items():
            out[name], sizes[name] = requantize(w, step)
        return out, sizes

    low, high = 1.0, 256.0
    best = code(high) + (high,)
    if sum(best[1].values()) > target_bytes:
        return best
    for _ in range(14):
        mid = (low * high) ** 0.5
        coded = code(mid)
        if sum(coded[1].values()) <= target_bytes:
            high, best = mid, coded + (mid,)
        else:
            low = mid
    return best
