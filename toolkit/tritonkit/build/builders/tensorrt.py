"""Builder for ``kind: tensorrt``: a TensorRT engine from ONNX, with its build facts in the lock.

What runs where:

- Pure, tested everywhere: :func:`derive_profiles` (min/opt/max shapes from
  ``max_batch_size``, ``opt_batch_size`` and ``dynamic_dims``, or the spec's ``profiles``),
  :func:`engine_problems` (does an engine's lock entry fit this TensorRT and GPU?), the
  ``tensorrt_plan`` config, and :func:`preflight`'s refusal when TensorRT or a GPU is missing.
- Needs TensorRT's Python API and an NVIDIA GPU: :func:`build_engine` (parse ONNX, profiles,
  fp16/int8 flags, workspace limit, timing cache) — tests marked ``gpu``.

Engines are not bit-reproducible (TensorRT picks kernels by timing), so the lock marks the
plan ``reproducible: false`` and records the TensorRT version, GPU name and compute capability;
the cache key is ONNX inputs + build settings + TensorRT version + compute capability. The timing
cache lives in the build cache (``<cache>/tensorrt-timing/``) so rebuilds are faster and pick
the same kernels more often.

Example:
    >>> derive_profiles([TensorSpec(name="x", dtype="FP32", dims=[-1, 4])], 32, None, {"x": [[1, 8, 64]]}, None)
    [{'x': {'min': [1, 1, 4], 'opt': [32, 8, 4], 'max': [32, 64, 4]}}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.build.builders.base import VERSION, BuildContext
from tritonkit.build.engines import Runtime, major_version, runtime
from tritonkit.build.modelconfig import model_config
from tritonkit.errors import BuildError, SpecError
from tritonkit.spec.schema import InstanceGroup, LoadedSpec, ModelBase, TensorRTModel, TensorSpec

PLAN_FILE = "model.plan"
TIMING_DIR = "tensorrt-timing"

Profiles = list[dict[str, dict[str, list[int]]]]


def preflight(local: Runtime, model: str, precision: str = "fp32") -> None:
    """Refuse before anything is built when TensorRT or a GPU is missing, or cannot honour ``precision``.

    TensorRT 11 builds strongly typed networks only: ``BuilderFlag.FP16``/``INT8`` and the INT8
    calibrators are gone (read off the ``tensorrt-cu13`` 11.4 bindings), so precision comes from
    the ONNX model's own types there. ``fp16: true`` / ``int8: true`` are TensorRT 10 settings
    and are refused on 11 rather than failing halfway through a build.

    Raises:
        BuildError: naming what is missing, with the ways forward in the hint.
    """
    missing = [what for what, ok in (("TensorRT", local.tensorrt), ("an NVIDIA GPU", local.gpu_name)) if not ok]
    if missing:
        raise BuildError(
            f"kind: tensorrt needs {' and '.join(missing)}, which this machine lacks",
            model=model,
            step="preflight",
            hint="pip install 'tritonkit[tensorrt]', or build on a GPU host, or pass --skip-kind tensorrt",
        )
    if precision != "fp32" and major_version(local.tensorrt) >= 11:
        raise BuildError(
            f"{precision}: true needs TensorRT 10; TensorRT {local.tensorrt} builds strongly typed networks only",
            model=model,
            step="preflight",
            hint="pip install 'tritonkit[tensorrt]' (TensorRT 10), or drop the flag and give an ONNX model "
            "already in fp16 / with Q/DQ nodes (TensorRT Model Optimizer)",
        )


def precision_of(model: TensorRTModel) -> str:
    """``int8``, ``fp16`` or ``fp32``: the builder flags the spec asks for."""
    return "int8" if model.int8 else "fp16" if model.fp16 else "fp32"


def derive_profiles(
    inputs: list[TensorSpec],
    max_batch_size: int,
    opt_batch_size: int | None,
    dynamic_dims: dict[str, list[list[int]]],
    explicit: Profiles | None,
) -> Profiles:
    """One optimization profile (``{input: {min, opt, max}}``, shapes with the batch dim).

    Raises:
        SpecError: a dynamic dim without a range, ranges for an unknown input, or an explicit
            profile that misses an input or has the wrong rank.
    """
    names = [t.name for t in inputs]
    unknown = sorted(set(dynamic_dims) - set(names)) + sorted(
        {n for profile in explicit or [] for n in profile} - set(names)
    )
    if unknown:
        raise SpecError(f"tensorrt profiles name unknown input '{unknown[0]}'", hint=f"inputs: {', '.join(names)}")
    batched = max_batch_size > 0
    if explicit is not None:
        for profile in explicit:
            for tensor in inputs:
                if tensor.name not in profile:
                    raise SpecError(f"profile misses input '{tensor.name}'", hint="give min/opt/max for every input")
                rank = len(tensor.dims) + (1 if batched else 0)
                for which, shape in profile[tensor.name].items():
                    if len(shape) != rank:
                        raise SpecError(
                            f"profile {which} shape of '{tensor.name}' has rank {len(shape)}, expected {rank}",
                            hint="shapes include the batch dimension when max_batch_size > 0",
                        )
        return [{n: {k: list(v) for k, v in p.items()} for n, p in profile.items()} for profile in explicit]
    derived: dict[str, dict[str, list[int]]] = {}
    for tensor in inputs:
        ranges = list(dynamic_dims.get(tensor.name, []))
        variable = sum(1 for d in tensor.dims if d == -1)
        if len(ranges) != variable:
            raise SpecError(
                f"input '{tensor.name}' has {variable} dynamic dim(s) but dynamic_dims gives {len(ranges)}",
                hint=f"set dynamic_dims.{tensor.name}: one [min, opt, max] per -1 dim (in order)",
            )
        shapes: dict[str, list[int]] = {"min": [], "opt": [], "max": []}
        if batched:
            shapes["min"].append(1)
            shapes["opt"].append(opt_batch_size or max_batch_size)
            shapes["max"].append(max_batch_size)
        for dim in tensor.dims:
            low, opt, high = ranges.pop(0) if dim == -1 else (dim, dim, dim)
            shapes["min"].append(low)
            shapes["opt"].append(opt)
            shapes["max"].append(high)
        derived[tensor.name] = shapes
    return [derived]


class TensorRTBuilder:
    """Builds ``model.plan`` from ONNX and renders a ``tensorrt_plan`` config."""

    kind = "tensorrt"

    def input_files(self, loaded: LoadedSpec, model: ModelBase) -> list[Path]:
        assert isinstance(model, TensorRTModel)
        files = [loaded.resolve(model.calibration)] if model.calibration else []
        if model.onnx is not None:
            return [loaded.resolve(model.onnx), *files]
        from tritonkit.build.builders.onnx import OnnxBuilder

        source = loaded.spec.model(model.from_model or "")  # an onnx model (checked by the loader)
        return [*OnnxBuilder().input_files(loaded, source), *files]

    def tool_versions(self, model: ModelBase) -> dict[str, str]:
        local = runtime()
        return {"tensorrt": local.tensorrt or "missing", "compute_capability": local.compute_capability or "none"}

    def preflight(self, model: ModelBase) -> None:
        assert isinstance(model, TensorRTModel)
        preflight(runtime(), model.name, precision_of(model))

    def build(self, ctx: BuildContext, model_dir: Path) -> pb.ModelConfig:
        from tritonkit.build.onnx_io import graph_io

        model = ctx.model
        assert isinstance(model, TensorRTModel)
        local = runtime()
        preflight(local, model.name, precision_of(model))
        source = self._onnx(ctx, model)
        inputs, outputs = graph_io(source, model.max_batch_size, ctx=ctx)
        explicit: Profiles | None = None
        if model.profiles is not None:
            explicit = [{n: {str(k): v for k, v in shapes.items()} for n, shapes in p.items()} for p in model.profiles]
        profiles = derive_profiles(inputs, model.max_batch_size, model.opt_batch_size, model.dynamic_dims, explicit)
        target = model_dir / VERSION / PLAN_FILE
        target.parent.mkdir(parents=True)
        timing = ctx.cache_dir / TIMING_DIR / f"trt{local.tensorrt}-sm{local.compute_capability}.cache"
        build_engine(source, target, model, profiles, timing, ctx)
        ctx.meta["engine"] = {
            "tensorrt": local.tensorrt,
            "gpu": local.gpu_name,
            "compute_capability": local.compute_capability,
            "reproducible": False,
            "profiles": profiles,
            "precision": precision_of(model),
        }
        return tensorrt_config(model, inputs, outputs)

    def _onnx(self, ctx: BuildContext, model: TensorRTModel) -> Path:
        if model.onnx is not None:
            return ctx.loaded.resolve(model.onnx)
        built = ctx.built.get(model.from_model or "")
        if built is None:
            raise BuildError(
                f"'{model.from_model}' was not built before '{model.name}'",
                model=model.name,
                step="onnx",
                hint="list the onnx model before the tensorrt model in the spec",
            )
        return built / VERSION / "model.onnx"


def tensorrt_config(model: TensorRTModel, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> pb.ModelConfig:
    """The ``tensorrt_plan`` config (pure): I/O from the ONNX graph, GPU instances by default."""
    groups = model.instance_group or [InstanceGroup(count=1, kind="KIND_GPU")]
    with_groups = model.model_copy(update={"instance_group": groups})
    config = model_config(with_groups, backend="", inputs=inputs, outputs=outputs)
    config.ClearField("backend")
    config.platform = "tensorrt_plan"
    return config


def build_engine(
    source: Path, target: Path, model: TensorRTModel, profiles: Profiles, timing: Path, ctx: BuildContext
) -> None:
    """Parse ``source`` with TensorRT, build with ``profiles`` and flags, write the plan to ``target``."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch only (TensorRT 10); strongly typed always (11)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(source.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(
            f"TensorRT cannot parse the ONNX model: {errors}",
            model=model.name,
            step="parse",
            hint="check the opset and operators against TensorRT's ONNX support matrix",
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, model.workspace_mb << 20)
    if model.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if model.int8:
        assert model.calibration is not None
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(trt, ctx.loaded.resolve(model.calibration), timing.parent)
    for shapes in profiles:
        profile = builder.create_optimization_profile()
        for name, ranges in shapes.items():
            profile.set_shape(name, ranges["min"], ranges["opt"], ranges["max"])
        config.add_optimization_profile(profile)
        if model.int8:
            config.set_calibration_profile(profile)
    timing.parent.mkdir(parents=True, exist_ok=True)
    cache = config.create_timing_cache(timing.read_bytes() if timing.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    ctx.log(
        f"building engine ({precision_of(model)}, "
        f"workspace {model.workspace_mb} MiB, timing cache {'hit' if timing.is_file() else 'new'})"
    )
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError(
            "TensorRT could not build the engine (see the log above)",
            model=model.name,
            step="engine",
            hint="raise workspace_mb, or narrow the profiles",
        )
    target.write_bytes(bytes(plan))
    timing.write_bytes(bytes(config.get_timing_cache().serialize()))


def _calibrator(trt: Any, data: Path, cache_dir: Path) -> Any:
    """An entropy calibrator over the ``.npz`` samples, one sample per batch (device memory via torch)."""
    import numpy as np
    import torch

    arrays = dict(np.load(data))
    count = min(len(a) for a in arrays.values())
    cache_file = cache_dir / f"calibration-{data.stem}.cache"

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.index = 0
            self.buffers: dict[str, Any] = {}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= count:
                return None
            pointers = []
            for name in names:
                tensor = torch.from_numpy(np.ascontiguousarray(arrays[name][self.index : self.index + 1])).cuda()
                self.buffers[name] = tensor  # keep it alive until the next batch
                pointers.append(int(tensor.data_ptr()))
            self.index += 1
            return pointers

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            cache_file.write_bytes(bytes(cache))

    return Calibrator()


__all__ = [
    "PLAN_FILE",
    "TensorRTBuilder",
    "build_engine",
    "derive_profiles",
    "precision_of",
    "preflight",
    "tensorrt_config",
]
