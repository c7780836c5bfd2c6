#!/usr/bin/python3
"""Pulling a tier into torch tensors from Python against the CLI pulling it to a file.

usage: PYTHONPATH=build/python python_pull_benchmark.py BUILD_DIR WORK_DIR [--rounds N] [--mib M]
(bench/run_python_pull_benchmark builds what it needs and runs this.)

Starts the real weightcastd on 127.0.0.1, registers a float32 checkpoint of M MiB (8 Linear
layers, Gaussian weights, written by PyTorch), encodes tier q27 once, then alternates N rounds
of (a) `weightcast pull MODEL --tier q27 -o OUT.pt` (the whole process, wall time) and (b)
`client.pull(MODEL, tier="q27")` in this process (the call, wall time: describe, stream,
decode, tensors). Both decode with one thread per core; neither writes anything but the CLI's
file. Prints each median and the ratio (b)/(a); then the one-time cost a Python user pays
first, `import weightcast` (which imports torch) in a fresh interpreter.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
import server_process  # noqa: E402
import weightcast  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build")
    parser.add_argument("work")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    side = int((args.mib * 2**20 / 4 / 8) ** 0.5)
    torch.manual_seed(0)
    state = {f"layers.{i}.weight": torch.randn(side, side) * 0.02 for i in range(8)}
    checkpoint = os.path.join(args.work, "model.pt")
    torch.save(state, checkpoint)
    server = server_process.Weightcastd(args.build, os.path.join(args.work, "data"), "--workers", "2")
    try:
        client = weightcast.Client(server.address, timeout=600)
        client.register("bench", "v1", checkpoint, ladder="q27")
        client.pull("bench", tier="q27", progress=False)  # encodes it once
        tier_bytes = client.describe("bench").tier("q27").bytes
        out = os.path.join(args.work, "out.pt")
        cli, python = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            subprocess.run(server.cli + ["pull", "bench", "--tier", "q27", "-o", out], check=True,
                           stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - start)
            start = time.perf_counter()
            pulled = client.pull("bench", tier="q27", progress=False)
            python.append(time.perf_counter() - start)
            assert pulled.result.tier == "q27" and len(pulled) == 8
            del pulled
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import weightcast"], check=True)
        import_seconds = time.perf_counter() - start
    finally:
        server.stop()
    print(f"model: 8 x [{side}, {side}] float32 ({os.path.getsize(checkpoint) / 2**20:.1f} MiB), "
          f"tier q27: {tier_bytes / 1e6:.2f} MB, {args.rounds} rounds, {os.cpu_count()} cores")
    print(f"  CLI pull to a .pt file (process):  median {statistics.median(cli):.3f} s  "
          f"(runs {', '.join(f'{s:.3f}' for s in cli)})")
    print(f"  Python pull into tensors (call):   median {statistics.median(python):.3f} s  "
          f"(runs {', '.join(f'{s:.3f}' for s in python)})")
    print(f"  ratio Python/CLI: {statistics.median(python) / statistics.median(cli):.3f}")
    print(f"  once per Python process: import weightcast (and torch) {import_seconds:.3f} s")


if __name__ == "__main__":
    main()
