#!/usr/bin/python3
"""A Hugging Face folder (model.safetensors.index.json + shards, written by PyTorch) registers as
one version through the CLI and the real weightcastd, and pulls back the tensors of the single-file
checkpoint; bad folders (a missing shard, a tensor in two shards, an index naming a tensor no shard
holds, a shard name outside the folder) are refused naming the file and tensor, and store nothing.
usage: sharded_register_e2e.py BUILD_DIR FIXTURE_DIR WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import safetensors_io  # noqa: E402
import server_process  # noqa: E402

INDEX = "model.safetensors.index.json"
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


def broken_copy(fixtures, work, name, edit):
    folder = os.path.join(work, name)
    shutil.copytree(os.path.join(fixtures, "sharded"), folder)
    edit(folder)
    return folder


def edit_index(folder, change):
    path = os.path.join(folder, INDEX)
    with open(path) as f:
        index = json.load(f)
    change(index["weight_map"])
    with open(path, "w") as f:
        json.dump(index, f)


def main():
    build, fixtures, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    server = server_process.Weightcastd(build, os.path.join(work, "data"), "--preset", "ultrafast")
    try:
        run = server.run
        out = run("register", "net", "v1", os.path.join(fixtures, "sharded"), "--ladder", "lossless,q27")
        assert "registered net/v1" in out, out
        run("register", "net", "whole", os.path.join(fixtures, "mixed.safetensors"), "--ladder", "lossless,q27")
        sharded = json.loads(run("describe", "net", "v1", "--json"))
        whole = json.loads(run("describe", "net", "whole", "--json"))
        assert sharded["tensors"] == whole["tensors"], (sharded["tensors"], whole["tensors"])

        # Lossless: the int8 quantization of the original; q27: what the single file gives.
        original = safetensors_io.load(os.path.join(fixtures, "mixed.safetensors"))
        pulled = {}
        for version, tier in (("v1", "lossless"), ("v1", "q27"), ("whole", "q27")):
            path = os.path.join(work, f"{version}-{tier}.pt")
            run("pull", f"net@{version}", "--tier", tier, "-o", path)
            pulled[version, tier] = torch.load(path)
            assert list(pulled[version, tier]) == list(original), list(pulled[version, tier])
        for name, tensor in original.items():
            got = pulled["v1", "lossless"][name]
            assert got.shape == tensor.shape, name
            if tensor.is_floating_point():
                err = (got.float() - tensor.float()).abs().max().item()
                assert err <= tensor.float().abs().max().item() / 127 * 0.51 + 1e-6, (name, err)
            else:
                assert torch.equal(got, tensor), name
            assert torch.equal(pulled["v1", "q27"][name], pulled["whole", "q27"][name]), name

        def blobs():
            return sorted(name for _, _, names in os.walk(os.path.join(work, "data", "blobs"))
                          for name in names)
        blobs_before = blobs()
        cases = {
            "a missing shard": (lambda f: os.remove(os.path.join(f, SHARD2)), SHARD2),
            "a tensor in two shards": (
                lambda f: shutil.copy(os.path.join(f, SHARD1), os.path.join(f, SHARD2)), "is also in"),
            "an index naming a tensor no shard holds": (
                lambda f: edit_index(f, lambda m: m.update({"lm_head.weight": SHARD1})), "lm_head.weight"),
            "a shard name outside the folder": (
                lambda f: edit_index(f, lambda m: m.update({k: "../" + SHARD1 for k in m})), INDEX),
            "a shard tensor the index does not name": (
                lambda f: edit_index(f, lambda m: m.pop(next(iter(m)))), "does not name"),
        }
        for number, (case, (edit, expected)) in enumerate(cases.items()):
            folder = broken_copy(fixtures, work, f"bad{number}", edit)
            result = subprocess.run(server.cli + ["register", "net", f"bad{number}", folder],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert result.returncode != 0, (case, result.stdout)
            assert expected in result.stdout, (case, expected, result.stdout)
            print(f"{case}: {result.stdout.strip()}")
        versions = run("ls")
        assert "bad" not in versions, versions
        assert blobs() == blobs_before, "a refused registration stored something"
        print("1 passed, 0 failed")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
