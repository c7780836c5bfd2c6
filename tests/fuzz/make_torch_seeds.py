#!/usr/bin/python3
"""Writes the torch.save seeds of fuzz_torch_checkpoint: the data.pkl record of small checkpoints
PyTorch writes (a state_dict, a training dict, views of one storage). usage: make_torch_seeds.py DIR
"""
import collections
import io
import os
import sys
import zipfile

import torch


def data_pkl(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    base = torch.randn(6, 8)
    seeds = {
        "state_dict": collections.OrderedDict([("fc.weight", torch.randn(4, 3)), ("fc.bias", torch.zeros(4)),
                                               ("bn.num_batches_tracked", torch.tensor(3))]),
        "training": {"model": {"w": torch.randn(2, 2)}, "epoch": 3, "lr": 0.1, "name": "x"},
        "views": {"base": base, "rows": base[2:5], "t": base.t(), "half": base.half()},
    }
    for name, obj in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data_pkl(obj))


if __name__ == "__main__":
    main()
