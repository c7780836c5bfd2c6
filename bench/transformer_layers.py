#!/usr/bin/python3
"""Synthetic transformer-style weight layers for the quantization front-end benchmark.

usage: transformer_layers.py OUT.safetensors [--rows R] [--cols C] [--seed S]

Writes one float32 tensor per layer kind, each [R, C] (rows = output channels, as in a PyTorch
Linear), deterministic for a seed:

  gaussian        i.i.d. N(0, 0.02^2): every row the same scale (the case per-tensor is made for)
  heavy_rows      rows of Student-t (3 degrees of freedom) values, scaled to std 0.02
  row_scales      Gaussian rows whose scales are log-normal (sigma 1): what folding a batch norm
                  into the layer before it does to the rows
  outlier_cols    Gaussian, with 0.5 % of the columns (input features) x10
  outliers        Gaussian with 0.01 % of the weights x20 (issue 21's layer: per-tensor int8 spends
                  its range on them)
  transformer     all of it at once: log-normal row scales (sigma 0.5), heavy-tailed rows (a
                  quarter of them), outlier columns and 0.01 % of the weights x20

Numbers from a seeded numpy Generator (PCG64); the file is the safetensors layout that
tests/fixtures/safetensors_io.py writes.
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
import safetensors_io  # noqa: E402

SIGMA = 0.02


def gaussian(rng, rows, cols):
    return rng.normal(0.0, SIGMA, (rows, cols))


def heavy_rows(rng, rows, cols, df=3):
    t = rng.standard_t(df, (rows, cols))
    return t * SIGMA / np.sqrt(df / (df - 2))  # std 0.02


def row_scales(rng, rows, cols, sigma=1.0):
    return gaussian(rng, rows, cols) * np.exp(rng.normal(0.0, sigma, (rows, 1)))


def outlier_cols(rng, w, fraction=0.005, factor=10.0):
    cols = rng.choice(w.shape[1], max(1, int(round(fraction * w.shape[1]))), replace=False)
    w[:, cols] *= factor
    return w


def outliers(rng, w, fraction=1e-4, factor=20.0):
    count = max(1, int(round(fraction * w.size)))
    flat = w.reshape(-1)
    flat[rng.choice(w.size, count, replace=False)] *= factor
    return w


def transformer(rng, rows, cols):
    w = row_scales(rng, rows, cols, sigma=0.5)
    heavy = rng.random(rows) < 0.25
    w[heavy] = heavy_rows(rng, int(heavy.sum()), cols) * np.exp(rng.normal(0.0, 0.5, (int(heavy.sum()), 1)))
    return outliers(rng, outlier_cols(rng, w))


def layers(rows, cols, seed):
    rng = np.random.default_rng(seed)
    return {
        "gaussian": gaussian(rng, rows, cols),
        "heavy_rows": heavy_rows(rng, rows, cols),
        "row_scales": row_scales(rng, rows, cols),
        "outlier_cols": outlier_cols(rng, gaussian(rng, rows, cols)),
        "outliers": outliers(rng, gaussian(rng, rows, cols)),
        "transformer": transformer(rng, rows, cols),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--rows", type=int, default=768)
    parser.add_argument("--cols", type=int, default=768)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    tensors = {name: torch.from_numpy(w.astype(np.float32)) for name, w in layers(args.rows, args.cols, args.seed).items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    safetensors_io.save(tensors, args.out + ".tmp")
    os.replace(args.out + ".tmp", args.out)
    for name, t in tensors.items():
        print(f"{name:<14} {list(t.shape)} max|w| {t.abs().max().item():.4f} std {t.std().item():.4f}")


if __name__ == "__main__":
    main()
