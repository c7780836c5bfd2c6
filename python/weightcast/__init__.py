"""weightcast for Python: register, describe and pull models from a weightcastd server.

    import weightcast
    client = weightcast.Client("127.0.0.1:50051")
    client.register("hres", "v1", "hres.pt")
    state = client.pull("hres", max_bytes=5_000_000)   # dict[str, torch.Tensor], float32
    model.load_state_dict(state)

The work is done by the C++ SDK (client/sdk) through the _weightcast extension module: the
stream, the HEVC decoding on a thread pool (with the GIL released), SHA-256 checks, resuming
after a dropped connection. Tensors are made here with torch.frombuffer over the SDK's buffers
(no copy). Failures raise the exceptions of weightcast.errors, with the server's message.
"""
import dataclasses
import datetime
import os
import sys
import tempfile
from typing import Optional

import torch

from . import _weightcast
from .errors import (Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded, Error,  # noqa: F401
                     FailedPrecondition, Internal, InvalidArgument, NotFound, OutOfRange, PermissionDenied,
                     ResourceExhausted, Unauthenticated, Unavailable, Unimplemented)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
           "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


@dataclasses.dataclass
class Accuracy:
    """What the server measured on the version's evaluation bundle: top-1/top-2 accuracy (percent;
    0 when the bundle has no labels) and the mean cosine of the outputs with the float model's
    (None from servers before it was measured)."""
    top1: float
    top2: float
    examples: int
    labelled: bool = True
    output_cosine: Optional[float] = None


@dataclasses.dataclass
class Layer:
    name: str
    codec: str  # HEVC, ZSTD_INT8, FLOAT32, ...
    bytes: int
    bits_per_weight: float
    sqnr_db: float
    qp: int
    quant_scheme: str


@dataclasses.dataclass
class Tier:
    name: str
    state: str  # NOT_ENCODED | ENCODING | READY | FAILED
    bytes: int  # READY tiers only
    bits_per_weight: float
    worst_sqnr_db: float  # over every layer
    worst_layer: str
    accuracy: Accuracy | None  # None: no evaluation bundle, or not measured yet
    error: str  # FAILED tiers; READY tiers whose accuracy could not be measured: why
    layers: list  # of Layer; READY tiers only


@dataclasses.dataclass
class ModelInfo:
    model: str
    version: str
    description: str
    layer_policy: str
    source_bytes: int
    float_weights: int
    tensors: int
    has_eval_bundle: bool
    reference_accuracy: Accuracy | None
    base_version: str
    tiers: list  # of Tier

    def tier(self, name):
        """The tier called `name` (KeyError if the version has none)."""
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)


@dataclasses.dataclass
class Progress:
    """Where a pull is: before the stream, `tiers_pending` tiers still being encoded or measured
    (a selection by bytes, SQNR, accuracy or link speed waits for them); then bytes and layers."""
    bytes_received: int
    total_bytes: int
    layers_decoded: int
    layers_total: int
    decode_backlog: int
    seconds: float
    reconnects: int
    tiers_pending: int


@dataclasses.dataclass
class PullResult:
    version: str
    tier: str
    bytes: int
    seconds: float
    reconnects: int
    layers_refetched: int
    delta_layers: int
    delta_fallback: bool
    coarse_tier: str  # progressive pulls: the tier handed over first
    http_layers: int  # layers whose bytes came over HTTP (the manifest's blob URL)
    http_fallback: bool  # an HTTP download failed: the rest came over gRPC
    warnings: list  # what went wrong and was worked around, one sentence each


class StateDict(dict):
    """The pulled tensors by name (what `load_state_dict` takes); `.result` says what was pulled."""
    result: PullResult


def _accuracy(d):
    return Accuracy(**d) if d else None


def _model_info(d):
    tiers = [Tier(**{**t, "accuracy": _accuracy(t["accuracy"]), "layers": [Layer(**l) for l in t["layers"]]})
             for t in d["tiers"]]
    return ModelInfo(**{**d, "reference_accuracy": _accuracy(d["reference_accuracy"]), "tiers": tiers})


def _seconds(value):
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return float(value or 0)


