"""Builder for ``kind: onnx``: copy an .onnx file or export one from PyTorch, then check it.

Inputs and outputs come from the ONNX graph. When the spec declares them too, names, dtypes,
dims and the batch dimension are checked against the graph and a mismatch is a SpecError that
names the key. Exports are checked numerically: onnxruntime and PyTorch run on the same random
batch and must agree within the spec's ``rtol``/``atol``.

Example:
    >>> inputs, outputs = graph_io(Path("model.onnx"), max_batch_size=32)

Length: about 490 lines: one builder's steps (copy or export from PyTorch in a subprocess,
external data, variants, the graph checks against the spec); the graph reading is
``onnx_io.py`` and the variants' recipes ``variants.py``.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.build.builders.base import VERSION, BuildContext, tool_version
from tritonkit.build.modelconfig import model_config, same_tensor_dims
from tritonkit.build.onnx_io import graph_io
from tritonkit.errors import BuildError, DependencyError, SpecError, UsageError, did_you_mean
from tritonkit.spec import dtypes
from tritonkit.spec.schema import (
    GpuAccelerator,
    LoadedSpec,
    ModelBase,
    OnnxModel,
    OnnxVariant,
    TensorSpec,
    TorchExport,
)

MODEL_FILE = "model.onnx"


class OnnxBuilder:
    """Copies or exports ``model.onnx`` and renders an ``onnxruntime`` backend config."""

    kind = "onnx"

    def input_files(self, loaded: LoadedSpec, model: ModelBase) -> list[Path]:
        assert isinstance(model, OnnxModel)
        if model.file is not None:
            source = loaded.resolve(model.file)
            external = [source.parent / rel for rel in _external_data(loaded, model, source)]
            return [source, *external, *self._variant_files(loaded, model)]
        assert model.export is not None
        files = {loaded.resolve(model.export.factory_file), *self._variant_files(loaded, model)}
        for pattern in model.export.depends:
            files.update(p.resolve() for p in loaded.root.glob(pattern) if p.is_file())
        return sorted(files)

    def _variant_files(self, loaded: LoadedSpec, model: OnnxModel) -> list[Path]:
        if model.variant is None or model.variant.data is None:
            return []
        data = loaded.resolve(model.variant.data)
        return sorted(p for p in data.rglob("*") if p.is_file()) if data.is_dir() else [data]

    def preflight(self, model: ModelBase) -> None:
        """An export needs torch: refuse before any model is built, not when this one's turn comes."""
        assert isinstance(model, OnnxModel)
        if model.export is not None and importlib.util.find_spec("torch") is None:
            raise DependencyError(
                f"model '{model.name}' is exported from PyTorch, and torch is not installed",
                hint="pip install 'tritonkit[torch]'",
            )

    def tool_versions(self, model: ModelBase) -> dict[str, str]:
        assert isinstance(model, OnnxModel)
        tools = ("onnx", "onnxruntime") if model.file is not None else ("onnx", "onnxruntime", "torch")
        return {name: tool_version(name) for name in tools}

    def build(self, ctx: BuildContext, model_dir: Path) -> pb.ModelConfig:
        model = ctx.model
        assert isinstance(model, OnnxModel)
        target = model_dir / VERSION / MODEL_FILE
        target.parent.mkdir(parents=True)
        if model.file is not None:
            source = ctx.loaded.resolve(model.file)
            external = _external_data(ctx.loaded, model, source)
            # what Triton cannot serve, before onnxruntime's view of the file
            graph_io(source, model.max_batch_size, ctx=ctx, declared=[*(model.inputs or []), *(model.outputs or [])])
            _check_loads(source, ctx, source_key="file", external=external)
            shutil.copyfile(source, target)
            for rel in external:  # where the graph says they are: next to model.onnx, same relative path
                (target.parent / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source.parent / rel, target.parent / rel)
            ctx.log(f"copied {model.file}" + (f" and its external data ({', '.join(external)})" if external else ""))
        else:
            assert model.export is not None
            external = []
            export_from_torch(ctx, model.export, target)
        if model.variant is not None:
            apply_variant(ctx, model.variant, target, external=external)
        inputs, outputs = graph_io(
            target, model.max_batch_size, ctx=ctx, declared=[*(model.inputs or []), *(model.outputs or [])]
        )
        inputs = _reconcile(ctx, "inputs", model.inputs, inputs)
        outputs = _reconcile(ctx, "outputs", model.outputs, outputs)
        config = model_config(model, backend="onnxruntime", inputs=inputs, outputs=outputs)
        if model.accelerator is not None:
            add_gpu_accelerator(config, model.accelerator)
        return config


