#!/usr/bin/python3
"""End to end through the weightcast-pack binary with real PyTorch on both sides.

Packs a PyTorch-written checkpoint at several tiers, unpacks every tier file, and checks that
PyTorch's load_state_dict(strict=True) accepts the result for the original module, that keys,
shapes and dtypes are identical, that lossless is within half a quantization step, and that
error grows with QP. usage: pack_cli_e2e.py WEIGHTCAST_PACK FIXTURE_DIR WORK_DIR
"""
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import make_checkpoints  # noqa: E402
import safetensors_io  # noqa: E402


def sqnr_db(ref, rec):
    noise = (ref - rec).double().pow(2).sum().item()
    return float("inf") if noise == 0 else 10 * torch.log10(ref.double().pow(2).sum() / noise).item()


def main():
    pack, fixtures, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    source = os.path.join(fixtures, "mixed.safetensors")
    original = safetensors_io.load(source)
    tiers = ["lossless", "q22", "q32"]
    subprocess.run([pack, source, "-o", work, "--tiers", ",".join(tiers), "--preset", "ultrafast"],
                   check=True, stdout=subprocess.DEVNULL)
    fc1_sqnr = {}
    for tier in tiers:
        out = os.path.join(work, tier + ".safetensors")
        subprocess.run([pack, "--unpack", os.path.join(work, tier + ".wcm"), "-o", out],
                       check=True, stdout=subprocess.DEVNULL)
        state = safetensors_io.load(out)
        assert list(state) == list(original), (tier, list(state))
        for name, tensor in state.items():
            assert tensor.shape == original[name].shape, (tier, name)
            expected_dtype = original[name].dtype if not original[name].is_floating_point() else torch.float32
            assert tensor.dtype == expected_dtype, (tier, name, tensor.dtype)
        net = make_checkpoints.SmallNet()
        net.load_state_dict(state, strict=True)
        net.eval()
        with torch.no_grad():
            x = torch.relu(net.bn(net.conv(torch.randn(2, 1, 28, 28))))
            logits = net.fc2(torch.relu(net.fc1(x.flatten(1))))
        assert torch.isfinite(logits).all(), tier
        w = original["fc1.weight"]
        fc1_sqnr[tier] = sqnr_db(w, state["fc1.weight"])
        if tier == "lossless":
            step = w.abs().max() / 127
            assert (state["fc1.weight"] - w).abs().max() <= step / 2 + 1e-6, "lossless beyond half a step"
        assert torch.equal(state["bn.num_batches_tracked"], original["bn.num_batches_tracked"])
        assert torch.equal(state["fc1.bias"], original["fc1.bias"])
    print("fc1.weight SQNR dB by tier:", {k: round(v, 2) for k, v in fc1_sqnr.items()})
    assert fc1_sqnr["lossless"] > fc1_sqnr["q22"] > fc1_sqnr["q32"], fc1_sqnr
    int8_output_with_per_channel_scales(pack, fixtures, work)
    outlier_side_list(pack, fixtures, work)
    print("3 passed, 0 failed")


def int8_output_with_per_channel_scales(pack, fixtures, work):
    """The auto front end gives folded-BN rows one scale per output channel; the --int8 output
    carries them as "<name>.__scale__" of shape [rows], and FORMAT.md's PyTorch line dequantizes
    every tensor (one scale or one per channel) to exactly the float output."""
    source = os.path.join(fixtures, "folded.safetensors")
    out = os.path.join(work, "folded")
    subprocess.run([pack, source, "-o", out, "--tiers", "q27", "--preset", "ultrafast"],
                   check=True, stdout=subprocess.DEVNULL)
    packed = os.path.join(out, "q27.wcm")
    subprocess.run([pack, "--unpack", packed, "-o", os.path.join(out, "int8.pt"), "--int8"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([pack, "--unpack", packed, "-o", os.path.join(out, "float.pt")], check=True,
                   stdout=subprocess.DEVNULL)
    sd, floats = torch.load(os.path.join(out, "int8.pt")), torch.load(os.path.join(out, "float.pt"))
    assert sd["conv.weight"].dtype == torch.int8 and sd["conv.weight.__scale__"].shape == (64,), sd.keys()
    assert sd["fc.weight.__scale__"].shape == (128,)
    assert sd["head.weight.__scale__"].shape == (1,)
    for k in ("conv.weight", "fc.weight", "head.weight"):
        w = sd[k].float() * sd[k + ".__scale__"].view(-1, *[1] * (sd[k].dim() - 1))
        assert torch.equal(w, floats[k]), k


def outlier_side_list(pack, fixtures, work):
    """A layer with a few x20 weights gets the outlier front end ("tensor+out" in the summary):
    the float output holds each outlier as its float16, the --int8 output is plain int8 with
    the outliers saturated to +-127 on the layer's one scale (FORMAT.md)."""
    source = os.path.join(fixtures, "outliers.safetensors")
    out = os.path.join(work, "outliers")
    summary = subprocess.run([pack, source, "-o", out, "--tiers", "q27", "--preset", "ultrafast"],
                             check=True, capture_output=True, text=True).stdout
    rows = {line.split()[0]: line.split() for line in summary.splitlines() if line.startswith("  ")}
    assert rows["attn.weight"][2] == "tensor+out", summary
    assert rows["mlp.weight"][2] == "tensor", summary
    packed = os.path.join(out, "q27.wcm")
    subprocess.run([pack, "--unpack", packed, "-o", os.path.join(out, "int8.pt"), "--int8"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([pack, "--unpack", packed, "-o", os.path.join(out, "float.pt")], check=True,
                   stdout=subprocess.DEVNULL)
    sd, floats = torch.load(os.path.join(out, "int8.pt")), torch.load(os.path.join(out, "float.pt"))
    original = safetensors_io.load(source)["attn.weight"]
    big = original.abs() > 1.0  # the planted x20 weights
    assert int(big.sum()) == 12
    assert torch.equal(floats["attn.weight"][big], original[big].half().float())
    assert sd["attn.weight"].dtype == torch.int8 and sd["attn.weight.__scale__"].shape == (1,)
    assert torch.equal(sd["attn.weight"][big].abs(), torch.full((12,), 127, dtype=torch.int8))


if __name__ == "__main__":
    main()
