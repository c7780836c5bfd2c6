#!/usr/bin/python3
"""Would a block ("mosaic") picture layout code first fully-connected layers in fewer bytes?

usage: mosaic_layout.py WORK_DIR WEIGHTCAST_PACK [QP ...]   (default QPs 26 30 34 38)

A question for issue 21, answered outside the server: the server's picture of a linear layer is
its matrix [out, in], so a row's neighbours in the picture are neighbouring input features only
along the row. When the inputs are an image (mlp's fc1: 28x28 pixels) or flattened feature maps
(fc_cnn's fc1: 32 channels of 7x7), a weight's neighbours one image row up and down sit `width`
columns away, out of reach of HEVC's prediction and transforms. The mosaic lays each row's values
out as its image blocks (bh x bw), the blocks of all rows side by side in a near-square grid, so
HEVC sees both directions.

Per model (mlp, fc_cnn: trained or reused in WORK_DIR/models as accuracy_tiers.py does) and QP:
writes fc1.weight as it is and as its mosaic to two checkpoints, packs both with
`weightcast-pack --tiers qQP --scheme per-tensor` (the same int8 scale: the values are the same),
unpacks, undoes the mosaic, and reports bytes, SQNR against the float layer and the model's top-1
on the 10,000 test images with that fc1 (the other layers float). One JSON line per row.
"""
import json
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion  # noqa: E402

# fc1's input as blocks: (channels, block rows, block cols) per row of the matrix.
BLOCKS = {"mlp": (1, 28, 28), "fc_cnn": (32, 7, 7)}


def grid_cols(blocks, bh, bw):
    """Blocks per picture row for a near-square picture."""
    cols = 1
    while cols * bw < (blocks // cols) * bh:
        cols += 1
    return cols


def to_mosaic(w, channels, bh, bw):
    rows = w.shape[0]
    blocks = rows * channels
    cols = grid_cols(blocks, bh, bw)
    grid_rows = -(-blocks // cols)
    flat = w.reshape(blocks, bh, bw)
    padded = torch.zeros(grid_rows * cols, bh, bw, dtype=w.dtype)
    padded[:blocks] = flat
    return padded.reshape(grid_rows, cols, bh, bw).permute(0, 2, 1, 3).reshape(grid_rows * bh, cols * bw)


def from_mosaic(m, shape, channels, bh, bw):
    rows = shape[0]
    blocks = rows * channels
    cols = m.shape[1] // bw
    grid_rows = m.shape[0] // bh
    flat = m.reshape(grid_rows, bh, cols, bw).permute(0, 2, 1, 3).reshape(grid_rows * cols, bh, bw)
    return flat[:blocks].reshape(shape)


def sqnr_db(ref, got):
    noise = (ref - got).pow(2).sum().item()
    return 10 * torch.log10(torch.tensor(ref.pow(2).sum().item() / noise)).item() if noise else float("inf")


def pack_and_back(pack, tensor, qp, tmp, tag):
    src = os.path.join(tmp, tag + ".pt")
    torch.save({"fc1.weight": tensor.contiguous()}, src)
    out = os.path.join(tmp, tag)
    subprocess.run([pack, src, "-o", out, "--tiers", f"q{qp}", "--scheme", "per-tensor"],
                   check=True, capture_output=True)
    wcm = os.path.join(out, f"q{qp}.wcm")
    back = os.path.join(tmp, tag + ".back.pt")
    subprocess.run([pack, "--unpack", wcm, "-o", back], check=True, capture_output=True)
    return os.path.getsize(wcm), torch.load(back)["fc1.weight"]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    work, pack = sys.argv[1], sys.argv[2]
    qps = [int(q) for q in sys.argv[3:]] or [26, 30, 34, 38]
    os.makedirs(os.path.join(work, "models"), exist_ok=True)
    data = fashion.load("test")
    for model, (channels, bh, bw) in BLOCKS.items():
        path = os.path.join(work, "models", model + ".pt")
        fashion.train(model, path)
        state = fashion.load_state(path)
        w = state["fc1.weight"].float()
        float_top1 = fashion.accuracy_of_state(model, state, data)[0]
        mosaic = to_mosaic(w, channels, bh, bw)
        assert torch.equal(from_mosaic(mosaic, w.shape, channels, bh, bw), w)
        with tempfile.TemporaryDirectory() as tmp:
            for qp in qps:
                row = {"model": model, "float_top1": float_top1, "qp": qp,
                       "fc1": list(w.shape), "picture": list(mosaic.shape), "blocks": [channels, bh, bw]}
                for tag, tensor in (("matrix", w), ("mosaic", mosaic)):
                    size, back = pack_and_back(pack, tensor, qp, tmp, tag)
                    if tag == "mosaic":
                        back = from_mosaic(back, w.shape, channels, bh, bw)
                    coded = dict(state)
                    coded["fc1.weight"] = back
                    row[tag] = {"file_bytes": size, "sqnr_db": round(sqnr_db(w, back), 2),
                                "top1": fashion.accuracy_of_state(model, coded, data)[0]}
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
