"""Tensor data types: one canonical name per type, and its numpy, ONNX and config forms.

Canonical names are KServe v2 / Triton datatype strings (``FP32``, ``INT64``, ``BYTES``…).
The spec also accepts ``TYPE_FP32``, lower case, and numpy names (``float32``).

Example:
    >>> canonical("float32"), config_type("FP32"), numpy_dtype("INT64")
    ('FP32', 'TYPE_FP32', dtype('int64'))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.errors import UsageError

# canonical name -> (numpy dtype name, ONNX TensorProto elem_type)
_TABLE: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 9),
    "UINT8": ("uint8", 2),
    "UINT16": ("uint16", 4),
    "UINT32": ("uint32", 12),
    "UINT64": ("uint64", 13),
    "INT8": ("int8", 3),
    "INT16": ("int16", 5),
    "INT32": ("int32", 6),
    "INT64": ("int64", 7),
    "FP16": ("float16", 10),
    "FP32": ("float32", 1),
    "FP64": ("float64", 11),
    "BF16": ("float32", 16),  # numpy has no bfloat16; data is generated as float32
    "BYTES": ("object", 8),
}
_ALIASES = {
    "STRING": "BYTES",
    "FLOAT": "FP32",
    "DOUBLE": "FP64",
    "HALF": "FP16",
    "FLOAT16": "FP16",
    "FLOAT32": "FP32",
    "FLOAT64": "FP64",
    "BFLOAT16": "BF16",
    "STR": "BYTES",
    "OBJECT": "BYTES",
}
CANONICAL = tuple(_TABLE)


def json_schema() -> dict[str, Any]:
    """What a JSON Schema can say of a dtype name: the names :func:`canonical` accepts, in any
    case, with or without ``TYPE_`` and surrounding spaces (a pattern), the canonical ones as
    suggestions for editors (``examples``)."""

    def anycase(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)

    names = sorted({*_TABLE, *_ALIASES}, key=lambda n: (-len(n), n))  # longest first: FP16 before FP1…
    return {
        "pattern": rf"^\s*({anycase('TYPE_')})?({'|'.join(anycase(n) for n in names)})\s*$",
        "examples": list(CANONICAL),
    }


def canonical(name: str) -> str:
    """Normalise a dtype name to its canonical form.

    Raises:
        ValueError: for an unknown name (the message lists the accepted ones).
    """
    key = name.strip().upper()
    key = key.removeprefix("TYPE_")
    key = _ALIASES.get(key, key)
    if key not in _TABLE:
        raise ValueError(f"unknown dtype '{name}' (use one of {', '.join(CANONICAL)})")
    return key


def config_type(name: str) -> str:
    """The ``DataType`` enum name used in config.pbtxt (``BYTES`` is ``TYPE_STRING``)."""
    key = canonical(name)
    return "TYPE_STRING" if key == "BYTES" else f"TYPE_{key}"


def from_config_type(enum_name: str) -> str:
    """Inverse of :func:`config_type`."""
    return canonical(enum_name)


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype used for data of this type."""
    return np.dtype(_TABLE[canonical(name)][0])


def from_onnx_elem_type(elem_type: int) -> str:
    """Canonical name for an ONNX element type.

    Raises:
        ValueError: for ONNX types Triton cannot serve (complex, float8…).
    """
    for key, (_, onnx_type) in _TABLE.items():
        if onnx_type == elem_type:
            return key
    raise ValueError(f"ONNX element type {elem_type} has no Triton equivalent")


def random_array(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random data of the given type and shape (sample data for warm-up, checks and load)."""
    key = canonical(name)
    if key == "BYTES":
        flat = [f"sample-{i}".encode() for i in range(int(np.prod(shape)))]
        return np.array(flat, dtype=object).reshape(shape)
    if key == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    dtype = numpy_dtype(key)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 16, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


def load_npy(path: Path, what: str) -> np.ndarray:
    """The array in the ``.npy`` file at ``path`` (never unpickled).

    Raises:
        UsageError: the file is not a ``.npy`` array (text, truncated, another format), or holds
            Python objects (which only pickle can load, and a pickle runs code), naming ``what``.
    """
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "pickle" in reason.lower() or "object arrays" in reason.lower():
            reason = "not a numeric or fixed-width string .npy array (object arrays and pickles are refused)"
        raise UsageError(
            f"{what}: {path} is not a readable .npy array ({reason})",
            hint="save it with numpy.save(path, array) from a numeric or fixed-width string array",
        ) from None
