"""Variants of an ONNX model, made by onnxruntime's own tools, and their accuracy on real inputs.

A variant is a recipe (:class:`~tritonkit.spec.schema.OnnxVariant`) applied to the original
model: onnxruntime's offline graph optimizations, int8 dynamic or static quantization
(``onnxruntime.quantization``, after its recommended pre-processing), or fp16
(``onnxruntime.transformers.float16``). Nothing edits a graph by hand. Each recipe gives the
same bytes for the same input and tool versions (checked by the tests), so a build reproduces
the variant ``tritonkit tune --variants`` measured, and the repository digest stays a function
of the spec.

Accuracy is measured against the original on real requests, one request at a time (batch 1):
int8 dynamic quantization computes activation ranges per batch, so a request's result does not
depend on what it was batched with here; served in a batch it may differ by that much more.

Example:
    >>> make_variant(Path("model.onnx"), Path("int8.onnx"), OnnxVariant(recipe="int8-dynamic", data="x.npy"),
    ...              samples=samples, workdir=Path("/tmp/w"))
    >>> accuracy(run_requests(Path("model.onnx"), samples), run_requests(Path("int8.onnx"), samples))
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from tritonkit.errors import UsageError
from tritonkit.spec.intent import Accuracy
from tritonkit.spec.schema import OnnxVariant

Sample = Mapping[str, np.ndarray]
"""One request's inputs, without the batch dimension when the model batches."""

NUMERIC_RECIPES = ("int8-dynamic", "int8-static", "fp16")
"""Recipes that change a model's numerics: made only with real inputs to check them on."""


