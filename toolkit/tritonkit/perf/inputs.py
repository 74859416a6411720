"""What bench and tune send: random data by default, or real inputs from files.

Real inputs (``--input-data``) come in three forms, resolved against the model's inputs:

- a ``.npy`` file: the one input of a single-input model;
- a directory: ``<input name>.npy`` per input, or ``<input name>.txt`` for a BYTES input (one
  string per line; each line is one element). Names are used as they are (Triton accepts names
  such as ``input.1`` or ``onnx::Gemm_0``; a ``/`` in a name is written ``%2F`` in the file name);
- a ``.json`` file in perf_analyzer's format: ``{"data": [{"<name>": [..] | {"content": [..],
  "shape": [..]}}, …]}`` (the first entry is sent; perf_analyzer itself cycles through all).

The arrays hold one request *without* the batch dimension when the model batches (as
perf_analyzer's files do; it stacks ``-b`` copies). ``--shape
NAME:d1,d2`` fixes a variable dimension for random data (variable dims are 1 otherwise).

Every loaded array is checked against the model's metadata: unknown or missing names, the wrong
dtype, or a rank that cannot fit are a UsageError naming the input and the file.

Example:
    >>> arrays = load_inputs(Path("x.npy"), {"features": ([-1, 4], "FP32")}, batching=True)
    >>> arrays["features"].shape
    (4,)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.errors import UsageError, did_you_mean
from tritonkit.serve.client import connect, model_info
from tritonkit.spec import dtypes

Signature = Mapping[str, tuple[list[int], str]]
"""``name -> (dims as the model's metadata gives them, datatype)``."""


def parse_shapes(items: list[str] | tuple[str, ...]) -> dict[str, list[int]]:
    """``["x:3,224,224", "mask:16"]`` → ``{"x": [3, 224, 224], "mask": [16]}`` (the last ``:`` splits).

    Raises:
        UsageError: an item that is not ``NAME:d1,d2,...`` with positive integers.
    """
    shapes: dict[str, list[int]] = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        try:
            values = [int(d) for d in dims.split(",")] if sep and name else []
        except ValueError:
            values = []
        if not values or any(v <= 0 for v in values):
            raise UsageError(f"shape '{item}' is not NAME:d1,d2,...", hint="for example features:4 or x:3,224,224")
        shapes[name] = values
    return shapes


def load_inputs(source: Path, signature: Signature, *, batching: bool) -> dict[str, np.ndarray]:
    """One request's arrays (without the batch dimension when ``batching``) from ``source``.

    Raises:
        UsageError: a missing file, an unknown or missing input, a wrong dtype or rank.
    """
    if not source.exists():
        raise UsageError(f"input data '{source}' not found", hint="give a .npy file, a directory, or a .json file")
    if source.is_dir():
        arrays = _from_directory(source, signature)
    elif source.suffix == ".json":
        arrays = _from_json(source, signature)
    elif source.suffix == ".npy":
        if len(signature) != 1:
            raise UsageError(
                f"'{source.name}' gives one array but the model has {len(signature)} inputs",
                hint="use a directory with one <name>.npy per input",
            )
        arrays = {next(iter(signature)): dtypes.load_npy(source, "input data")}
    else:
        raise UsageError(
            f"input data '{source}' is not .npy, .json or a directory", hint="see 'tritonkit bench --help'"
        )
    return {name: _checked(name, array, signature[name], batching, source) for name, array in arrays.items()}


def random_inputs(
    signature: Signature, shapes: Mapping[str, list[int]], *, batching: bool, seed: int
) -> dict[str, np.ndarray]:
    """Random arrays for one request (without the batch dimension when ``batching``)."""
    unknown = sorted(set(shapes) - set(signature))
    if unknown:
        hint = did_you_mean(unknown[0], list(signature)) or f"inputs: {', '.join(signature)}"
        raise UsageError(f"a shape is given for unknown input '{unknown[0]}'", hint=hint)
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, (dims, datatype) in signature.items():
        sample = dims[1:] if batching else dims
        wanted = shapes.get(name) or [d if d > 0 else 1 for d in sample]
        arrays[name] = dtypes.random_array(datatype, tuple(wanted), rng)
    return arrays


def to_analyzer_json(arrays: Mapping[str, np.ndarray], path: Path) -> Path:
    """Write ``arrays`` as perf_analyzer ``--input-data`` JSON (one entry, explicit shapes)."""
    entry: dict[str, Any] = {}
    for name, array in arrays.items():
        if array.dtype == object:
            content: list[Any] = [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
        else:
            content = array.reshape(-1).tolist()
        entry[name] = {"content": content, "shape": list(array.shape)}
    path.write_text(json.dumps({"data": [entry]}))
    return path


def _from_directory(source: Path, signature: Signature) -> dict[str, np.ndarray]:
    arrays = {}
    for name, (_, datatype) in signature.items():
        stem = name.replace("/", "%2F")
        npy, txt = source / f"{stem}.npy", source / f"{stem}.txt"
        if npy.is_file():
            arrays[name] = dtypes.load_npy(npy, f"input '{name}'")
        elif txt.is_file() and dtypes.canonical(datatype) == "BYTES":
            lines = txt.read_text().splitlines()
            arrays[name] = np.array([line.encode() for line in lines], dtype=object)
        else:
            raise UsageError(
                f"input '{name}': neither {npy.name} nor (for text) {txt.name} in {source}",
                hint="one file per model input, named after it",
            )
    return arrays


def _from_json(source: Path, signature: Signature) -> dict[str, np.ndarray]:
    try:
        entries = json.loads(source.read_text())["data"]
        entry = entries[0]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UsageError(
            f"'{source}' is not perf_analyzer input data ({exc})", hint='expected {"data": [{"<input>": [...]}]}'
        ) from exc
    arrays = {}
    for name, value in entry.items():
        if name not in signature:
            hint = did_you_mean(name, list(signature)) or f"inputs: {', '.join(signature)}"
            raise UsageError(f"'{source}' names unknown input '{name}'", hint=hint)
        content = value["content"] if isinstance(value, dict) else value
        datatype = signature[name][1]
        if dtypes.canonical(datatype) == "BYTES":
            array = np.array([str(v).encode() for v in np.array(content, dtype=object).reshape(-1)], dtype=object)
        else:
            array = np.array(content, dtype=dtypes.numpy_dtype(dtypes.canonical(datatype)))
        if isinstance(value, dict) and "shape" in value:
            array = array.reshape(value["shape"])
        arrays[name] = array
    missing = sorted(set(signature) - set(arrays))
    if missing:
        raise UsageError(f"'{source}' gives no data for input '{missing[0]}'", hint="give every model input")
    return arrays


def _checked(name: str, array: np.ndarray, expected: tuple[list[int], str], batching: bool, source: Path) -> np.ndarray:
    dims, datatype = expected
    sample = dims[1:] if batching else dims
    key = dtypes.canonical(datatype)
    if key == "BYTES":
        if array.dtype != object and array.dtype.kind not in "SU":
            raise UsageError(
                f"input '{name}' in {source}: holds {array.dtype}, the model wants text", hint="give strings"
            )
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        array = np.array(flat, dtype=object).reshape(array.shape)
    elif array.dtype != dtypes.numpy_dtype(key):
        raise UsageError(
            f"input '{name}' in {source}: holds {array.dtype}, the model wants {key}",
            hint=f"convert it, e.g. array.astype(numpy.{dtypes.numpy_dtype(key).name})",
        )
    if array.ndim != len(sample) or any(d > 0 and d != s for d, s in zip(sample, array.shape)):
        raise UsageError(
            f"input '{name}' in {source}: shape {list(array.shape)} does not fit {sample}"
            + (" (one request, without the batch dimension)" if batching else ""),
            hint="give one request's data; -1 dims take any size",
        )
    return array


@dataclass(frozen=True)
class Workload:
    """What every request of a bench run carries."""

    sample: dict[str, np.ndarray]  # one request, without the batch dimension when the model batches
    datatypes: dict[str, str]
    batching: bool


def workload_for(
    model: str, address: str, protocol: str, input_data: Path | None, shapes: Mapping[str, list[int]]
) -> Workload:
    """What every request of a bench run carries: the model's inputs, from ``input_data`` or random.

    Raises:
        ServerError: unreachable server or unknown model. UsageError: input data that does not fit.
    """
    client = connect(address, protocol)
    try:
        info = model_info(client, model, address, protocol)
    finally:
        client.close()
    batching = int(info.config.get("max_batch_size", 0)) > 0
    signature = {spec["name"]: ([int(d) for d in spec["shape"]], spec["datatype"]) for spec in info.metadata["inputs"]}
    if input_data is not None:
        sample = load_inputs(input_data, signature, batching=batching)
    else:
        sample = random_inputs(signature, shapes, batching=batching, seed=0)
    return Workload(sample, {name: datatype for name, (_, datatype) in signature.items()}, batching)
