"""ONNX graph I/O: a graph's inputs and outputs as spec tensors.

Shared by the ONNX and TensorRT builders (to derive and check configs) and by verify (to check
a built repository's configs against its graphs). Reads only the graph, never the weights.

Example:
    >>> inputs, outputs = graph_io(Path("model.onnx"), max_batch_size=8)
    >>> [(t.name, t.dtype, t.dims) for t in inputs]
    [('features', 'FP32', [4])]
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.spec import dtypes
from tritonkit.errors import BuildError, SpecError, did_you_mean
from tritonkit.build.modelconfig import model_config
from tritonkit.spec.schema import GpuAccelerator, LoadedSpec, ModelBase, OnnxModel, TensorSpec, TorchExport
from tritonkit.build.builders.base import VERSION, BuildContext

# --------------------------------------------------------------------------- graph I/O


def graph_io(
    path: Path, max_batch_size: int, *, ctx: BuildContext | None = None
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX graph as spec tensors.

    With ``max_batch_size > 0`` the first dimension of every tensor must be dynamic and is
    dropped (Triton adds the batch dimension itself).

    Raises:
        SpecError: when the file is not ONNX, or a tensor has a fixed batch dimension.
    """
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and friends
        raise _load_error(ctx, f"'{path.name}' is not a loadable ONNX model ({exc})") from exc
    initializers = {init.name for init in graph.initializer}

    def convert(values: Any, what: str) -> list[TensorSpec]:
        tensors = []
        for value in values:
            if value.name in initializers:
                continue
            tensor_type = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
            if max_batch_size > 0:
                if not dims or dims[0] not in (-1,):
                    hint = "export with a dynamic batch axis, or set max_batch_size: 0"
                    message = f"{what} '{value.name}' has a fixed first dimension {dims[:1]} but max_batch_size > 0"
                    if ctx is None:
                        raise SpecError(message, hint=hint)
                    raise SpecError(message, file=ctx.loaded.path, key=ctx.key("max_batch_size"), hint=hint)
                dims = dims[1:]
            try:
                dtype = dtypes.from_onnx_elem_type(tensor_type.elem_type)
            except ValueError as exc:
                raise _load_error(ctx, f"{what} '{value.name}': {exc}") from exc
            tensors.append(TensorSpec(name=value.name, dtype=dtype, dims=dims))
        return tensors

    return convert(graph.input, "input"), convert(graph.output, "output")


def _load_error(ctx: BuildContext | None, message: str) -> SpecError:
    hint = "point 'file' at a valid .onnx model"
    if ctx is None:
        return SpecError(message, hint=hint)
    return SpecError(message, file=ctx.loaded.path, key=ctx.key("file"), hint=hint)