ACCURACY_SAMPLES = 512
"""At most this many requests of a variant's data are run to measure its accuracy (the first ones)."""


def apply_variant(ctx: BuildContext, variant: OnnxVariant, target: Path, *, external: Sequence[str]) -> None:
    """Replace ``target`` (the original model) by ``variant`` of it; measure its accuracy on the
    variant's data against the original, hold it to the model's ``slo.accuracy``, and record
    recipe and accuracy for the lock (``ctx.meta["variant"]``).

    Raises:
        SpecError: a model with external data, data that does not fit the model's inputs, or an
            ``slo.accuracy.mask`` that is not an input whose shape the outputs follow.
        BuildError: the recipe failed, or the variant misses the accuracy budget.
    """
    from tritonkit.build.variants import accuracy, describe_recipe, make_variant, request_masks, run_requests
    from tritonkit.spec.inputdata import load_samples

    model = ctx.model
    if external:
        raise SpecError(
            f"model '{model.name}' keeps its weights in external data, and variants of such models are not made yet",
            file=ctx.loaded.path,
            key=ctx.key("variant"),
            hint="remove 'variant:' to serve the model as it is",
        )
    original = ctx.workdir / "original.onnx"
    shutil.move(target, original)
    batching = model.max_batch_size > 0
    samples: list[dict[str, np.ndarray]] = []
    if variant.data is not None:
        graph_inputs, _ = graph_io(original, model.max_batch_size)
        signature = {t.name: ([-1, *t.dims] if batching else t.dims, t.dtype) for t in graph_inputs}
        try:
            samples = load_samples(ctx.loaded.resolve(variant.data), signature, batching=batching)[:ACCURACY_SAMPLES]
        except UsageError as exc:
            raise SpecError(exc.message, file=ctx.loaded.path, key=ctx.key("variant", "data"), hint=exc.hint) from exc
    recipe = describe_recipe(variant)
    try:
        make_variant(original, target, variant, samples=samples, batching=batching, workdir=ctx.workdir / "variant")
    except Exception as exc:
        raise BuildError(
            f"recipe {recipe} failed: {_first_line(exc)}",
            model=model.name,
            step="variant",
            hint="choose another recipe, or remove 'variant:' to serve the original",
        ) from exc
    record: dict[str, Any] = {"recipe": variant.recipe, "per_channel": variant.per_channel}
    if samples:
        budget = model.slo.accuracy if model.slo is not None else None
        mask = budget.mask if budget is not None else None
        try:
            masks = request_masks(samples, mask)
            measured = accuracy(
                run_requests(original, samples, batching=batching),
                run_requests(target, samples, batching=batching),
                masks,
                mask,
            )
        except UsageError as exc:
            key = ctx.key("slo", "accuracy", "mask")
            raise SpecError(exc.message, file=ctx.loaded.path, key=key, hint=exc.hint) from exc
        record["accuracy"] = measured.model_dump(exclude_none=True)
        why = budget.misses(measured) if budget is not None else ""
        if why:
            raise BuildError(
                f"variant {recipe} misses the accuracy budget: {why}",
                model=model.name,
                step="accuracy",
                hint="choose a recipe that holds it ('tritonkit tune --variants' tries them) or relax slo.accuracy",
            )
        ctx.log(f"variant {recipe}: {measured.describe()}")
    else:
        ctx.log(f"variant {recipe} (no data: accuracy not measured; the recipe keeps the original's numerics)")
    ctx.meta["variant"] = record