def _tensor(dtype, shape, buffer):
    torch_dtype = _DTYPES[dtype]
    if len(buffer) == 0:
        return torch.empty(shape, dtype=torch_dtype)
    return torch.frombuffer(buffer, dtype=torch_dtype).reshape(shape)


class _TqdmProgress:
    """Draws a pull's progress with tqdm (Debian's python3-tqdm) when it is installed."""

    def __init__(self, tqdm, label):
        self.tqdm, self.label, self.bar, self.waiting = tqdm, label, None, None

    def __call__(self, p):
        if p.tiers_pending > 0:
            if self.waiting is None:
                self.waiting = self.tqdm(total=None, desc=f"{self.label}: waiting for tier sizes",
                                         unit="poll", leave=False)
            self.waiting.set_postfix_str(f"{p.tiers_pending} tier(s) encoding")
            self.waiting.update(1)
            return
        if self.waiting is not None:
            self.waiting.close()
            self.waiting = None
        if self.bar is None and p.total_bytes:
            self.bar = self.tqdm(total=p.total_bytes, desc=self.label, unit="B", unit_scale=True)
        if self.bar is not None:
            self.bar.update(p.bytes_received - self.bar.n)
            self.bar.set_postfix_str(f"decoded {p.layers_decoded}/{p.layers_total}")

    def close(self, done):
        if self.waiting is not None:
            self.waiting.close()
        if self.bar is not None:
            if done:
                self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()


