#!/usr/bin/python3
"""Peak memory of reading a 1 GiB torch.save checkpoint with weightcast-pack.

Writes 1 GiB checkpoints with torch.save (a model-like one: 8 layers of 4096x8192 float32, and a
worst case: one 1 GiB tensor), runs `weightcast-pack --explain` on each and on a tiny checkpoint,
and reports the child's peak RSS. Extra = peak on the big file - peak on the tiny one (the process
with libtorch loaded). The measuring process does not import torch, so a forked child starts small.
usage: checkpoint_memory.py WEIGHTCAST_PACK WORK_DIR
"""
import os
import subprocess
import sys
import time

CHECKPOINTS = {  # label -> (file name, tensors as (name, rows, cols))
    "tiny: 1 tensor, 16 KiB": ("tiny.pt", [("w", 64, 64)]),
    "8 layers x 128 MiB": ("layers.pt", [(f"layer{i}.weight", 4096, 8192) for i in range(8)]),
    "1 tensor x 1 GiB": ("huge.pt", [("huge.weight", 16384, 16384)]),
}


def write(label, path):
    import torch  # only in the writer process
    torch.manual_seed(0)
    torch.save({name: torch.randn(rows, cols) for name, rows, cols in CHECKPOINTS[label][1]}, path)


def peak_rss_mib(command):
    start = time.time()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"{command} failed with status {status}")
    return usage.ru_maxrss / 1024, time.time() - start


def main():
    if sys.argv[1] == "--write":
        write(sys.argv[2], sys.argv[3])
        return
    pack, work = sys.argv[1:3]
    os.makedirs(work, exist_ok=True)
    rows = []
    for label, (name, _) in CHECKPOINTS.items():
        path = os.path.join(work, name)
        subprocess.run(["/usr/bin/python3", __file__, "--write", label, path], check=True)
        rss, seconds = peak_rss_mib([pack, "--explain", path])
        rows.append((label, os.path.getsize(path) / 2**20, rss, seconds))
        os.remove(path)
    base = rows[0][2]
    print("| checkpoint | file MiB | peak RSS MiB | extra over tiny MiB | seconds |")
    print("|---|---|---|---|---|")
    for label, size, rss, seconds in rows:
        print(f"| {label} | {size:.0f} | {rss:.0f} | {rss - base:.0f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
