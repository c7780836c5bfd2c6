#!/usr/bin/python3
"""Round trip of a real trained model through weightcast-pack, checked in PyTorch.

A small MLP trained one epoch on Fashion-MNIST is saved with torch.save, packed at lossless and
q27, and unpacked to a float .pt and an int8 .pt. The lossless float output, loaded with
load_state_dict, must equal int8 quantize-dequantize done here in Python, tensor for tensor, and
give the same predictions; the int8 output dequantized here must equal it too. Test accuracy at
q27 is reported. usage: checkpoint_roundtrip_e2e.py WEIGHTCAST_PACK WORK_DIR
"""
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench", "eval"))
import fashion  # noqa: E402


def quantize_dequantize(w):
    """Per-tensor symmetric int8 as the seed paper defines it."""
    scale = w.abs().max() / 127 if w.abs().max() > 0 else torch.tensor(1.0)
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def predictions(state, x):
    model = fashion.SmallMlp()
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        return model(x).argmax(dim=1)


def main():
    pack, work = sys.argv[1:3]
    os.makedirs(work, exist_ok=True)
    source = os.path.join(work, "small_mlp.pt")
    fashion.train("small_mlp", source)
    subprocess.run([pack, source, "-o", work, "--tiers", "lossless,q27"], check=True, stdout=subprocess.DEVNULL)
    for tier in ("lossless", "q27"):
        subprocess.run([pack, "--unpack", os.path.join(work, tier + ".wcm"), "-o",
                        os.path.join(work, tier + ".float.pt")], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([pack, "--unpack", os.path.join(work, "lossless.wcm"), "--int8", "-o",
                    os.path.join(work, "lossless.int8.pt")], check=True, stdout=subprocess.DEVNULL)

    original = torch.load(source)
    expected = {k: quantize_dequantize(v) if v.dim() >= 2 else v for k, v in original.items()}
    unpacked = torch.load(os.path.join(work, "lossless.float.pt"))
    assert list(unpacked) == list(original), list(unpacked)
    for name, tensor in expected.items():
        assert torch.equal(unpacked[name], tensor), f"{name}: differs from Python's quantize-dequantize"

    int8 = torch.load(os.path.join(work, "lossless.int8.pt"))
    for name, tensor in expected.items():
        if tensor.dim() >= 2:
            assert int8[name].dtype == torch.int8, name
            rebuilt = int8[name].float() * int8[name + ".__scale__"]
            assert torch.equal(rebuilt, tensor), f"{name}: int8 output differs"

    x, y = fashion.load("test")
    same = predictions(unpacked, x)
    assert torch.equal(same, predictions(expected, x)), "predictions differ"
    results = {"float": fashion.accuracy("small_mlp", source, (x, y))[0],
               "lossless": fashion.accuracy("small_mlp", os.path.join(work, "lossless.float.pt"), (x, y))[0],
               "q27": fashion.accuracy("small_mlp", os.path.join(work, "q27.float.pt"), (x, y))[0]}
    print("top-1 on the 10,000 test images:", {k: round(v, 2) for k, v in results.items()})
    assert results["q27"] > results["float"] - 5, results
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
