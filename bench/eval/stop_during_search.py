#!/usr/bin/python3
"""How long weightcastd takes to stop on SIGTERM while an acc-X search runs.

usage: stop_during_search.py WORK_DIR BUILD_DIR [BUILD_DIR ...] [--delay S] [--rounds N]

Per round and build (builds alternate, so that a loaded machine loads each alike): trains or
reuses res_cnn (WORK_DIR/models, as accuracy_tiers.py), starts weightcastd on a fresh data
directory, registers it with its evaluation bundle and an acc-0.5 tier, asks for the tier (the
search starts), sends SIGTERM after --delay seconds (default 90: inside the search's candidate
evaluations) and records the seconds until the process exits (at most 300). Prints one JSON line
per run.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evaluate  # noqa: E402
import fashion  # noqa: E402


def stop_seconds(build, work, delay):
    server = evaluate.Server(build, os.path.join(work, "server-stop"), "--no-column-weighting")
    evaluate.register(server, work, "res_cnn", "acc", ["acc-0.5"], evaluate.PICTURE_CONVS)
    pull = server.cli + ["pull", "res_cnn@acc", "--tier", "acc-0.5", "-o", os.devnull]
    threading.Thread(target=lambda: subprocess.run(pull, capture_output=True), daemon=True).start()
    time.sleep(delay)
    if server.proc.poll() is not None:
        raise RuntimeError("weightcastd exited before the signal")
    start = time.time()
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        return None, server.proc.returncode
    return time.time() - start, server.proc.returncode


def main():
    args = sys.argv[1:]
    delay, rounds = 90.0, 1
    while "--delay" in args or "--rounds" in args:
        for flag in ("--delay", "--rounds"):
            if flag in args:
                i = args.index(flag)
                value = args[i + 1]
                delay = float(value) if flag == "--delay" else delay
                rounds = int(value) if flag == "--rounds" else rounds
                del args[i:i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    work, builds = args[0], args[1:]
    os.makedirs(os.path.join(work, "models"), exist_ok=True)
    state = os.path.join(work, "models", "res_cnn.pt")
    fashion.train("res_cnn", state)
    module = os.path.join(work, "models", "res_cnn.module.pt")
    if not os.path.exists(module):
        fashion.export("res_cnn", state, module, os.path.join(work, "models", "test_data.pt"))
    for round_ in range(rounds):
        for build in builds:
            seconds, code = stop_seconds(build, work, delay)
            print(json.dumps({"build": build, "round": round_, "delay_s": delay,
                              "seconds_to_exit": seconds, "exit_code": code}), flush=True)


if __name__ == "__main__":
    main()
