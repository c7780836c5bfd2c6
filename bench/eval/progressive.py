#!/usr/bin/python3
"""Progressive delivery on the Fashion-MNIST reference models (issue: delta updates).

usage: progressive.py BUILD_DIR WORK_DIR RESULTS.json

For each reference model (trained and cached by fashion.py) weightcastd serves the ladder
q22,q27,q32,q37 with every tier and the refinements encoded ahead (warm), and the same checkpoint
as a second version whose coarse tier is a budget tier of q37's bytes (a QP per layer). Then, with the SDK's
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


def wait_ready(server, name, version, tiers, seconds=900):
    deadline = time.time() + seconds
    while time.time() < deadline:
        info = json.loads(server.run("describe", name, version, "--json"))
        states = {t["name"]: t["state"] for t in info["tiers"]}
        if all(states.get(t) == "READY" for t in tiers):
            return {t["name"]: t for t in info["tiers"]}
        if any(states.get(t) == "FAILED" for t in tiers):
            raise RuntimeError(f"{name}/{version}: a tier failed: {states}")
        time.sleep(0.5)
    raise RuntimeError(f"{name}/{version}: tiers not ready after {seconds} s")


def compare(server, root, name, version, coarse, final, data):
    """A direct and a progressive pull of FINAL at the rate limit, and a plain pull of COARSE."""
    spec, tag = f"{name}@{version}", f"{coarse}-{final}"
    direct_out, coarse_out, refined_out, plain_coarse = (os.path.join(root, f"{tag}-{k}.pt")
                                                         for k in ("direct", "coarse", "refined", "plain-coarse"))
    limit = ["--limit", str(LIMIT_MBIT)]
    direct = PULLED.search(server.run("pull", spec, "--tier", final, *limit, "-o", direct_out))
    text = server.run("pull", spec, "--tier", final, *limit, "--progressive", coarse, "--coarse-out", coarse_out,
                      "-o", refined_out)
    first, last = COARSE.search(text), PULLED.search(text)
    server.run("pull", spec, "--tier", coarse, "-o", plain_coarse)
    row = {"model": name, "coarse": coarse, "final": final, "refinement": last.group(1),
           "direct_bytes": int(direct.group(2)), "direct_seconds": float(direct.group(3)),
           "coarse_bytes": int(first.group(2)), "coarse_seconds": float(first.group(3)),
           "refined_bytes": int(last.group(2)), "refined_seconds": float(last.group(3)),
           "coarse_is_plain_pull": sha256(coarse_out) == sha256(plain_coarse)}
    for key, path in (("direct", direct_out), ("coarse", coarse_out), ("refined", refined_out)):
        row[f"{key}_top1"], _ = fashion.accuracy(name, path, data)
    print(f"{name} {coarse}->{final} at {LIMIT_MBIT} Mbit/s: direct {row['direct_bytes']} B {row['direct_seconds']:.2f} s "
          f"top-1 {row['direct_top1']:.2f}; coarse {row['coarse_bytes']} B {row['coarse_seconds']:.2f} s top-1 "
          f"{row['coarse_top1']:.2f}; refined {row['refined_bytes']} B {row['refined_seconds']:.2f} s top-1 "
          f"{row['refined_top1']:.2f}", flush=True)
    return row


def measure(build, work, name, path, policy_path, data):
    """PAIRS on the qNN ladder, then a budget tier of q37's bytes refined to q22 (another version
    of the same checkpoint, whose ladder holds that budget tier)."""
    root = os.path.join(work, "progressive", name)
    shutil.rmtree(root, ignore_errors=True)
    server = server_process.Weightcastd(build, os.path.join(root, "data"), "--workers", "2")
    try:
        policy = ["--policy", policy_path] if policy_path else []
        server.run("register", name, "v1", path, "--ladder", "q22,q27,q32,q37", *policy)
        tiers = sorted({t for pair in PAIRS for t in pair}) + [f"{c}+{f}" for c, f in PAIRS]
        server.run("warm", name, "v1", *tiers)
        budget = server_process.budget_tier(wait_ready(server, name, 'v1', tiers)['q37']['bytes'])
        server.run("register", name, "budget", path, "--ladder", f"{budget},q22", *policy)
        server.run("warm", name, "budget", budget, "q22", f"{budget}+q22")
        wait_ready(server, name, "budget", [budget, "q22", f"{budget}+q22"])
        rows = [compare(server, root, name, "v1", coarse, final, data) for coarse, final in PAIRS]
        return rows + [compare(server, root, name, "budget", budget, "q22", data)]
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
