#!/usr/bin/python3
"""Fashion-MNIST reference models: train (deterministic, cached) and evaluate checkpoints.

usage:
  fashion.py train MODEL OUT                 train MODEL (mlp, small_mlp, fc_cnn, res_cnn, mobilenet)
                                             unless OUT exists; OUT is .pt (torch.save) or
                                             .safetensors; mobilenet is trained with batch norm
                                             (cached as mobilenet_bn.pt beside OUT), then folded
  fashion.py accuracy MODEL CKPT [...]        (CKPT: .pt or .safetensors)
                                             top-1 / top-2 on the 10,000 test images
  fashion.py finetune MODEL BASE.pt OUT.pt STEPS
                                             a later version: BASE trained STEPS more Adam steps
                                             (lr 1e-4, batch 128) unless OUT exists
  fashion.py export MODEL STATE.pt MODULE.pt DATA.pt [COUNT]
                                             the evaluation bundle for the server: MODEL scripted
                                             and the first COUNT (10000) test images + labels
  fashion.py table MODEL FLOAT.pt TIER_DIR TIER [...]
                                             per tier: bytes (TIER_DIR/TIER.wcm, or the number in
                                             TIER_DIR/TIER.bytes) and the accuracy of TIER_DIR/TIER.pt
Data: /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist).
"""
import gzip
import os
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures"))
import safetensors_io  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def _idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(split):
    prefix = "train" if split == "train" else "t10k"
    images = _idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = _idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - 0.2860) / 0.3530  # Fashion-MNIST mean and std
    return x, torch.from_numpy(labels.astype(np.int64))


class Mlp(torch.nn.Module):
    """A plain MLP whose two large FC layers dominate the bytes."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 1024)
        self.fc2 = torch.nn.Linear(1024, 1024)
        self.fc3 = torch.nn.Linear(1024, 10)

    def forward(self, x):
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


class SmallMlp(torch.nn.Module):
    """A one-hidden-layer MLP that trains in seconds, for tests."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 256)
        self.fc2 = torch.nn.Linear(256, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class FcCnn(torch.nn.Module):
    """In the spirit of VGG16: a small convolutional stack, then two large FC layers that hold
    most of the weights (fc1 1568x1024, fc2 1024x1024)."""

    def __init__(self):
        super().__init__()
        conv = lambda i, o: torch.nn.Conv2d(i, o, 3, padding=1)  # noqa: E731
        self.conv1, self.conv2 = conv(1, 16), conv(16, 16)
        self.conv3, self.conv4 = conv(16, 32), conv(32, 32)
        self.fc1 = torch.nn.Linear(32 * 7 * 7, 1024)
        self.fc2 = torch.nn.Linear(1024, 1024)
        self.fc3 = torch.nn.Linear(1024, 10)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x):
        pool = torch.nn.functional.max_pool2d
        x = pool(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 2)
        x = pool(torch.relu(self.conv4(torch.relu(self.conv3(x)))), 2)
        x = self.dropout(torch.relu(self.fc1(x.flatten(1))))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)


class Block(torch.nn.Module):
    """A ResNet basic block: two 3x3 convolutions with BatchNorm and a shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.shortcut = torch.nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResCnn(torch.nn.Module):
    """In the spirit of ResNet18/50: residual blocks with BatchNorm, global average pooling and a
    small final FC layer (the classifier)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.layer1 = Block(16, 16, 1)
        self.layer2 = Block(16, 32, 2)
        self.layer3 = Block(32, 64, 2)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


# MobileNet-style blocks: (input channels, output channels, stride of the depthwise convolution).
MOBILENET_BLOCKS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1)]


