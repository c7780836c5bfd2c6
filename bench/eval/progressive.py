#!/usr/bin/python3
"""Progressive delivery on the Fashion-MNIST reference models (issue: delta updates).

usage: progressive.py BUILD_DIR WORK_DIR RESULTS.json

For each reference model (trained and cached by fashion.py) weightcastd serves the ladder
q22,q27,q32,q37 with every tier and the refinements encoded ahead (warm). Then, with the SDK's
rate limit at 2 Mbit/s (`weightcast pull --limit 2`): the final tier pulled directly, and the
same tier pulled progressively (`--progressive COARSE --coarse-out`): the coarse tier arrives
first and is written as soon as it is verified, then the refinement (P pictures on the coarse
pictures, tier COARSE+FINAL). Bytes and seconds are what the CLI reports (packed layer bytes;
wall time from the start of the pull, decode and file writes included); top-1 is measured in
PyTorch on the 10,000 test images for each file. The coarse file is checked to be byte-identical
to a plain pull of the coarse tier.
"""
import hashlib
import json
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures"))
import delta  # noqa: E402
import fashion  # noqa: E402
import server_process  # noqa: E402

LIMIT_MBIT = 2
PAIRS = [("q37", "q22"), ("q32", "q22"), ("q37", "q27")]
PULLED = re.compile(r"pulled \S+ tier (\S+): (\d+) bytes in ([\d.]+) s")
COARSE = re.compile(r"coarse model \(tier (\S+)\) usable after (\d+) bytes in ([\d.]+) s")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def wait_ready(server, name, tiers, seconds=900):
    deadline = time.time() + seconds
    while time.time() < deadline:
        states = {t["name"]: t["state"] for t in json.loads(server.run("describe", name, "v1", "--json"))["tiers"]}
        if all(states.get(t) == "READY" for t in tiers):
            return
        if any(states.get(t) == "FAILED" for t in tiers):
            raise RuntimeError(f"{name}: a tier failed: {states}")
        time.sleep(0.5)
    raise RuntimeError(f"{name}: tiers not ready after {seconds} s")


def measure(build, work, name, path, policy_path, data):
    root = os.path.join(work, "progressive", name)
    shutil.rmtree(root, ignore_errors=True)
    server = server_process.Weightcastd(build, os.path.join(root, "data"), "--workers", "2")
    rows = []
    try:
        policy = ["--policy", policy_path] if policy_path else []
        server.run("register", name, "v1", path, "--ladder", "q22,q27,q32,q37", *policy)
        tiers = sorted({t for pair in PAIRS for t in pair}) + [f"{c}+{f}" for c, f in PAIRS]
        server.run("warm", name, "v1", *tiers)
        wait_ready(server, name, tiers)
        for coarse, final in PAIRS:
            tag = f"{coarse}-{final}"
            direct_out, coarse_out, refined_out = (os.path.join(root, f"{tag}-{k}.pt") for k in ("direct", "coarse", "refined"))
            plain_coarse = os.path.join(root, f"{tag}-plain-coarse.pt")
            direct = PULLED.search(server.run("pull", f"{name}@v1", "--tier", final, "--limit", str(LIMIT_MBIT),
                                              "-o", direct_out))
            text = server.run("pull", f"{name}@v1", "--tier", final, "--limit", str(LIMIT_MBIT), "--progressive", coarse,
                              "--coarse-out", coarse_out, "-o", refined_out)
            first, last = COARSE.search(text), PULLED.search(text)
            server.run("pull", f"{name}@v1", "--tier", coarse, "-o", plain_coarse)
            row = {"model": name, "coarse": coarse, "final": final, "refinement": last.group(1),
                   "direct_bytes": int(direct.group(2)), "direct_seconds": float(direct.group(3)),
                   "coarse_bytes": int(first.group(2)), "coarse_seconds": float(first.group(3)),
                   "refined_bytes": int(last.group(2)), "refined_seconds": float(last.group(3)),
                   "coarse_is_plain_pull": sha256(coarse_out) == sha256(plain_coarse)}
            row["direct_top1"], _ = fashion.accuracy(name, direct_out, data)
            row["coarse_top1"], _ = fashion.accuracy(name, coarse_out, data)
            row["refined_top1"], _ = fashion.accuracy(name, refined_out, data)
            print(f"{name} {coarse}->{final} at {LIMIT_MBIT} Mbit/s: direct {row['direct_bytes']} B {row['direct_seconds']:.2f} s "
                  f"top-1 {row['direct_top1']:.2f}; coarse {row['coarse_bytes']} B {row['coarse_seconds']:.2f} s top-1 "
                  f"{row['coarse_top1']:.2f}; refined {row['refined_bytes']} B {row['refined_seconds']:.2f} s top-1 "
                  f"{row['refined_top1']:.2f}", flush=True)
            rows.append(row)
        return rows
    finally:
        server.stop()


def main():
    build, work, results_path, data = delta.parse_args(__doc__)
    rows = []
    for name in delta.POLICIES:
        path = os.path.join(work, "models", f"{name}.pt")
        fashion.train(name, path)
        rows += measure(build, work, name, path, delta.policy_file(work, "progressive", name), data)
    with open(results_path + ".tmp", "w") as f:
        json.dump({"limit_mbit": LIMIT_MBIT, "rows": rows}, f, indent=1)
    os.replace(results_path + ".tmp", results_path)


if __name__ == "__main__":
    main()
