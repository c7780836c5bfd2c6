#!/usr/bin/python3
"""Streamed and sharded pulls, end to end through weightcastd and the CLI, loaded by PyTorch.

Registers a checkpoint PyTorch wrote, pulls one tier three ways: a streamed .safetensors (written
layer by layer), a .pt (the whole-model writer) and `--shard-bytes` shards into a directory. The
shards are loaded the way transformers loads a sharded checkpoint (model.safetensors.index.json's
weight_map names each tensor's file; Debian has no python3-safetensors, so the fixture parser reads
them), must equal the .pt and the single file tensor for tensor, and load into the module.
usage: sharded_pull_e2e.py BUILD_DIR FIXTURE_DIR WORK_DIR
"""
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import safetensors_io  # noqa: E402
import server_process  # noqa: E402


def load_sharded(folder):
    """transformers' rule: the index's weight_map, each shard once, every tensor where it says."""
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        index = json.load(f)
    state, total = {}, 0
    for shard in sorted(set(index["weight_map"].values())):
        part = safetensors_io.load(os.path.join(folder, shard))
        assert set(part) == {n for n, s in index["weight_map"].items() if s == shard}, shard
        state.update(part)
        total += sum(t.numel() * t.element_size() for t in part.values())
    assert total == index["metadata"]["total_size"], (total, index["metadata"])
    return state, len(set(index["weight_map"].values()))


def main():
    build, fixtures, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    server = server_process.Weightcastd(build, os.path.join(work, "data"), "--preset", "ultrafast")
    try:
        run = server.run
        run("register", "cnn", "v1", os.path.join(fixtures, "cnn_bn.pt"), "--ladder", "q27")
        single = os.path.join(work, "model.safetensors")
        whole = os.path.join(work, "model.pt")
        shards = os.path.join(work, "shards")
        run("pull", "cnn", "--tier", "q27", "-o", single)
        run("pull", "cnn", "--tier", "q27", "-o", whole)
        run("pull", "cnn", "--tier", "q27", "--shard-bytes", "4096", "-o", shards)

        reference = torch.load(whole)
        streamed = safetensors_io.load(single)
        sharded, count = load_sharded(shards)
        assert count > 1, count
        assert list(streamed) == list(reference), (list(streamed), list(reference))
        assert set(sharded) == set(reference)
        for name, tensor in reference.items():
            assert torch.equal(streamed[name], tensor), name
            assert torch.equal(sharded[name], tensor), name
        module = torch.jit.load(os.path.join(fixtures, "script.pt"))
        module.load_state_dict(sharded)
        print(f"{len(reference)} tensors: streamed file and {count} shards equal the .pt; loaded")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
