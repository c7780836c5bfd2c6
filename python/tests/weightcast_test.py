"""The Python SDK against the real weightcastd on 127.0.0.1 (started here, free ports), with
checkpoints PyTorch writes here or in the ctest fixture (tests/fixtures/make_checkpoints.py).
Run by ctest (python.sdk) with PYTHONPATH=build/python, WEIGHTCAST_BUILD_DIR and
WEIGHTCAST_FIXTURE_DIR set."""
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

import weightcast

BUILD = os.environ.get("WEIGHTCAST_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
FIXTURES = os.environ.get("WEIGHTCAST_FIXTURE_DIR", os.path.join(BUILD, "fixtures"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures"))
import server_process  # noqa: E402


class Server:
    """weightcastd with its output drained (and kept) by a thread, so it never blocks on a pipe."""

    def __init__(self, data_dir, *flags):
        self.process = server_process.Weightcastd(BUILD, data_dir, "--preset", "ultrafast", *flags)
        self.address, self.output = self.process.address, []
        self.drain = threading.Thread(target=lambda: self.output.extend(self.process.proc.stdout))
        self.drain.start()

    def cli(self, *args, check=True):
        return subprocess.run(self.process.cli + list(args), check=check, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=120)

    def kill(self):
        self.process.proc.kill()
        self.process.proc.wait(timeout=30)
        self.drain.join(timeout=30)

    def stop(self):
        if self.process.proc.poll() is None:
            self.process.stop()
        self.drain.join(timeout=30)


def small_net(seed, width=256):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(128, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                               torch.nn.ReLU(), torch.nn.Linear(width, 10))


def selected_by_bytes(info, budget):
    """What the SDK's SelectTier must pick once every size is known: the largest READY tier within."""
    ready = [t for t in info.tiers if t.state == "READY" and "+" not in t.name and t.bytes <= budget]
    return max(ready, key=lambda t: t.bytes).name


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("data")), "--encode-on-register", "--workers", "2")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return weightcast.Client(server.address, timeout=120)


def accuracy(module, state, data):
    module.load_state_dict(state)
    with torch.no_grad():
        best = module(data["inputs"]).topk(2, 1).indices
    labels = data["labels"][:, None]
    return ((best[:, :1] == labels).any(1).double().mean().item() * 100,
            (best == labels).any(1).double().mean().item() * 100)


def test_register_then_pull_by_bytes_waits_for_the_sizes_on_a_fresh_server(tmp_path):
    # The sequence through the CLI: register, then pull by bytes at once. The server
    # starts encoding the ladder on register; the pull waits for the sizes instead of failing.
    # (The test fixture turns encode-on-register off unless asked: the server's default is on.)
    server = Server(str(tmp_path / "data"), "--encode-on-register", "--workers", "2")
    try:
        path = str(tmp_path / "hres.pt")
        torch.save(small_net(1, width=768).state_dict(), path)
        server.cli("register", "hres", "v1", path)
        states = [t.state for t in weightcast.Client(server.address).describe("hres").tiers]
        assert "NOT_ENCODED" not in states, states  # encoding started on register
        budget = os.path.getsize(path) // 3  # below float and lossless int8 sizes
        pulled = server.cli("pull", "hres", "--max-bytes", str(budget), "-o", str(tmp_path / "out.pt"))
        info = weightcast.Client(server.address).describe("hres")
        tier = selected_by_bytes(info, budget)
        assert tier in pulled.stdout, pulled.stdout
        if "ENCODING" in states:  # the pull came before the sizes: it said it waited
            assert "waiting for the server to encode and measure" in pulled.stdout, pulled.stdout
        state = torch.load(str(tmp_path / "out.pt"))
        small_net(2, width=768).load_state_dict(state)
    finally:
        server.stop()


def test_register_from_python_and_pull_by_bytes_at_once(client, tmp_path):
    net = small_net(3)
    seen = []
    info = client.register("py", "v1", net, ladder=["lossless", "q27", "q37"], description="from python")
    assert (info.model, info.version, info.description) == ("py", "v1", "from python")
    assert [t.name for t in info.tiers] == ["lossless", "q27", "q37"]
    budget = sum(p.numel() for p in net.parameters())  # about one byte a weight: not lossless
    state = client.pull("py", max_bytes=budget, progress=lambda p: seen.append(p))
    assert state.result.tier == selected_by_bytes(client.describe("py", "v1"), budget)
    assert state.result.bytes <= budget
    assert list(state) == list(net.state_dict())
    assert all(t.dtype == torch.float32 for t in state.values())
    net.load_state_dict(state)
    assert seen and seen[-1].bytes_received == state.result.bytes
    assert "py" in client.list() and client.list()["py"] == ["v1"]


def test_pull_into_a_model_and_measure_its_accuracy_in_process(client, tmp_path):
    info = client.register("cnn", "v1", os.path.join(FIXTURES, "cnn_bn.pt"), ladder="lossless,q27,q37,q45",
                           eval_module=os.path.join(FIXTURES, "script.pt"),
                           eval_data=os.path.join(FIXTURES, "eval_data.pt"))
    assert info.has_eval_bundle and info.reference_accuracy is not None
    module = torch.jit.load(os.path.join(FIXTURES, "script.pt"))
    data = torch.load(os.path.join(FIXTURES, "eval_data.pt"))
    # Within 1 point of top-1: waits until the server has measured every tier.
    state = client.pull("cnn", max_accuracy_drop=1.0, progress=False)
    described = client.describe("cnn")
    tier = described.tier(state.result.tier)
    assert tier.accuracy is not None
    assert tier.accuracy.top1 >= described.reference_accuracy.top1 - 1.0
    mine = accuracy(module, state, data)
    assert mine == (tier.accuracy.top1, tier.accuracy.top2)
    assert tier.accuracy.labelled and described.reference_accuracy.output_cosine == 1.0
    assert 0 < tier.accuracy.output_cosine <= 1.0 + 1e-9, tier.accuracy
    # The smallest tier whose outputs keep that cosine with the float model's.
    floor = tier.accuracy.output_cosine
    by_cosine = client.pull("cnn", min_output_cosine=floor, progress=False)
    chosen = described.tier(by_cosine.result.tier)
    assert chosen.accuracy.output_cosine >= floor
    assert all(t.bytes >= chosen.bytes for t in described.tiers
               if t.accuracy and t.accuracy.output_cosine is not None and t.accuracy.output_cosine >= floor)
    # int8 with scales: dequantized, the same float model.
    q = client.pull("cnn", tier=state.result.tier, int8=True, progress=False)
    for name, value in state.items():
        if f"{name}.__scale__" in q:
            assert q[name].dtype == torch.int8
            scale = q[f"{name}.__scale__"]
            scale = scale.reshape([-1] + [1] * (q[name].dim() - 1)) if scale.numel() > 1 else scale
            assert torch.allclose(q[name].float() * scale, value)
        else:
            assert torch.equal(q[name], value), name


def test_pull_to_a_path_returns_the_result(client, tmp_path):
    client.register("file", "v1", small_net(4), ladder="q27")
    result = client.pull("file", tier="q27", path=tmp_path / "m.safetensors", progress=True)
    assert isinstance(result, weightcast.PullResult) and result.tier == "q27"
    assert os.path.getsize(tmp_path / "m.safetensors") > 0


def test_errors_are_exceptions_with_the_servers_message(client, tmp_path):
    with pytest.raises(weightcast.NotFound, match="nosuchmodel"):
        client.describe("nosuchmodel")
    with pytest.raises(LookupError):
        client.pull("nosuchmodel", progress=False)
    client.register("err", "v1", small_net(5), ladder="q27")
    with pytest.raises(weightcast.AlreadyExists, match="v1"):
        client.register("err", "v1", small_net(5))
    with pytest.raises(weightcast.InvalidArgument, match="q99"):  # no such QP
        client.pull("err", tier="q99", progress=False)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(weightcast.InvalidArgument) as error:
        client.register("err", "v2", bad)
    assert error.value.code == "INVALID_ARGUMENT" and error.value.message
    with pytest.raises(weightcast.FailedPrecondition, match="evaluation bundle"):
        client.pull("err", max_accuracy_drop=1, progress=False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = weightcast.Client(f"127.0.0.1:{s.getsockname()[1]}", timeout=2)
    with pytest.raises(weightcast.Unavailable):
        dead.list()


def test_an_exception_in_the_progress_callback_or_ctrl_c_cancels_the_pull(client):
    client.register("cancel", "v1", small_net(7, width=1024), ladder="lossless")
    total = client.pull("cancel", progress=False).result.bytes

    class Stop(Exception):
        pass

    def stop(p):
        if p.bytes_received > 0:
            raise Stop()

    start = time.monotonic()
    with pytest.raises(Stop):
        client.pull("cancel", limit=total / 5.0, progress=stop)  # 5 s if not cancelled
    # Ctrl-C: the signal is checked while the pull runs (the GIL released in between).
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        client.pull("cancel", limit=total / 5.0, progress=False)
    timer.join()
    assert time.monotonic() - start < 5


def test_tls_and_tokens(tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{role} {hashlib.sha256(token.encode()).hexdigest()} {role}\n"
                              for role, token in (("admin", "admin-secret"), ("device", "device-secret"))))
    server = Server(str(tmp_path / "data"), "--tls-cert", cert, "--tls-key", key, "--tokens", str(tokens),
                    "--grace-seconds", "1")
    try:
        admin = weightcast.Client(server.address, token="admin-secret", tls={"ca": cert})
        admin.register("tls", "v1", small_net(8), ladder="q27")
        device = weightcast.Client(server.address, token="device-secret", tls={"ca": cert})
        assert list(device.pull("tls", tier="q27", progress=False)) == list(small_net(8).state_dict())
        with pytest.raises(weightcast.PermissionDenied):
            device.register("tls", "v2", small_net(8))
        with pytest.raises(weightcast.Unauthenticated):
            weightcast.Client(server.address, token="wrong", tls={"ca": cert}).describe("tls")
    finally:
        server.stop()


def test_a_pull_interrupted_by_a_server_restart_resumes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = str(tmp_path / "data")
    server = Server(data, "--listen", f"127.0.0.1:{port}", "--grace-seconds", "1")
    try:
        client = weightcast.Client(server.address, timeout=60)
        client.register("big", "v1", small_net(6, width=1024), ladder="lossless")
        expected = client.pull("big", progress=False)
        total = expected.result.bytes
        started, outcome = threading.Event(), {}

        def on_progress(p):
            if p.bytes_received > 0:
                started.set()

        def pull():
            try:
                outcome["state"] = client.pull("big", limit=total / 2.0, progress=on_progress)  # ~2 s
            except Exception as e:  # noqa: BLE001 (reported below)
                outcome["error"] = e

        puller = threading.Thread(target=pull)
        puller.start()  # the pull releases the GIL: this thread goes on
        assert started.wait(timeout=30)
        server.kill()
        server = Server(data, "--listen", f"127.0.0.1:{port}", "--grace-seconds", "1")
        puller.join(timeout=90)
        assert not puller.is_alive()
        assert "error" not in outcome, outcome
        state = outcome["state"]
        assert state.result.reconnects >= 1
        assert list(state) == list(expected)
        assert all(torch.equal(state[k], expected[k]) for k in expected)
    finally:
        server.stop()
