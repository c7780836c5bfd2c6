#!/usr/bin/python3
"""Writes the seeds of fuzz_torchscript: whole TorchScript archives (torch.jit.save) of tiny
modules, every record stored uncompressed so the fuzzer's mutations reach the code/ sources and
pickles (libtorch does not check the zip's CRCs). A scripted module with a parameter, a buffer and
a submodule; a frozen one, whose weights are tensor constants (constants.pkl, constants/N).
usage: make_torchscript_seeds.py DIR
"""
import io
import os
import sys
import zipfile

import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.register_buffer("steps", torch.tensor(4))

    def forward(self, x):
        return torch.relu(self.fc(x)) * self.steps


def stored_archive(module, name):
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            # The archive's folder is named after the file it was saved to; name it after the seed.
            record = zipfile.ZipInfo(name + info.filename[info.filename.index("/"):], date_time=(1980, 1, 1, 0, 0, 0))
            zout.writestr(record, zin.read(info.filename))
    return out.getvalue()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    scripted = torch.jit.script(Tiny().eval())
    seeds = {"scripted": scripted, "frozen": torch.jit.freeze(scripted)}
    for name, module in seeds.items():
        data = stored_archive(module, name)
        assert len(data) < 65536, (name, len(data))  # scripts/fuzz runs with -max_len=65536
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