def _progress_sink(progress, label):
    """(callback for the SDK, closer): `progress` True/None (tqdm when installed; None only on a
    terminal), False, or a callable taking a Progress."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None, None
    if callable(progress) and progress is not True:
        return (lambda d: progress(Progress(**d))), None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, None
    bar = _TqdmProgress(tqdm, label)
    return (lambda d: bar(Progress(**d))), bar.close


class Client:
    """A connection to weightcastd. Thread-safe: calls may run concurrently from several threads
    (each releases the GIL while it waits).

    address: "host:port". token: a bearer token (servers started with --tokens). tls: None, or
    a dict of PEM strings or file paths: {"ca": ..., "cert": ..., "key": ...} (cert and key:
    mutual TLS). timeout: seconds each call may take (default 30 minutes), which also bounds how
    long a pull waits for tier sizes.
    """

    def __init__(self, address="127.0.0.1:50051", token=None, tls=None, timeout=None):
        pem = {}
        for key, value in (tls or {}).items():
            if key not in ("ca", "cert", "key"):
                raise InvalidArgument(f"tls takes 'ca', 'cert' and 'key', not {key!r}")
            if value and "-----BEGIN" not in value:
                with open(value) as f:
                    value = f.read()
            pem[key] = value or ""
        if tls is not None and not pem.get("ca"):
            raise InvalidArgument("tls needs 'ca': the root certificate(s) to trust")
        self._client = _weightcast.Client(address, token or "", pem.get("ca", ""), pem.get("cert", ""),
                                          pem.get("key", ""), _seconds(timeout))
        self.address = address

    def list(self):
        """{model: [versions]}."""
        return {name: versions for name, versions in self._client.list()}

    def describe(self, model, version=None):
        """The version's ModelInfo: its tiers with bytes, bits/weight, SQNR and accuracy."""
        return _model_info(self._client.describe(model, version or "latest"))

    def register(self, model, version, path, *, ladder=None, base_version=None, eval_module=None,
                 eval_data=None, description="", policy=None):
        """Uploads a checkpoint and registers it as model/version; returns its ModelInfo.

        path: a .pt, TorchScript or .safetensors file, or a state_dict / nn.Module (saved with
        torch.save to a temporary file first). ladder: tier names, "q22,q27,q37" or a list.
        eval_module and eval_data (both or neither): a TorchScript module (a path or a
        torch.jit.ScriptModule) and a file of "inputs" and, for a classifier, "labels" (a path or
        such a dict); the server then measures every tier's top-1 (with labels) and the cosine of
        its outputs with the float model's. base_version: code deltas against it.
        policy: a layer policy, JSON text or a path to a .json file.
        """
        if isinstance(ladder, (list, tuple)):
            ladder = ",".join(ladder)
        if policy and os.path.exists(policy):
            with open(policy) as f:
                policy = f.read()
        with tempfile.TemporaryDirectory(prefix="weightcast-register-") as scratch:
            if isinstance(path, torch.nn.Module):
                path = path.state_dict()
            if isinstance(path, dict):
                torch.save(path, os.path.join(scratch, "checkpoint.pt"))
                path = os.path.join(scratch, "checkpoint.pt")
            if isinstance(eval_module, torch.jit.ScriptModule):
                eval_module.save(os.path.join(scratch, "module.pt"))
                eval_module = os.path.join(scratch, "module.pt")
            if isinstance(eval_data, dict):
                torch.save(eval_data, os.path.join(scratch, "eval_data.pt"))
                eval_data = os.path.join(scratch, "eval_data.pt")
            return _model_info(self._client.register(
                model, version, os.fspath(path), ladder or "", description, policy or "",
                os.fspath(eval_module or ""), os.fspath(eval_data or ""), base_version or ""))

    def pull(self, model, version=None, *, tier=None, max_bytes=None, min_sqnr=None,
             max_accuracy_drop=None, bandwidth=None, within=None, int8=False, path=None,
             base_dir=None, progressive=None, coarse_path=None, limit=None, decode_threads=0,
             max_reconnects=8, progress=None, min_output_cosine=None):
        """Pulls a tier of model/version (default: the latest) and rebuilds the model.

        Which tier: `tier` by name; else the largest that meets every bound given: `max_bytes`,
        `min_sqnr` (dB, every layer), `bandwidth` (bits per second) with `within` (seconds or a
        timedelta): what arrives in time; or with `max_accuracy_drop` (points of top-1) the
        smallest within that of the original, with `min_output_cosine` (-1..1) the smallest whose
        outputs keep that mean cosine with the float model's (a bundle with or without labels).
        None of them: the ladder's first tier. A bound
        that comes before the server knows the sizes (a version just registered) waits for them.

        Returns a StateDict {name: torch.Tensor} in checkpoint order that load_state_dict
        accepts: float32 (float16/bfloat16 as stored), or with int8=True the int8 tensors and
        "<name>.__scale__" (float32; and "<name>.__zero_point__" for asymmetric schemes), w =
        scale * (q - zero_point). With `path` (.pt or .safetensors) the model is written there
        instead and a PullResult is returned.
        base_dir: keep pulled layers there for delta pulls of later versions. progressive: a
        coarse tier (qNN or budget-N) sent first (written to coarse_path if given), then a
        refinement to the selected tier. limit: bytes per second to read at most.
        progress: None (tqdm on a terminal, when installed), True (tqdm), False, or a callable
        taking a Progress. Ctrl-C cancels the pull (KeyboardInterrupt).
        Errors: NotFound (no such model, version or fitting tier), Unavailable (server gone
        after max_reconnects), DataLoss (a layer failed verification twice), ... with the
        server's message.
        """
        callback, close = _progress_sink(progress, f"{model}@{version or 'latest'}")
        done = False
        try:
            result, tensors = self._client.pull(
                model, version or "latest", tier or "", int(max_bytes or 0), float(min_sqnr or 0),
                -1.0 if max_accuracy_drop is None else float(max_accuracy_drop), float(bandwidth or 0),
                _seconds(within), bool(int8), os.fspath(path or ""), path is None, os.fspath(base_dir or ""),
                progressive or "", os.fspath(coarse_path or ""), float(limit or 0), int(decode_threads),
                int(max_reconnects), callback,
                None if min_output_cosine is None else float(min_output_cosine))
            done = True
        finally:
            if close:
                close(done)
        result = PullResult(**result)
        if path is not None:
            return result
        state = StateDict((name, _tensor(dtype, shape, buffer)) for name, dtype, shape, buffer in tensors)
        state.result = result
        return state

    def warm(self, model, version=None, tiers=()):
        """Starts encoding `tiers` (default: the whole ladder) in the background."""
        self._client.warm(model, version or "latest", list(tiers))

    def delete(self, model, version):
        self._client.delete(model, version)

    def health(self, timeout=5.0):
        """True when the server is SERVING (False while it drains); Unavailable if unreachable."""
        return self._client.health(_seconds(timeout))