def add_gpu_accelerator(config: pb.ModelConfig, accelerator: GpuAccelerator) -> None:
    """Render ``optimization { execution_accelerators { gpu_execution_accelerator ... } }``."""
    parameters: dict[str, str] = {}
    if accelerator.name == "tensorrt":
        parameters["precision_mode"] = accelerator.precision_mode
    if accelerator.max_workspace_size_bytes is not None:
        parameters["max_workspace_size_bytes"] = str(accelerator.max_workspace_size_bytes)
    if accelerator.trt_engine_cache_path is not None:
        parameters["trt_engine_cache_enable"] = "true"
        parameters["trt_engine_cache_path"] = accelerator.trt_engine_cache_path
    entry = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name=accelerator.name)
    for key in sorted(parameters):
        entry.parameters[key] = parameters[key]


def _reconcile(
    ctx: BuildContext, what: str, declared: list[TensorSpec] | None, actual: list[TensorSpec]
) -> list[TensorSpec]:
    """Check declared tensors against the graph's; return what goes into the config."""
    if declared is None:
        return actual
    by_name = {t.name: t for t in actual}
    for index, tensor in enumerate(declared):
        graph = by_name.get(tensor.name)
        key = ctx.key(what, index)
        if graph is None:
            hint = did_you_mean(tensor.name, list(by_name)) or f"the graph's {what}: {', '.join(by_name)}"
            raise SpecError(
                f"'{tensor.name}' is not an {what[:-1]} of the ONNX graph",
                file=ctx.loaded.path,
                key=f"{key}.name",
                hint=hint,
            )
        if graph.dtype != tensor.dtype:
            raise SpecError(
                f"dtype {tensor.dtype} does not match the graph's {graph.dtype}",
                file=ctx.loaded.path,
                key=f"{key}.dtype",
                hint=f"set dtype: {graph.dtype}, or remove '{what}' to derive it from the graph",
            )
        if not same_tensor_dims(graph.dims, tensor.dims):
            batch = " (dims exclude the batch dimension when max_batch_size > 0)" if ctx.model.max_batch_size else ""
            raise SpecError(
                f"dims {tensor.dims} do not match the graph's {graph.dims}{batch}",
                file=ctx.loaded.path,
                key=f"{key}.dims",
                hint=f"set dims: {graph.dims}, or remove '{what}' to derive it from the graph",
            )
    # "dims: [1]" for a tensor without dims is how Triton spells it: the graph's [] goes on
    # into the config (which adds the reshape a batching model needs)
    declared = [by_name[t.name] if not by_name[t.name].dims and t.dims == [1] else t for t in declared]
    missing = [name for name in by_name if name not in {t.name for t in declared}]
    if missing and what == "inputs":
        raise SpecError(
            f"the graph also needs input(s) {missing}",
            file=ctx.loaded.path,
            key=ctx.key(what),
            hint="declare every graph input, or remove 'inputs' to derive them",
        )
    return declared


def _external_data(loaded: LoadedSpec, model: OnnxModel, source: Path) -> list[str]:
    """The external data files ``source`` references (relative to its directory), all present.

    Raises:
        SpecError: naming the spec key and the first missing file.
    """
    from tritonkit.build.onnx_io import external_data_files

    if not source.is_file():
        return []  # the loader reports a missing 'file'
    index = loaded.spec.models.index(model)
    try:
        files = external_data_files(source)
    except SpecError as exc:
        raise SpecError(exc.detail, file=loaded.path, key=f"models[{index}].file", hint=exc.hint) from exc
    for rel in files:  # the same rule as every other source: inside the project, symlinks included
        resolved = (source.parent / rel).resolve()
        if not resolved.is_relative_to(loaded.project):
            raise SpecError(
                f"'{source.name}' keeps tensors in external data '{rel}', which resolves to {resolved}, "
                f"outside the project ({loaded.project})",
                file=loaded.path,
                key=f"models[{index}].file",
                hint="sources stay inside the project (the spec's directory, or 'project_root:' above it): "
                "copy the data file in next to the model",
            )
    missing = [rel for rel in files if not (source.parent / rel).is_file()]
    if missing:
        raise SpecError(
            f"'{source.name}' keeps tensors in external data '{missing[0]}', which is missing "
            f"(looked in {source.parent})",
            file=loaded.path,
            key=f"models[{index}].file",
            hint=f"put {', '.join(missing)} next to {source.name} (where the model was saved with it)",
        )
    return files


