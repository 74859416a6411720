"""ONNX graph I/O: a graph's inputs and outputs as spec tensors, and the files it references.

Shared by the ONNX and TensorRT builders (to derive and check configs) and by verify (to check
a built repository's configs against its graphs). Reads only the graph, never the weights:
tensors saved as external data (every model over 2 GB) stay on disk, and
:func:`external_data_files` lists the files they live in.

What Triton can carry is decided here: tensors only. A sequence, map, optional or sparse
input/output (skl2onnx's default ZipMap output is a sequence of maps) is refused with a hint
that names the way out.

Example:
    >>> inputs, outputs = graph_io(Path("model.onnx"), max_batch_size=8)
    >>> [(t.name, t.dtype, t.dims) for t in inputs]
    [('features', 'FP32', [4])]
    >>> external_data_files(Path("big.onnx"))
    ['big.onnx.data']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tritonkit.errors import SpecError
from tritonkit.spec import dtypes
from tritonkit.spec.schema import TensorSpec

if TYPE_CHECKING:
    from tritonkit.build.builders.base import BuildContext

# ONNX TypeProto's oneof "value": what each kind is called in messages.
_UNSERVABLE = {
    "sequence_type": "a sequence",
    "map_type": "a map",
    "optional_type": "an optional",
    "sparse_tensor_type": "a sparse tensor",
}


def graph_io(
    path: Path, max_batch_size: int, *, ctx: BuildContext | None = None, declared: Sequence[TensorSpec] = ()
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX graph as spec tensors.

    With ``max_batch_size > 0`` the first dimension of every tensor must be dynamic (a number
    of rows, ``-1`` or a named symbol such as ``N``) and is dropped (Triton adds the batch
    dimension itself). A rank-1 batched tensor therefore has ``dims: []``; so has a scalar.

    A tensor the graph gives no shape (some converters leave outputs untyped) gets one from
    ONNX shape inference, else from ``declared``, else it is a SpecError asking to declare it.

    A dimension of 0 (exporters emit them, e.g. an empty ``axes`` or ``pads`` input traced from
    an empty list) becomes ``-1``: Triton's model config accepts only dims >= 1 or -1, and a
    variable dimension still admits the empty tensor the graph was traced with, so the model
    builds, loads and answers what onnxruntime answers for it.

    Args:
        path: the ``.onnx`` file (external data is not read).
        max_batch_size: the model's; 0 keeps every dimension.
        ctx: the build context, to name the spec key in errors (None from verify).
        declared: tensors the spec (or, from verify, the config) declares; used only for
            tensors whose rank the graph does not say.

    Returns:
        ``(inputs, outputs)``; graph inputs that are initializers are left out.

    Raises:
        SpecError: when the file is not ONNX, a tensor has a fixed batch dimension, or an
            input/output is not a tensor (sequence, map, optional, sparse).
    """
    model = _load(path, ctx)
    if any(_rank_unknown(v) for v in (*model.graph.input, *model.graph.output)):
        model = _infer_shapes(model)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    given = {t.name: t for t in declared}

    def convert(values: Any, what: str) -> list[TensorSpec]:
        tensors = []
        for value in values:
            if value.name in initializers:
                continue
            _require_tensor(value, what, ctx)
            tensor_type = value.type.tensor_type
            if _rank_unknown(value):
                if value.name in given:
                    tensors.append(given[value.name])
                    continue
                raise _error(
                    ctx,
                    f"{what} '{value.name}' has no shape in the graph (its rank is unknown)",
                    key=f"{what}s",
                    hint=f"declare it under '{what}s' with name, dtype and dims (dims without the batch dimension)",
                )
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
            if max_batch_size > 0:
                if not dims or dims[0] != -1:
                    shape = "is a scalar" if not dims else f"has a fixed first dimension {dims[:1]}"
                    raise _error(
                        ctx,
                        f"{what} '{value.name}' {shape} but max_batch_size > 0",
                        key="max_batch_size",
                        hint="set max_batch_size: 0 (the model takes whole tensors), "
                        "or export it with a dynamic batch axis",
                    )
                dims = dims[1:]
            dims = [-1 if d == 0 else d for d in dims]  # Triton: dims >= 1 or -1 (an empty one stays valid)
            try:
                dtype = dtypes.from_onnx_elem_type(tensor_type.elem_type)
            except ValueError as exc:
                raise _error(ctx, f"{what} '{value.name}': {exc}", key="file") from exc
            tensors.append(TensorSpec(name=value.name, dtype=dtype, dims=dims))
        return tensors

    return convert(graph.input, "input"), convert(graph.output, "output")