class SeparableBn(torch.nn.Module):
    """A depthwise-separable block as trained: 3x3 depthwise convolution, batch norm, ReLU, 1x1
    pointwise convolution, batch norm, ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.dw = torch.nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.dw_bn = torch.nn.BatchNorm2d(cin)
        self.pw = torch.nn.Conv2d(cin, cout, 1, bias=False)
        self.pw_bn = torch.nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.pw_bn(self.pw(torch.relu(self.dw_bn(self.dw(x))))))


class MobileNetBn(torch.nn.Module):
    """In the spirit of MobileNet v1, as trained: a strided 3x3 stem, five depthwise-separable
    blocks (32 -> 256 channels, 14x14 -> 4x4), global average pooling, FC 256x10."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 32, 3, 2, 1, bias=False)
        self.stem_bn = torch.nn.BatchNorm2d(32)
        self.blocks = torch.nn.Sequential(*[SeparableBn(*b) for b in MOBILENET_BLOCKS])
        self.fc = torch.nn.Linear(256, 10)

    def forward(self, x):
        x = self.blocks(torch.relu(self.stem_bn(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


class Separable(torch.nn.Module):
    """SeparableBn for inference: each batch norm folded into the convolution before it."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.dw = torch.nn.Conv2d(cin, cin, 3, stride, 1, groups=cin)
        self.pw = torch.nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return torch.relu(self.pw(torch.relu(self.dw(x))))


class MobileNet(torch.nn.Module):
    """MobileNetBn with its batch norms folded into the stem, depthwise and pointwise (1x1)
    convolutions: what an export for inference distributes, and what the evaluation registers."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 32, 3, 2, 1)
        self.blocks = torch.nn.Sequential(*[Separable(*b) for b in MOBILENET_BLOCKS])
        self.fc = torch.nn.Linear(256, 10)

    def forward(self, x):
        x = self.blocks(torch.relu(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


def fold_mobilenet(state):
    """MobileNetBn's state_dict -> MobileNet's: per output channel c of a convolution followed by
    batch norm (gamma, beta, mean, var), g = gamma / sqrt(var + eps), w'[c] = w[c] * g[c],
    b'[c] = beta[c] - g[c] * mean[c]. Exact in eval mode up to float rounding."""
    pairs = {"stem": "stem_bn"}
    for i in range(len(MOBILENET_BLOCKS)):
        pairs[f"blocks.{i}.dw"] = f"blocks.{i}.dw_bn"
        pairs[f"blocks.{i}.pw"] = f"blocks.{i}.pw_bn"
    out = {}
    for conv, bn in pairs.items():
        g = state[f"{bn}.weight"] / torch.sqrt(state[f"{bn}.running_var"] + 1e-5)  # BatchNorm2d's eps
        out[f"{conv}.weight"] = (state[f"{conv}.weight"] * g.view(-1, 1, 1, 1)).contiguous()
        out[f"{conv}.bias"] = (state[f"{bn}.bias"] - g * state[f"{bn}.running_mean"]).contiguous()
    out["fc.weight"], out["fc.bias"] = state["fc.weight"], state["fc.bias"]
    return out


# name -> (class, epochs). "mobilenet" is trained as "mobilenet_bn" and then folded (train()).
MODELS = {"mlp": (Mlp, 2), "small_mlp": (SmallMlp, 1), "fc_cnn": (FcCnn, 3), "res_cnn": (ResCnn, 3),
          "mobilenet_bn": (MobileNetBn, 1), "mobilenet": (MobileNet, 0)}


def train(name, out):
    if os.path.exists(out):
        print(f"{out}: cached")
        return
    if name == "mobilenet":  # trained with batch norm (cached beside OUT), then folded
        trained = os.path.join(os.path.dirname(os.path.abspath(out)), "mobilenet_bn.pt")
        train("mobilenet_bn", trained)
        torch.save(fold_mobilenet(torch.load(trained)), out + ".tmp")
        os.replace(out + ".tmp", out)
        return
    cls, epochs = MODELS[name]
    torch.manual_seed(0)
    # One thread: the same weights on any machine, and no time lost spinning when the machine is
    # loaded (mobilenet_bn: 0.15 CPU-s a step on one thread, 1.4 on two, with 2 cores shared).
    torch.set_num_threads(1)
    model = cls()
    x, y = load("train")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 128):
            idx = order[i:i + 128]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        print(f"{name}: epoch {epoch + 1}/{epochs} loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if out.endswith(".pt"):
        torch.save(model.state_dict(), out + ".tmp")
    else:
        safetensors_io.save(model.state_dict(), out + ".tmp")
    os.replace(out + ".tmp", out)


def fine_tune(name, base_path, out, steps):
    """B: A trained `steps` more Adam steps at lr 1e-4 on a fresh data order (cached)."""
    if os.path.exists(out):
        return
    torch.manual_seed(1)
    model = MODELS[name][0]()
    model.load_state_dict(load_state(base_path), strict=True)
    x, y = load("train")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    model.train()
    start = time.time()
    for step in range(steps):
        idx = order[(step * 128) % len(x):][:128]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    print(f"{name}: fine-tuned {steps} steps ({time.time() - start:.0f} s)", flush=True)
    torch.save(model.state_dict(), out + ".tmp")
    os.replace(out + ".tmp", out)


def export(name, state_path, module_out, data_out, count=10000):
    """The evaluation bundle the server measures tiers with: MODEL scripted (TorchScript, weights
    of STATE) and the first COUNT test images with their labels."""
    model = MODELS[name][0]()
    model.load_state_dict(load_state(state_path), strict=True)
    torch.jit.script(model.eval()).save(module_out + ".tmp")
    os.replace(module_out + ".tmp", module_out)
    x, y = load("test")
    torch.save({"inputs": x[:count].contiguous(), "labels": y[:count].contiguous()}, data_out + ".tmp")
    os.replace(data_out + ".tmp", data_out)


def load_state(path):
    return torch.load(path) if path.endswith((".pt", ".pth")) else safetensors_io.load(path)


def accuracy(name, path, data=None):
    return accuracy_of_state(name, load_state(path), data)


def logits_of_state(name, state, data=None):
    """MODEL's outputs (logits, one row per test image) with the tensors of STATE."""
    x, _ = data if data is not None else load("test")
    model = MODELS[name][0]()
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])


def output_cosine(logits, reference):
    """The label-free fidelity figure: mean over images of the cosine between a model's output
    row and the float model's."""
    return torch.nn.functional.cosine_similarity(logits, reference, dim=1).mean().item()


def accuracy_of_state(name, state, data=None):
    """Top-1 and top-2 (percent) of MODEL with the tensors of STATE on the test images."""
    data = data if data is not None else load("test")
    return accuracy_of_logits(logits_of_state(name, state, data), data[1])


def accuracy_of_logits(logits, y):
    """Top-1 and top-2 (percent) of LOGITS against the labels Y."""
    top2 = logits.topk(2, dim=1).indices
    top1 = (top2[:, 0] == y).float().mean().item() * 100
    top2_acc = (top2 == y.unsqueeze(1)).any(dim=1).float().mean().item() * 100
    return top1, top2_acc


def table(name, float_path, tier_dir, tiers):
    data = load("test")
    float_bytes = sum(t.numel() * 4 for t in load_state(float_path).values() if t.is_floating_point())
    base1, base2 = accuracy(name, float_path, data)
    print(f"{'tier':<10} {'bytes':>10} {'x float':>8} {'top-1 %':>8} {'top-2 %':>8} {'top-1 drop':>10}")
    print(f"{'float32':<10} {float_bytes:>10} {1.0:>8.2f} {base1:>8.2f} {base2:>8.2f} {0.0:>10.2f}")
    for tier in tiers:
        packed = os.path.join(tier_dir, tier + ".wcm")
        if os.path.exists(packed):
            size = os.path.getsize(packed)
        else:  # pulled from a server: the byte count the client reported
            with open(os.path.join(tier_dir, tier + ".bytes")) as f:
                size = int(f.read())
        top1, top2 = accuracy(name, os.path.join(tier_dir, tier + ".pt"), data)
        print(f"{tier:<10} {size:>10} {float_bytes / size:>8.2f} {top1:>8.2f} {top2:>8.2f} {base1 - top1:>10.2f}")


def main():
    if len(sys.argv) >= 6 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
        return
    if len(sys.argv) == 6 and sys.argv[1] == "finetune":
        fine_tune(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    if len(sys.argv) in (6, 7) and sys.argv[1] == "export":
        export(*sys.argv[2:6], *([int(sys.argv[6])] if len(sys.argv) == 7 else []))
        return
    if len(sys.argv) < 4 or sys.argv[1] not in ("train", "accuracy"):
        print(__doc__)
        sys.exit(2)
    if sys.argv[1] == "train":
        train(sys.argv[2], sys.argv[3])
        return
    data = load("test")
    for path in sys.argv[3:]:
        top1, top2 = accuracy(sys.argv[2], path, data)
        print(f"{path}\ttop1 {top1:.2f}\ttop2 {top2:.2f}")


if __name__ == "__main__":
    main()
