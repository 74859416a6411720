"""What bench and tune send: random data by default, or real inputs from files.

Real inputs (``--input-data``) are read by :mod:`tritonkit.spec.inputdata` (a ``.npy`` file, a
directory of ``<input>.npy``/``<input>.txt``, or perf_analyzer's JSON; the first request is
sent). ``--shape NAME:d1,d2`` fixes a variable dimension for random data (variable dims are 1
otherwise).

Example:
    >>> parse_shapes(["x:3,224,224"])
    {'x': [3, 224, 224]}
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
from tritonkit.spec.inputdata import Signature, load_inputs

__all__ = [
    "Signature",
    "Workload",
    "load_inputs",
    "parse_shapes",
    "random_inputs",
    "served_signature",
    "to_analyzer_json",
    "workload_for",
]


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


@dataclass(frozen=True)
class Workload:
    """What every request of a bench run carries."""

    sample: dict[str, np.ndarray]  # one request, without the batch dimension when the model batches
    datatypes: dict[str, str]
    batching: bool


def served_signature(model: str, address: str, protocol: str) -> tuple[dict[str, tuple[list[int], str]], bool]:
    """The served model's inputs (``name -> (dims, datatype)``, as its metadata gives them) and
    whether it batches.

    Raises:
        ServerError: unreachable server, unknown or unloaded model.
    """
    client = connect(address, protocol)
    try:
        info = model_info(client, model, address, protocol)
    finally:
        client.close()
    batching = int(info.config.get("max_batch_size", 0)) > 0
    inputs = info.metadata["inputs"]
    return {spec["name"]: ([int(d) for d in spec["shape"]], spec["datatype"]) for spec in inputs}, batching


def workload_for(
    model: str, address: str, protocol: str, input_data: Path | None, shapes: Mapping[str, list[int]]
) -> Workload:
    """What every request of a bench run carries: the model's inputs, from ``input_data`` or random.

    Raises:
        ServerError: unreachable server or unknown model. UsageError: input data that does not fit.
    """
    signature, batching = served_signature(model, address, protocol)
    if input_data is not None:
        sample = load_inputs(input_data, signature, batching=batching)
    else:
        sample = random_inputs(signature, shapes, batching=batching, seed=0)
    return Workload(sample, {name: datatype for name, (_, datatype) in signature.items()}, batching)