def make_variant(
    source: Path, target: Path, variant: OnnxVariant, *, samples: Sequence[Sample], batching: bool, workdir: Path
) -> None:
    """Write ``variant`` of the ONNX model ``source`` to ``target``.

    Args:
        samples: real requests; ``int8-static`` calibrates on them (in their order).
        batching: whether the model has a batch dimension (the samples lack it).
        workdir: scratch space for the pre-processed model (kept there: recipes made from
            the same source in the same workdir pre-process it once).

    Raises:
        ValueError: a recipe the model cannot take (its message is onnxruntime's reason).
    """
    import onnxruntime as ort

    workdir.mkdir(parents=True, exist_ok=True)
    if variant.recipe == "optimized":
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    elif variant.recipe == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with _quiet():
            model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        onnx.save(model, str(target))
    else:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        # one pre-processing per source file in a workdir: tune tries three int8 recipes of one
        # model, and on MiniLM each pre-processing took seconds (symbolic shape inference runs,
        # fails and is redone without it)
        prepared = workdir / f"preprocessed-{_digest(source)}.onnx"
        if not prepared.is_file():
            _preprocess(source, prepared)
        with _quiet():
            if variant.recipe == "int8-dynamic":
                quantize_dynamic(prepared, target, weight_type=QuantType.QInt8, per_channel=variant.per_channel)
            else:
                if not samples:
                    raise ValueError("int8-static calibrates on real inputs, and none were given")
                quantize_static(
                    prepared,
                    target,
                    _Calibration(samples, batching),
                    quant_format=QuantFormat.QDQ,
                    per_channel=variant.per_channel,
                    weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
    if not target.is_file():
        raise ValueError(f"onnxruntime wrote no model for recipe '{variant.recipe}'")


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _preprocess(source: Path, target: Path) -> None:
    """onnxruntime's recommended pre-processing before quantization (shape inference, graph
    optimization: it stores shared weights once per use, so every MatMul is quantized); symbolic
    shape inference first, plain ONNX shape inference where it cannot finish (transformer exports
    with data-dependent shapes)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # In target's directory: when symbolic inference cannot finish, onnxruntime saves what it
    # got to "sym_shape_infer_temp.onnx" + "<uuid>.data" (the whole model's weights, 88 MB for
    # MiniLM) in the working directory (symbolic_shape_infer.py, SymbolicShapeInference.infer_shapes)
    # and never removes them: the user's directory, before this. The build is single-threaded.
    with _quiet(), contextlib.chdir(target.parent):
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
        except Exception:  # "Incomplete symbolic shape inference", as on MiniLM's export
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    _one_import_per_domain(target)


def _one_import_per_domain(path: Path) -> None:
    """Drop repeated identical entries of the model's ``opset_import``. skl2onnx 1.20 writes the
    default domain twice (``{"": 17}, {"": 17}``); onnxruntime loads such a model, but its
    quantizer needs exactly one entry for the default domain (``quant_utils.get_opset_version``:
    "Failed to find proper ai.onnx domain"). Metadata only: no node or weight changes."""
    import onnx

    model = onnx.load(str(path))
    seen: set[tuple[str, int]] = set()
    kept = []
    for entry in model.opset_import:
        key = (entry.domain, entry.version)
        if key not in seen:
            seen.add(key)
            kept.append(onnx.helper.make_opsetid(entry.domain, entry.version))
    if len(kept) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(kept)
        onnx.save(model, str(path))


class _Calibration:
    """onnxruntime's ``CalibrationDataReader`` protocol over the samples, one request per batch."""

    def __init__(self, samples: Sequence[Sample], batching: bool) -> None:
        self._feeds = iter([_feed(sample, batching) for sample in samples])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _feed(sample: Sample, batching: bool) -> dict[str, np.ndarray]:
    return {name: (array[np.newaxis] if batching else array) for name, array in sample.items()}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantization tools log through the root logger (a WARNING per LayerNorm weight
    per_channel skips); the library never prints, so those stay out of the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def run_requests(path: Path, samples: Sequence[Sample], *, batching: bool) -> list[list[np.ndarray]]:
    """Every output of ``path`` for each sample, run alone in onnxruntime (CPU, one thread), as one
    request's (without the batch dimension when ``batching``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1  # the same arithmetic order on every host
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = [session.run(names, _feed(sample, batching)) for sample in samples]
    return [[out[0] if batching else out for out in request] for request in outputs]


def request_masks(samples: Sequence[Sample], name: str | None) -> list[np.ndarray] | None:
    """Each request's ``name`` input as a boolean mask (``slo.accuracy.mask``), None without one.

    Raises:
        UsageError: ``name`` is not one of the model's inputs.
    """
    if name is None or not samples:
        return None
    if name not in samples[0]:
        raise UsageError(
            f"slo.accuracy.mask '{name}' is not an input of the model (inputs: {', '.join(sorted(samples[0]))})",
            hint="name the input whose zeros mark padding (a transformer's attention_mask), or remove 'mask'",
        )
    return [np.asarray(sample[name]) != 0 for sample in samples]


def mask_hint(samples: Sequence[Sample]) -> str:
    """When a mask-like input (its name says ``mask``) has zeros: the sentence that offers
    ``slo.accuracy.mask``, for a variant dropped for accuracy ("" otherwise)."""
    for name in sorted(samples[0]) if samples else []:
        if "mask" in name.lower() and any(not np.all(sample[name]) for sample in samples):
            return (
                f"; input '{name}' has zeros: if nothing reads the outputs at those positions, "
                f"set slo.accuracy.mask: {name}"
            )
    return ""


def accuracy(
    reference: Sequence[Sequence[np.ndarray]],
    measured: Sequence[Sequence[np.ndarray]],
    masks: Sequence[np.ndarray] | None = None,
    mask_name: str | None = None,
) -> Accuracy:
    """``measured`` against ``reference``, request by request (see :class:`~tritonkit.spec.intent.Accuracy`).

    Cosine: all floating-point outputs of a request flattened into one vector (1.0 when both are
    zero, 0.0 when one is). Top-1: for each floating-point output whose last dimension is longer
    than 1, the arg-max over it must agree at every position for the request to count. With
    ``masks`` (one per request, :func:`request_masks`), an output whose leading dimensions are
    its request's mask's is compared only where the mask is true.

    Raises:
        UsageError: ``masks`` given, but no output of any request starts with the mask's shape.
    """
    if not reference or len(reference) != len(measured):
        raise ValueError("accuracy needs the same requests, at least one, run through both models")
    cosines: list[float] = []
    worst = 0.0
    agree: list[bool] = []
    masked = False
    for index, (want, got) in enumerate(zip(reference, measured, strict=True)):
        mask = masks[index] if masks is not None else None
        pairs = []
        for a, b in zip(want, got, strict=True):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape:
                raise ValueError(f"an output has shape {b.shape} in the variant but {a.shape} in the original")
            if mask is not None and a.shape[: mask.ndim] == mask.shape:
                a, b, masked = a[mask], b[mask], True
            pairs.append((a, b))
        for a, b in pairs:
            if a.size:
                worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
        floats = [(a, b) for a, b in pairs if np.issubdtype(a.dtype, np.floating)]
        if floats:
            x = np.concatenate([a.astype(np.float64).ravel() for a, _ in floats])
            y = np.concatenate([b.astype(np.float64).ravel() for _, b in floats])
            nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
            cosines.append(1.0 if nx == ny == 0 else 0.0 if nx == 0 or ny == 0 else float(x @ y) / (nx * ny))
        classes = [(a, b) for a, b in floats if np.ndim(a) >= 1 and np.shape(a)[-1] > 1]
        if classes:
            agree.append(all(np.array_equal(np.argmax(a, axis=-1), np.argmax(b, axis=-1)) for a, b in classes))
    if masks is not None and not masked:
        shape = list(masks[0].shape)
        raise UsageError(
            f"slo.accuracy.mask '{mask_name}' has shape {shape} per request, but no output starts with it",
            hint="name the input whose positions the outputs follow (a transformer's attention_mask), or remove 'mask'",
        )
    return Accuracy(
        samples=len(reference),
        cosine=min(cosines) if cosines else (1.0 if worst == 0 else 0.0),
        max_abs_error=worst,
        top1=(sum(agree) / len(agree)) if agree else None,
        mask=mask_name if masks is not None else None,
    )


def describe_recipe(variant: OnnxVariant) -> str:
    """``int8-dynamic (per-channel)``: a recipe as a person reads it."""
    if variant.recipe.startswith("int8"):
        return f"{variant.recipe} ({'per-channel' if variant.per_channel else 'per-tensor'})"
    return variant.recipe