def empty_dims(path: Path, max_batch_size: int) -> dict[str, list[int]]:
    """The graph inputs with a dimension of 0, and their dims as the config counts them (batch
    dimension dropped when ``max_batch_size > 0``): the config says ``-1`` there
    (:func:`graph_io`), and a request that proves the model answers must send the empty tensor the
    graph was traced with. Empty when there is none, or the file cannot be read.
    """
    try:
        graph = _load(path, None).graph
    except SpecError:
        return {}
    found = {}
    initializers = {init.name for init in graph.initializer}
    for value in graph.input:
        if value.name in initializers or value.type.WhichOneof("value") != "tensor_type":
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        dims = dims[1:] if max_batch_size > 0 else dims
        if 0 in dims:
            found[value.name] = dims
    return found


def _rank_unknown(value: Any) -> bool:
    return value.type.WhichOneof("value") == "tensor_type" and not value.type.tensor_type.HasField("shape")


def _infer_shapes(model: Any) -> Any:
    """The model with ONNX's shape inference applied (weights are not needed), or as it was."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a best effort: an unknown op must not fail the build here
        return model


def external_data_files(path: Path) -> list[str]:
    """Files (relative to the model's directory, POSIX) its external tensors are stored in.

    Reads the graph without its weights. Every initializer, including those inside subgraphs
    (If/Loop bodies) and sparse initializers, is looked at.

    Raises:
        SpecError: when the file is not ONNX, or a location is absolute or leaves the model's
            directory (it could not be copied next to ``model.onnx``).
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    model = _load(path, None)
    found: set[str] = set()
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        rel = PurePosixPath(location.replace("\\", "/"))
        if not location or rel.is_absolute() or ".." in rel.parts:
            raise SpecError(
                f"'{path.name}': tensor '{tensor.name}' keeps its data at '{location}', outside the model's directory",
                hint="save the model with onnx.save(model, path, save_as_external_data=True, location='<name>.data')",
            )
        found.add(rel.as_posix())
    return sorted(found)


def _load(path: Path, ctx: BuildContext | None) -> Any:
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise _error(
            ctx,
            f"'{path.name}' is not a loadable ONNX model ({exc})",
            key="file",
            hint=f"check the file: python -c \"import onnx; onnx.checker.check_model('{path}')\"",
        ) from exc


def _require_tensor(value: Any, what: str, ctx: BuildContext | None) -> None:
    """Refuse an input/output Triton cannot carry, saying how to get a tensor instead."""
    kind = value.type.WhichOneof("value")
    if kind == "tensor_type":
        return
    described = _UNSERVABLE.get(kind or "", "not a tensor")
    if kind == "sequence_type" and value.type.sequence_type.elem_type.WhichOneof("value") == "map_type":
        described = "a sequence of maps"  # skl2onnx's ZipMap
    hint = (
        "Triton serves tensors only: export the model with tensor outputs; for a scikit-learn "
        "classifier convert without ZipMap: skl2onnx.to_onnx(model, X, options={'zipmap': False})"
        if kind in ("sequence_type", "map_type")
        else "Triton serves dense tensors only: export the model with dense tensor inputs and outputs"
    )
    message = f"{what} '{value.name}' is {described}, which Triton cannot serve"
    raise _error(ctx, message, key="file", hint=hint)


def _error(ctx: BuildContext | None, message: str, *, key: str, hint: str = "") -> SpecError:
    hint = hint or "point 'file' at a valid .onnx model"
    if ctx is None:
        return SpecError(message, hint=hint)
    return SpecError(message, file=ctx.loaded.path, key=ctx.key(key), hint=hint)
