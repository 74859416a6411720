"""Real request data from files, as ``bench``, ``tune`` and a variant's accuracy check read it.

Three forms, resolved against a model's inputs (its *signature*: ``name -> (dims, datatype)``):

- a ``.npy`` file: the one input of a single-input model;
- a directory: ``<input name>.npy`` per input, or ``<input name>.txt`` for a BYTES input (one
  string per line; each line is one element). Names are used as they are (Triton accepts names
  such as ``input.1`` or ``onnx::Gemm_0``; a ``/`` in a name is written ``%2F`` in the file name);
- a ``.json`` file in perf_analyzer's format: ``{"data": [{"<name>": [..] | {"content": [..],
  "shape": [..]}}, …]}``.

An array holds one request *without* the batch dimension when the model batches (as
perf_analyzer's files do). :func:`load_inputs` reads one request (a JSON file's first entry: what
bench sends); :func:`load_samples` reads every request the files hold — each JSON entry, or,
for ``.npy`` arrays with one leading dimension more than a request has, each row — for checking
a model's numerics on real data.

Every array is checked against the signature: unknown or missing names, the wrong dtype, or a
rank that cannot fit are a UsageError naming the input and the file. Pure: numpy and the files.

Example:
    >>> arrays = load_inputs(Path("x.npy"), {"features": ([-1, 4], "FP32")}, batching=True)
    >>> arrays["features"].shape
    (4,)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tritonkit.errors import UsageError, did_you_mean
from tritonkit.spec import dtypes

Signature = Mapping[str, tuple[list[int], str]]
"""``name -> (dims as the model's metadata gives them, datatype)``."""


def load_inputs(source: Path, signature: Signature, *, batching: bool) -> dict[str, np.ndarray]:
    """One request's arrays (without the batch dimension when ``batching``) from ``source``.

    Raises:
        UsageError: a missing file, an unknown or missing input, a wrong dtype or rank.
    """
    return load_samples(source, signature, batching=batching, limit=1)[0]


def load_samples(
    source: Path, signature: Signature, *, batching: bool, limit: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Every request ``source`` holds (the first ``limit``), each as :func:`load_inputs` returns one.

    A JSON file gives one request per ``data`` entry. A ``.npy`` array with one leading dimension
    more than a request has holds one request per row (every input the same number of rows);
    otherwise the files are one request.

    Raises:
        UsageError: as :func:`load_inputs`, or inputs with different numbers of rows.
    """
    samples: list[dict[str, np.ndarray]] = []
    for arrays in _read(source, signature, entries=limit):
        rows = {
            name: array
            for name, array in arrays.items()
            if array.dtype != object and array.ndim == len(_request_dims(signature[name][0], batching)) + 1
        }
        counts = {len(array) for array in rows.values()}
        if rows and len(rows) == len(arrays) and len(counts) == 1:
            samples.extend({name: array[i] for name, array in rows.items()} for i in range(counts.pop()))
        elif rows and len(rows) == len(arrays):
            raise UsageError(
                f"input data '{source}': the inputs hold different numbers of requests ({sorted(counts)})",
                hint="give every input the same number of rows, one per request",
            )
        else:
            samples.append(arrays)
    return [{n: _checked(n, a, signature[n], batching, source) for n, a in s.items()} for s in samples[:limit]]


def _request_dims(dims: list[int], batching: bool) -> list[int]:
    return dims[1:] if batching else dims


def _read(source: Path, signature: Signature, *, entries: int | None) -> list[dict[str, np.ndarray]]:
    """The arrays of the first ``entries`` requests (all when None) in ``source``, unchecked."""
    if not source.exists():
        raise UsageError(f"input data '{source}' not found", hint="give a .npy file, a directory, or a .json file")
    if source.is_dir():
        return [_from_directory(source, signature)]
    if source.suffix == ".json":
        return _from_json(source, signature, entries)
    if source.suffix == ".npy":
        if len(signature) != 1:
            raise UsageError(
                f"'{source.name}' gives one array but the model has {len(signature)} inputs",
                hint="use a directory with one <name>.npy per input",
            )
        return [{next(iter(signature)): dtypes.load_npy(source, "input data")}]
    raise UsageError(f"input data '{source}' is not .npy, .json or a directory", hint="see 'tritonkit bench --help'")


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


def _from_json(source: Path, signature: Signature, entries: int | None) -> list[dict[str, np.ndarray]]:
    try:
        data = json.loads(source.read_text())["data"]
        chosen = data[: entries or len(data)]
        if not chosen:
            raise IndexError("no entries")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UsageError(
            f"'{source}' is not perf_analyzer input data ({exc})", hint='expected {"data": [{"<input>": [...]}]}'
        ) from exc
    return [_json_entry(source, entry, signature) for entry in chosen]


def _json_entry(source: Path, entry: Mapping[str, object], signature: Signature) -> dict[str, np.ndarray]:
    if not isinstance(entry, Mapping):
        raise UsageError(f"'{source}': a data entry is not an object", hint='expected {"data": [{"<input>": [...]}]}')
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
    sample = _request_dims(dims, batching)
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
