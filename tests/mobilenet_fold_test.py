#!/usr/bin/python3
"""bench/eval/fashion.py's batch-norm folding for the MobileNet-style evaluation model is exact: in
eval mode, MobileNet with fold_mobilenet's weights gives MobileNetBn's outputs to float tolerance,
with batch-norm statistics far from the identity (so a wrong fold could not pass). Seconds; no
training."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "eval"))
import fashion  # noqa: E402


def main():
    torch.manual_seed(0)
    trained = fashion.MobileNetBn()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in trained.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=gen) * 3 + 0.05)
                module.bias.copy_(torch.randn(n, generator=gen))
                module.running_mean.copy_(torch.randn(n, generator=gen))
                module.running_var.copy_(torch.rand(n, generator=gen) * 4 + 0.01)
    trained.eval()
    folded_state = fashion.fold_mobilenet(trained.state_dict())
    folded = fashion.MobileNet()
    folded.load_state_dict(folded_state, strict=True)  # every tensor present, none left over
    folded.eval()
    x = torch.randn(64, 1, 28, 28, generator=gen)
    with torch.no_grad():
        want, got = trained(x), folded(x)
    scale = want.abs().max().item()
    error = (want - got).abs().max().item()
    print(f"max |unfolded - folded| = {error:.3g} (outputs up to {scale:.3g})")
    assert scale > 0.1, scale
    assert error <= 1e-5 * max(1.0, scale), f"folding is not exact: {error} (outputs up to {scale})"
    # The same weights without the batch-norm scales give other outputs: the check above can fail.
    unscaled = dict(folded_state)
    for name, tensor in trained.state_dict().items():
        if name.endswith(".weight") and tensor.dim() == 4:
            unscaled[name] = tensor
    folded.load_state_dict(unscaled, strict=True)
    with torch.no_grad():
        assert (folded(x) - want).abs().max().item() > 1e-2
    # Folding makes the per-row scales of the pointwise convolutions vary (the point).
    rows = folded_state["blocks.4.pw.weight"].flatten(1).abs().amax(dim=1)
    assert rows.max() / rows.min() > 2, (rows.max(), rows.min())
    print("ok")


if __name__ == "__main__":
    main()
