#!/usr/bin/python3
"""Version deltas on the Fashion-MNIST reference models (issue: delta updates).

usage: delta.py BUILD_DIR WORK_DIR RESULTS.json

For each reference model A (trained and cached by fashion.py), makes two fine-tuned versions B:
"300 steps" (Adam, lr 1e-4, batch 128, a fresh optimizer: a typical fine-tune) and "1 epoch"
(469 such steps). For each B and tier QP, build/bench/delta_eval codes B on its own and as a
delta on A's tier (P pictures on A's pictures; common/pack/delta_codec) at the tier's QP and as
the server chooses (matched fidelity), decodes each delta against A's layer and checks its
SHA-256, and writes the reconstructions; this script measures their accuracy on the 10,000 test
images. The baseline delta is zstd of the int8 difference of
the same two reconstructions (what a generic differ would send for the same update).

Then through the real system: weightcastd with A registered and B registered with
--base-version A; per tier, a device pulls A with --base-dir, then B (the delta pull), and a
fresh device pulls B whole; both B files must have the same SHA-256, and their top-1 is measured.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures"))
import fashion  # noqa: E402
import server_process  # noqa: E402

QPS = [22, 27, 32, 37]
# B's P pictures at the tier's QP, and the delta the server stores ("m": the coarsest QP that keeps
# B's SQNR as coded on its own).
OFFSETS = ["0", "m"]
POLICIES = {"mlp": None, "fc_cnn": None, "res_cnn": {"min_picture_elements": 512, "convolutions": "picture"}}
FINE_TUNES = {"300 steps": 300, "1 epoch": 469}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def pull(server, spec, tier, out, base_dir=None):
    """Pulls with the CLI; the bytes it transferred."""
    args = ["pull", spec, "--tier", tier, "-o", out] + (["--base-dir", base_dir] if base_dir else [])
    return int(re.search(r"tier \S+: (\d+) bytes", server.run(*args)).group(1))


def through_server(build, work, name, a_path, b_path, policy_args, data):
    """Per tier: bytes of B's delta pull and whole pull through weightcastd, same SHA-256, top-1."""
    root = os.path.join(work, "delta", "server", f"{name}-{os.path.basename(b_path)}")
    shutil.rmtree(root, ignore_errors=True)
    server = server_process.Weightcastd(build, os.path.join(root, "data"), "--workers", "2")
    try:
        ladder = ",".join(f"q{qp}" for qp in QPS)
        policy = ["--policy", policy_args[0]] if policy_args else []
        server.run("register", name, "a", a_path, "--ladder", ladder, *policy)
        server.run("register", name, "b", b_path, "--ladder", ladder, "--base-version", "a", *policy)
        out = {}
        for qp in QPS:
            tier, device = f"q{qp}", os.path.join(root, f"device-q{qp}")
            pull(server, f"{name}@a", tier, os.path.join(device, "a.pt"), os.path.join(device, "bases"))
            delta_bytes = pull(server, f"{name}@b", tier, os.path.join(device, "b.pt"), os.path.join(device, "bases"))
            whole_bytes = pull(server, f"{name}@b", tier, os.path.join(root, f"fresh-b-q{qp}.pt"))
            info = json.loads(server.run("describe", name, "b", "--json"))
            layers = next(t for t in info["tiers"] if t["name"] == tier)["layers"]
            same = sha256(os.path.join(device, "b.pt")) == sha256(os.path.join(root, f"fresh-b-q{qp}.pt"))
            top1, _ = fashion.accuracy(name, os.path.join(device, "b.pt"), data)
            out[qp] = {"delta_pull_bytes": delta_bytes, "whole_pull_bytes": whole_bytes, "same_sha256": same,
                       "top1": top1, "delta_layers": sum(l["codec"] == "LAYER_CODEC_HEVC_DELTA" for l in layers)}
        return out
    finally:
        server.stop()


def parse_args(doc):
    """BUILD_DIR WORK_DIR RESULTS.json from the command line (else the usage), and the test set."""
    if len(sys.argv) != 4:
        print(doc)
        sys.exit(2)
    torch.set_num_threads(os.cpu_count() or 1)
    return (*sys.argv[1:], fashion.load("test"))


def policy_file(work, tag, name):
    """The path of a JSON file with model NAME's layer policy in POLICIES (None: the default policy)."""
    if not POLICIES[name]:
        return None
    path = os.path.join(work, f"{tag}-{name}.policy.json")
    with open(path, "w") as f:
        json.dump(POLICIES[name], f)
    return path


def main():
    build, work, results_path, data = parse_args(__doc__)
    models_dir = os.path.join(work, "models")
    results = []
    for name in POLICIES:
        base = os.path.join(models_dir, f"{name}.pt")
        fashion.train(name, base)
        policy_path = policy_file(work, "delta", name)
        policy_args = [policy_path] if policy_path else []
        a_top1, _ = fashion.accuracy(name, base, data)
        for label, steps in FINE_TUNES.items():
            b_path = os.path.join(models_dir, f"{name}.ft{steps}.pt")
            fashion.fine_tune(name, base, b_path, steps)
            b_top1, _ = fashion.accuracy(name, b_path, data)
            out_dir = os.path.join(work, "delta", f"{name}.ft{steps}")
            os.makedirs(out_dir, exist_ok=True)
            run = subprocess.run([os.path.join(build, "bench", "delta_eval"), base, b_path, out_dir,
                                  ",".join(map(str, QPS)), ",".join(OFFSETS)] + policy_args,
                                 check=True, capture_output=True, text=True)
            served = through_server(build, work, name, base, b_path, policy_args, data)
            for tier in json.loads(run.stdout):
                tier["server"] = served[tier["qp"]]
                tag = f"_q{tier['qp']}"
                tier["intra_top1"], _ = fashion.accuracy(name, os.path.join(out_dir, f"b_intra{tag}.pt"), data)
                for d in tier["deltas"]:
                    d["top1"], _ = fashion.accuracy(name, os.path.join(out_dir, f"b_delta{tag}_o{d['qp_offset']}.pt"), data)
                tier.update(model=name, fine_tune=label, a_top1=a_top1, b_top1=b_top1)
                results.append(tier)
                s = tier["server"]
                print(f"{name} {label} q{tier['qp']} server: delta pull {s['delta_pull_bytes']} B, whole pull "
                      f"{s['whole_pull_bytes']} B, same SHA-256 {s['same_sha256']}, top-1 {s['top1']:.2f}", flush=True)
                print(f"{name} {label} q{tier['qp']}: B {tier['b_bytes']} B top-1 {tier['intra_top1']:.2f}; " +
                      "; ".join(f"delta({d['qp_offset']}) {d['bytes']} B top-1 {d['top1']:.2f} "
                                f"zstd-diff {d['zstd_diff_bytes']} B" for d in tier["deltas"]), flush=True)
    with open(results_path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(results_path + ".tmp", results_path)


if __name__ == "__main__":
    main()
