#!/usr/bin/python3
"""The Python SDK's first minutes: start weightcastd, register a PyTorch model, pull it by
bytes at once (the server encodes the ladder on registration; the pull waits for the sizes),
load it into the model and compare outputs, show the tiers and an error.

usage: PYTHONPATH=build/python /usr/bin/python3 examples/quickstart.py [BUILD_DIR]
"""
import os
import subprocess
import sys
import tempfile

import torch

import weightcast


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    with tempfile.TemporaryDirectory(prefix="weightcast-quickstart-") as work:
        server = subprocess.Popen([os.path.join(build, "server/weightcastd"), "--listen", "127.0.0.1:0",
                                   "--metrics", "", "--data-dir", os.path.join(work, "data")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            address = None
            for line in server.stdout:  # bounded: the server prints this line once serving
                if "listening on " in line:
                    address = line.split("listening on ")[1].strip()
                    break
            if address is None:
                sys.exit("weightcastd did not start")
            client = weightcast.Client(address)

            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
            info = client.register("mlp", "v1", model)  # a state_dict or a path works too
            print(f"registered {info.model}/{info.version}: {info.float_weights} weights, "
                  f"ladder {', '.join(t.name for t in info.tiers)}")

            budget = 200_000
            state = client.pull("mlp", max_bytes=budget)  # waits for the tiers' sizes, then pulls
            print(f"pulled tier {state.result.tier}: {state.result.bytes} bytes <= {budget}")
            pulled = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
            pulled.load_state_dict(state)
            x = torch.randn(64, 256)
            with torch.no_grad():
                error = (pulled(x) - model(x)).abs().max().item()
            print(f"largest output difference against the float model: {error:.2e}")

            for tier in client.describe("mlp").tiers:
                print(f"  {tier.name:>9} {tier.state:>11} {tier.bytes:>9} bytes "
                      f"{tier.bits_per_weight:5.2f} bits/weight  worst SQNR {tier.worst_sqnr_db:6.2f} dB")
            try:
                client.pull("mlp", tier="q99")
            except weightcast.NotFound as e:
                print(f"errors are exceptions: {type(e).__name__}: {e.message}")
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