# Above this many bytes (graph + external data) the early check reads the graph alone: an
# onnxruntime session would hold every weight in memory (several GB for a large model);
# 'tritonkit build --check' / 'verify --load' load it in Triton instead.
_SESSION_CHECK_BYTES = 256 << 20


def _quiet_session(ort: Any) -> Any:
    """Session options that keep onnxruntime's own warnings (an unused initializer removed, …)
    off the user's terminal: a load that fails still raises, with its message in our error."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors and fatal only
    return options


def _check_loads(path: Path, ctx: BuildContext, *, source_key: str, external: Sequence[str] = ()) -> None:
    """Fail early, naming the spec key, when onnxruntime (or, for large models, onnx) cannot load the file."""
    import onnxruntime as ort

    size = path.stat().st_size + sum((path.parent / rel).stat().st_size for rel in external)
    try:
        if size > _SESSION_CHECK_BYTES:
            import onnx

            onnx.checker.check_model(str(path))
        else:
            ort.InferenceSession(str(path), _quiet_session(ort), providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(
            f"onnxruntime cannot load '{path.name}': {first}",
            file=ctx.loaded.path,
            key=ctx.key(source_key),
            hint=f"check the file: python -c \"import onnx; onnx.checker.check_model('{path}')\"",
        ) from exc


# --------------------------------------------------------------------------- torch export


def export_from_torch(ctx: BuildContext, export: TorchExport, target: Path) -> None:
    """Export the factory's module to ``target`` and check it against PyTorch.

    Raises:
        BuildError: when the factory fails, the export fails, or outputs disagree; the
            working directory with the inputs that reproduce it is kept.
    """
    from tritonkit.errors import require

    torch: Any = require("torch", "torch")
    model = ctx.model
    workdir = ctx.workdir
    module = _call_factory(ctx, export, torch)
    batched = model.max_batch_size > 0
    names = [t.name for t in export.inputs]
    dynamic_axes: dict[str, dict[int, str]] = {}
    for tensor in export.inputs:
        axes = {i + (1 if batched else 0): f"{tensor.name}_dim{i}" for i, d in enumerate(tensor.dims) if d == -1}
        if batched:
            axes[0] = "batch"
        if axes:
            dynamic_axes[tensor.name] = axes
    if batched:
        for name in export.outputs:
            dynamic_axes[name] = {0: "batch"}

    rng = np.random.default_rng(export.seed)
    example = _example(export, 2 if batched else None, rng)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is chosen on purpose (the dynamo one needs onnxscript);
            # its deprecation notice is not the user's concern.
            # Its tracing and operator notes (a tensor turned into a Python bool in transformers'
            # mask code, advanced indexing "may be wrong for negative indices", the exporter's
            # own deprecation) must not become errors where warnings are errors: the numeric
            # check against PyTorch below is what decides whether the export is right.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(torch.from_numpy(a) for a in example),
                str(target),
                input_names=names,
                output_names=list(export.outputs),
                dynamic_axes=dynamic_axes or None,
                opset_version=export.opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise BuildError(
            f"torch.onnx.export failed: {_first_line(exc)}",
            model=model.name,
            step="export",
            hint=f"run the factory '{export.factory}' by hand; working directory kept at {workdir}",
            workdir=workdir,
        ) from exc
    ctx.log(f"exported {export.factory} (opset {export.opset})")
    _compare(ctx, export, module, target, torch, rng, batched)


def _call_factory(ctx: BuildContext, export: TorchExport, torch: Any) -> Any:
    path = ctx.loaded.resolve(export.factory_file)
    module_name = f"_tritonkit_factory_{ctx.model.name.replace('-', '_').replace('.', '_')}"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        source = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(source)
        factory = getattr(source, export.factory_function, None)
        if factory is None:
            raise SpecError(
                f"'{export.factory_file}' defines no '{export.factory_function}'",
                file=ctx.loaded.path,
                key=ctx.key("export", "factory"),
                hint="name a function in that file that returns a torch.nn.Module",
            )
        torch.manual_seed(export.seed)
        module = factory()
    except (SpecError, BuildError):
        raise
    except Exception as exc:
        raise BuildError(
            f"factory '{export.factory}' raised {type(exc).__name__}: {_first_line(exc)}",
            model=ctx.model.name,
            step="factory",
            hint=f"run it by hand: python -c \"import runpy; runpy.run_path('{path}')['{export.factory_function}']()\"",
        ) from exc
    finally:
        sys.path.remove(str(path.parent))
    if not isinstance(module, torch.nn.Module):
        raise BuildError(
            f"factory '{export.factory}' returned {type(module).__name__}, not a torch.nn.Module",
            model=ctx.model.name,
            step="factory",
            hint="return the model instance from the factory function",
        )
    return module.eval()


def _example(export: TorchExport, batch: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    arrays = []
    for tensor in export.inputs:
        shape = tuple(d if d > 0 else export.example_size for d in tensor.dims)
        if batch is not None:
            shape = (batch, *shape)
        arrays.append(dtypes.random_array(tensor.dtype, shape, rng))
    return arrays


def _compare(
    ctx: BuildContext,
    export: TorchExport,
    module: Any,
    target: Path,
    torch: Any,
    rng: np.random.Generator,
    batched: bool,
) -> None:
    """Run PyTorch and onnxruntime on one fresh random batch; fail on disagreement."""
    import onnxruntime as ort

    sample = _example(export, 3 if batched else None, rng)  # another batch size than the export's
    try:
        session = ort.InferenceSession(str(target), _quiet_session(ort), providers=["CPUExecutionProvider"])
        got = session.run(list(export.outputs), {t.name: a for t, a in zip(export.inputs, sample)})
    except Exception as exc:
        raise BuildError(
            f"onnxruntime cannot run the exported model: {_first_line(exc)}",
            model=ctx.model.name,
            step="check",
            hint=f"inspect {target} (working directory kept at {ctx.workdir})",
            workdir=ctx.workdir,
        ) from exc
    with torch.no_grad():
        expected = module(*(torch.from_numpy(a) for a in sample))
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    for name, onnx_out, torch_out in zip(export.outputs, got, expected):
        want = torch_out.detach().numpy()
        if onnx_out.shape != want.shape:
            raise BuildError(
                f"output '{name}' has shape {onnx_out.shape} in onnxruntime but {want.shape} in PyTorch",
                model=ctx.model.name,
                step="check",
                hint="check the dynamic axes of the export",
                workdir=ctx.workdir,
            )
        if np.issubdtype(want.dtype, np.floating):
            diff = np.abs(onnx_out.astype(np.float64) - want.astype(np.float64))
            limit = export.atol + export.rtol * np.abs(want.astype(np.float64))
            if np.any(diff > limit):
                raise BuildError(
                    f"output '{name}' differs from PyTorch by up to {diff.max():.3g} "
                    f"(rtol={export.rtol}, atol={export.atol})",
                    model=ctx.model.name,
                    step="check",
                    hint="fix the export (an unsupported op, Python state traced as a constant?) "
                    "or raise export.rtol/atol in the spec if the difference is expected",
                    workdir=ctx.workdir,
                )
        elif not np.array_equal(onnx_out, want):
            raise BuildError(
                f"output '{name}' differs from PyTorch",
                model=ctx.model.name,
                step="check",
                hint="fix the model's export",
                workdir=ctx.workdir,
            )
    ctx.log(f"onnxruntime matches PyTorch on a batch of {sample[0].shape[0] if batched else 1}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
