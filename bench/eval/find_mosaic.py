#!/usr/bin/python3
"""The statistic behind a layer policy's "auto" mosaic (common/pack/mosaic.h FindMosaic), per layer.

usage: find_mosaic.py CHECKPOINT.pt ...

For each weight of at least 4096 elements, as its matrix view [out, in·kh·kw]: the correlation
of weights in the same column of neighbouring rows (what the matrix picture predicts from), of
neighbouring weights in a row (lag 1), and the five column lags L (divisors of the columns) at
which a row correlates most with itself; then what FindMosaic's rule makes of it: the best lag
of at least 4 is kept when its correlation is at least 0.2, at least lag 1's, and 0.15 above the
rows'. Computed over all rows, rows less their mean (FindMosaic looks at 256 of them).
"""
import sys

import torch

MIN_LAG, MIN_CORRELATION, MIN_GAIN, MAX_SIDE = 4, 0.2, 0.15, 1024


def correlation(a, b):
    return float((a * b).sum() / ((a * a).sum().sqrt() * (b * b).sum().sqrt()))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        state = torch.load(path, map_location="cpu")
        state = state.get("state_dict", state.get("model", state))
        for name, weight in state.items():
            if weight.dim() < 2 or weight.numel() < 4096 or not weight.is_floating_point():
                continue
            w = weight.reshape(weight.shape[0], -1).double()
            rows, cols = w.shape
            w = w - w.mean(1, keepdim=True)
            neighbour_rows = correlation(w[:-1], w[1:])
            lags = {lag: correlation(w[:, :-lag], w[:, lag:])
                    for lag in range(1, min(cols // 2, MAX_SIDE) + 1) if cols % lag == 0}
            best = max((lag for lag in lags if lag >= MIN_LAG), key=lags.get, default=None)
            kept = (best is not None and lags[best] >= MIN_CORRELATION and lags[best] >= lags[1]
                    and lags[best] - neighbour_rows >= MIN_GAIN)
            top = sorted(lags, key=lags.get, reverse=True)[:5]
            print(f"{path} {name} [{rows}, {cols}]: rows {neighbour_rows:.3f}, lag 1 "
                  f"{lags[1]:.3f}; " + ", ".join(f"L{lag} {lags[lag]:.3f}" for lag in top)
                  + (f" -> mosaic {best} wide" if kept else " -> matrix"))


if __name__ == "__main__":
    main()
