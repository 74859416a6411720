"""Talk to a running Triton with tritonclient: one request, inputs from files or generated.

Example:
    >>> infer("classifier", {"features": Path("x.npy")})
    {'logits': array([[...]], dtype=float32)}
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.errors import ServerError, UsageError, did_you_mean
from tritonkit.spec import dtypes


@dataclass(frozen=True)
class ModelInfo:
    """What a running server says about one model: its metadata and config, as dicts."""

    metadata: dict[str, Any]
    config: dict[str, Any]

    def input_shapes(self, batch_size: int = 1) -> dict[str, tuple[list[int], str]]:
        """``name -> (shape, datatype)`` of one request; variable dims become 1."""
        batching = int(self.config.get("max_batch_size", 0)) > 0
        shapes = {}
        for spec in self.metadata["inputs"]:
            dims = [int(d) for d in spec["shape"]]
            if batching:
                dims[0] = batch_size
            shapes[spec["name"]] = ([d if d > 0 else 1 for d in dims], spec["datatype"])
        return shapes


def default_address(protocol: str) -> str:
    """``127.0.0.1:8001`` for gRPC, ``127.0.0.1:8000`` for HTTP."""
    return "127.0.0.1:8001" if protocol == "grpc" else "127.0.0.1:8000"


def connect(address: str, protocol: str) -> Any:
    """A tritonclient ``InferenceServerClient`` for ``protocol`` (``grpc`` or ``http``).

    Raises:
        UsageError: ``address`` is not ``HOST:PORT``.
    """
    check_address(address)
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(address)
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(address)


def check_address(address: str) -> None:
    """``HOST:PORT`` (``[::1]:8000`` for IPv6), or a UsageError saying so."""
    try:
        parts = urllib.parse.urlsplit(f"//{address}")
        valid = bool(parts.hostname) and parts.port is not None and not parts.path and "@" not in address
    except ValueError:
        valid = False
    if not valid:
        raise UsageError(f"'{address}' is not a HOST:PORT address", hint="e.g. 127.0.0.1:8000 (IPv6: [::1]:8000)")


def model_info(client: Any, model: str, address: str, protocol: str) -> ModelInfo:
    """Metadata and config of a live, ready model.

    Raises:
        ServerError: unreachable server, unknown model (with a suggestion) or model not ready.
    """
    from tritonclient.utils import InferenceServerException

    try:
        live = client.is_server_live()
    except Exception as exc:
        raise ServerError(
            f"cannot reach Triton at {address} ({protocol}): {exc}", hint="start one with 'tritonkit serve'"
        ) from exc
    if not live:
        raise ServerError(f"Triton at {address} is not live", hint="check 'tritonkit serve' output")
    try:
        metadata = _as_dict(client.get_model_metadata(model))
        config = _as_dict(client.get_model_config(model))
    except InferenceServerException as exc:
        index = [_as_dict(m) for m in _index(client)]
        names = [m.get("name", "") for m in index]
        if model in names:
            entry = next(m for m in index if m.get("name") == model)
            state = entry.get("state") or "not loaded"
            reason = f": {entry['reason']}" if entry.get("reason") else ""
            raise ServerError(
                f"model '{model}' is in the repository but not loaded ({state}{reason})",
                hint=f"load it: curl -X POST http://HOST:8000/v2/repository/models/{model}/load",
            ) from exc
        raise ServerError(
            f"unknown model '{model}': {exc.message()}",
            hint=did_you_mean(model, names) or f"models: {', '.join(names) or 'none'}",
        ) from exc
    if not client.is_model_ready(model):
        raise ServerError(
            f"model '{model}' is not loaded",
            hint=f"load it: curl -X POST http://HOST:8000/v2/repository/models/{model}/load",
        )
    return ModelInfo(metadata=metadata, config=config.get("config", config))


def request_tensors(
    protocol: str, arrays: Mapping[str, np.ndarray], datatypes: Mapping[str, str] | None = None
) -> list[Any]:
    """tritonclient ``InferInput`` s for ``arrays`` (input name -> array, batch dimension included),
    each with its Triton datatype from ``datatypes`` or else from its numpy dtype."""
    if protocol == "grpc":
        import tritonclient.grpc as client_mod
    else:
        import tritonclient.http as client_mod  # type: ignore[no-redef]
    from tritonclient.utils import np_to_triton_dtype

    tensors = []
    for name, array in arrays.items():
        datatype = (datatypes or {}).get(name) or np_to_triton_dtype(array.dtype)
        tensor = client_mod.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def infer(
    model: str,
    inputs: dict[str, Path],
    *,
    url: str | None = None,
    protocol: str = "http",
    batch_size: int = 1,
) -> dict[str, np.ndarray]:
    """Send one inference request and return every output.

    Inputs not given as ``.npy`` files get random data of the right dtype and shape (variable
    dims become 1; batching models get ``batch_size`` rows).

    Raises:
        ServerError: unreachable server, unknown or unready model, or a failed request.
        UsageError: an input file that is missing, unnamed by the model, or of the wrong dtype.
    """
    from tritonclient.utils import InferenceServerException

    address = url or default_address(protocol)
    client = connect(address, protocol)
    try:
        info = model_info(client, model, address, protocol)
        shapes = info.input_shapes(batch_size)
        unknown = set(inputs) - set(shapes)
        if unknown:
            raise UsageError(
                f"model '{model}' has no input(s) {sorted(unknown)}", hint=f"its inputs: {', '.join(shapes)}"
            )
        rng = np.random.default_rng(0)
        arrays = {
            name: _load(inputs[name], name, datatype)
            if name in inputs
            else dtypes.random_array(datatype, tuple(shape), rng)
            for name, (shape, datatype) in shapes.items()
        }
        request = request_tensors(protocol, arrays, {name: datatype for name, (_, datatype) in shapes.items()})
        try:
            result = client.infer(model, request)
        except InferenceServerException as exc:
            raise ServerError(
                f"inference on '{model}' failed: {exc.message()}",
                hint="check the inputs' shapes and dtypes against the model's config",
            ) from exc
        return {o["name"]: result.as_numpy(o["name"]) for o in info.metadata["outputs"]}
    finally:
        client.close()


def _load(path: Path, name: str, datatype: str) -> np.ndarray:
    if not path.is_file():
        raise UsageError(f"input '{name}': file '{path}' not found", hint="save it with numpy.save('x.npy', array)")
    array = dtypes.load_npy(path, f"input '{name}'")
    want = dtypes.numpy_dtype(datatype)
    if datatype == "BYTES":
        return array.astype(object)
    if array.dtype != want:
        raise UsageError(
            f"input '{name}': {path} holds {array.dtype}, the model wants {datatype} ({want})",
            hint=f"convert it: numpy.save('{path}', array.astype('{want}'))",
        )
    return array


def _as_dict(message: Any) -> dict[str, Any]:
    if isinstance(message, dict):
        return message
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def _index(client: Any) -> list[Any]:
    try:
        index = client.get_model_repository_index()
    except Exception:
        return []
    if isinstance(index, list):
        return index
    return list(getattr(index, "models", []))


def model_statistics(model: str, address: str, protocol: str) -> dict[str, Any]:
    """Triton's cumulative statistics of ``model`` (the first entry of its statistics document)."""
    client = connect(address, protocol)
    try:
        if protocol == "grpc":
            doc = client.get_inference_statistics(model, as_json=True)
        else:
            doc = client.get_inference_statistics(model)
        stats: dict[str, Any] = doc["model_stats"][0]
        return stats
    finally:
        client.close()
