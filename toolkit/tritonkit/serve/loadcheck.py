"""Load check: does Triton load every model of a repository, and answer one request?

``verify`` proves a repository is what its lock says; it cannot prove Triton will load it (a
missing external data file the lock never knew about, a config Triton's own checks refuse, an
operator the runtime lacks). :func:`load_check` closes that gap: it starts a Triton on the
repository in explicit model-control mode with nothing loaded, loads each model through the
repository API (models before the ensembles that run them), sends each one request built from
its config (the first warm-up's data when it has one, else its inputs with variable dims as 1
and one batch row), and reports per model: loaded or not with Triton's own reason, and whether
the request was answered. Decoupled models (token streaming) are loaded but sent no request.

Example:
    >>> report = load_check(Path("dist/demo"))
    >>> [(m.name, m.ok, m.detail) for m in report.models]
    [('classifier', True, 'probabilities [1, 3]'), ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.build import pbtxt
from tritonkit.build.onnx_io import empty_dims
from tritonkit.errors import ServerError
from tritonkit.events import Event, Progress, emit
from tritonkit.serve.client import request_tensors
from tritonkit.serve.endpoints import Endpoints
from tritonkit.serve.models import repository_models
from tritonkit.serve.server import TritonServer
from tritonkit.spec import dtypes


@dataclass(frozen=True)
class ModelCheck:
    """What happened to one model: loaded, and (when it was sent one) whether it answered.

    ``detail`` is Triton's reason for a failure, else the outputs' names and shapes.
    """

    name: str
    loaded: bool
    answered: bool | None  # None: no request sent (not loaded, or decoupled)
    detail: str

    @property
    def ok(self) -> bool:
        return self.loaded and self.answered is not False


@dataclass(frozen=True)
class LoadReport:
    """Every model's :class:`ModelCheck`; ``ok`` only when each loaded and answered."""

    root: Path
    models: list[ModelCheck] = field(default_factory=list)
    log_file: Path | None = None

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.models)

    @property
    def failed(self) -> list[ModelCheck]:
        return [m for m in self.models if not m.ok]


def load_check(
    root: Path,
    *,
    triton_bin: str | Path | None = None,
    progress: Progress | None = None,
    timeout: float = 300.0,
    endpoints: Endpoints | None = None,
) -> LoadReport:
    """Load every model of ``root`` on a fresh Triton and send each one request: the one "does
    this repository load" path, for ``verify --load`` and a promotion's proof.

    Args:
        root: a built repository (verify it first: this checks loading, not contents).
        triton_bin: a ``tritonserver`` to use instead of the embedded one.
        endpoints: where the Triton listens (default: free loopback ports); a promotion passes
            the ones its journal recorded, so a recovery can find a server it left behind.
        progress: called with ``Event("load", model, "loaded" | "failed: …" | "answered" …)``.
        timeout: seconds to wait for the server to come up.

    Returns:
        The per-model report (the server is stopped before it returns).

    Raises:
        ServerError: when Triton itself does not start (no model is to blame).
    """
    import tritonclient.http as httpclient

    root = root.resolve()
    server = TritonServer(root, endpoints=endpoints or Endpoints.allocate(), triton_bin=triton_bin, models=[])
    server.start(timeout=timeout)
    checks: list[ModelCheck] = []
    try:
        client = httpclient.InferenceServerClient(
            server.endpoints.http_url.removeprefix("http://"), network_timeout=300
        )
        try:
            for name in repository_models(root):
                check = _check_one(server, client, name, root / name / "config.pbtxt")
                emit(progress, Event("load", name, "ok" if check.ok else f"failed: {check.detail}"))
                checks.append(check)
        finally:
            client.close()
    finally:
        server.stop()
    return LoadReport(root=root, models=checks, log_file=server.log_file)


def _check_one(server: TritonServer, client: object, name: str, config_path: Path) -> ModelCheck:
    try:
        server.models_api.load(name)
    except ServerError as exc:
        reason = exc.message.split("failed to load: ", 1)[-1]
        return ModelCheck(name, loaded=False, answered=None, detail=reason)
    config = pbtxt.parse(config_path.read_text())
    if config.model_transaction_policy.decoupled:
        return ModelCheck(name, loaded=True, answered=None, detail="decoupled (streams): loaded, no request sent")
    request = sample_request(config)
    if config.backend == "onnxruntime":  # an input traced empty (dims 0, served as -1) is sent empty
        model_file = config_path.parent / str(max(_versions(config_path.parent), default=1))
        model_file /= config.default_model_filename or "model.onnx"
        for input_name, dims in empty_dims(model_file, config.max_batch_size).items():
            if input_name in request:
                rows = request[input_name].shape[:1] if config.max_batch_size > 0 else ()
                request[input_name] = (
                    request[input_name].flat[:0].reshape(*rows, *[max(d, 1) if d else 0 for d in dims])
                )
    try:
        outputs = _infer(client, name, request)
    except _Refused as exc:
        return ModelCheck(name, loaded=True, answered=False, detail=str(exc))
    return ModelCheck(name, loaded=True, answered=True, detail=", ".join(f"{k} {v}" for k, v in outputs.items()))


def _versions(model_dir: Path) -> list[int]:
    return [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]


class _Refused(Exception):
    """Triton answered the check's request with an error."""


def _infer(client: object, model: str, request: dict[str, np.ndarray]) -> dict[str, list[int]]:
    from tritonclient.utils import InferenceServerException

    try:
        result = client.infer(model, request_tensors("http", request))  # type: ignore[attr-defined]
    except InferenceServerException as exc:
        raise _Refused(exc.message()) from exc
    return {out["name"]: [int(d) for d in out["shape"]] for out in result.get_response().get("outputs", [])}


def sample_request(config: pb.ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """One request for a model, built from its config (pure).

    The first ``model_warmup`` entry decides the data when the config has one (its dims,
    batch size and zero/random data: the request Triton itself warms up with); otherwise every
    non-optional input gets random data of its dtype with variable dims as 1 and, for a
    batching model, one row.

    Args:
        config: the model's config.
        seed: for the random data.

    Returns:
        ``input name -> array`` (BYTES inputs as object arrays of bytes).
    """
    rng = np.random.default_rng(seed)
    batched = config.max_batch_size > 0
    request: dict[str, np.ndarray] = {}
    if config.model_warmup:
        warmup = config.model_warmup[0]
        for name in sorted(warmup.inputs):
            sample = warmup.inputs[name]
            shape = ((max(1, warmup.batch_size),) if batched else ()) + tuple(int(d) for d in sample.dims)
            dtype = dtypes.from_config_type(pb.DataType.Name(sample.data_type))
            array = dtypes.random_array(dtype, shape, rng)
            request[name] = np.zeros_like(array) if sample.zero_data and dtype != "BYTES" else array
        return request
    for item in config.input:
        if item.optional:
            continue
        shape = ((1,) if batched else ()) + tuple(d if d > 0 else 1 for d in item.dims)
        request[item.name] = dtypes.random_array(dtypes.from_config_type(pb.DataType.Name(item.data_type)), shape, rng)
    return request


__all__ = ["LoadReport", "ModelCheck", "load_check", "sample_request"]
