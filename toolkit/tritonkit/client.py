"""Talk to a running Triton with tritonclient: one request, inputs from files or generated.

Example:
    >>> infer("classifier", {"features": Path("x.npy")})
    {'logits': array([[...]], dtype=float32)}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import dtypes
from .errors import ServerError, SpecError, did_you_mean


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
        SpecError: an input file that is missing, unnamed by the model, or of the wrong dtype.
    """
    if protocol == "grpc":
        import tritonclient.grpc as client_mod
    else:
        import tritonclient.http as client_mod  # type: ignore[no-redef]
    from tritonclient.utils import InferenceServerException

    address = url or ("127.0.0.1:8001" if protocol == "grpc" else "127.0.0.1:8000")
    client: Any = client_mod.InferenceServerClient(address)
    try:
        try:
            live = client.is_server_live()
        except Exception as exc:
            raise ServerError(
                f"cannot reach Triton at {address} ({protocol}): {exc}", hint="start one with 'tritonkit serve'"
            ) from exc
        if not live:
            raise ServerError(f"Triton at {address} is not live", hint="check 'tritonkit serve' output")
        try:
            metadata = client.get_model_metadata(model)
            config = client.get_model_config(model)
        except InferenceServerException as exc:
            names = [m["name"] if isinstance(m, dict) else m.name for m in _index(client)]
            raise ServerError(
                f"model '{model}' is not available: {exc.message()}",
                hint=did_you_mean(model, names) or f"loaded models: {', '.join(names) or 'none'}",
            ) from exc
        meta = _as_dict(metadata)
        max_batch = int(_as_dict(config).get("config", _as_dict(config)).get("max_batch_size", 0))
        unknown = set(inputs) - {i["name"] for i in meta["inputs"]}
        if unknown:
            raise SpecError(
                f"model '{model}' has no input(s) {sorted(unknown)}",
                hint=f"its inputs: {', '.join(i['name'] for i in meta['inputs'])}",
            )
        rng = np.random.default_rng(0)
        request = []
        for spec in meta["inputs"]:
            name, datatype = spec["name"], spec["datatype"]
            if name in inputs:
                array = _load(inputs[name], name, datatype)
            else:
                dims = [int(d) for d in spec["shape"]]
                if max_batch > 0:
                    dims[0] = batch_size
                array = dtypes.random_array(datatype, tuple(d if d > 0 else 1 for d in dims), rng)
            tensor = client_mod.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        try:
            result = client.infer(model, request)
        except InferenceServerException as exc:
            raise ServerError(
                f"inference on '{model}' failed: {exc.message()}",
                hint="check the inputs' shapes and dtypes against 'tritonkit verify' / the config",
            ) from exc
        return {o["name"]: result.as_numpy(o["name"]) for o in meta["outputs"]}
    finally:
        client.close()


def _load(path: Path, name: str, datatype: str) -> np.ndarray:
    if not path.is_file():
        raise SpecError(f"input '{name}': file '{path}' not found", hint="save it with numpy.save('x.npy', array)")
    array = np.load(path, allow_pickle=False)
    want = dtypes.numpy_dtype(datatype)
    if datatype == "BYTES":
        return array.astype(object)
    if array.dtype != want:
        raise SpecError(
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
