"""The tritonkit.yaml spec: pydantic models, loading, and errors that point at the key.

A spec names a repository and lists its models. Each model has a ``kind`` (``onnx``,
``python``, ``ensemble``, ``llm`` or ``tensorrt``) and the settings Triton's model
configuration takes. Paths are relative to the spec file. Every problem becomes a
:class:`~tritonkit.errors.SpecError` naming the file, line, key path and a fix; unknown keys
get a "did you mean".

Example:
    >>> spec = load_spec(Path("model_repository/tritonkit.yaml"))
    >>> [m.name for m in spec.models]
    ['classifier', 'postprocess']
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from . import dtypes
from .errors import SpecError, did_you_mean

SPEC_FILE = "tritonkit.yaml"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One input or output: name, dtype and dims *without* the batch dimension (-1 = variable)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
    dtype: str
    dims: list[int]
    optional: bool = False

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        return dtypes.canonical(value)

    @field_validator("dims")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        if any(d == 0 or d < -1 for d in value):
            raise ValueError("dims must be positive, or -1 for a variable dimension")
        return value


class QueuePolicy(_Strict):
    """Triton's ``ModelQueuePolicy``."""

    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    default_timeout_microseconds: int = Field(0, ge=0)
    allow_timeout_override: bool = False
    max_queue_size: int = Field(0, ge=0)


class DynamicBatching(_Strict):
    """Triton's ``ModelDynamicBatching`` (the settings ``tritonkit tune`` searches)."""

    max_queue_delay_microseconds: int = Field(0, ge=0)
    preferred_batch_size: list[Annotated[int, Field(gt=0)]] = []
    preserve_ordering: bool = False
    default_queue_policy: QueuePolicy | None = None


class InstanceGroup(_Strict):
    """Triton's ``ModelInstanceGroup``: how many copies of the model run, and where."""

    count: int = Field(1, ge=1)
    kind: Literal["KIND_CPU", "KIND_GPU", "KIND_AUTO", "KIND_MODEL"] = "KIND_CPU"
    gpus: list[Annotated[int, Field(ge=0)]] | None = None


class Warmup(_Strict):
    """A warm-up request Triton sends before the model is marked ready (generated data)."""

    name: str = "warmup"
    batch_size: int = Field(1, ge=1)
    data: Literal["random", "zero"] = "random"
    count: int = Field(1, ge=1)


class TorchExport(_Strict):
    """Export an ONNX model from a PyTorch factory ``path/to/file.py:function``.

    The factory is called with no arguments after ``torch.manual_seed(seed)`` and must return
    an ``nn.Module``. Example inputs are random tensors of the declared dtype and dims (``-1``
    becomes ``example_size``), with a dynamic batch axis added when ``max_batch_size > 0``.
    After export the model runs in onnxruntime and PyTorch on the same input, and the build
    fails when ``|onnx - torch| > atol + rtol * |torch|`` anywhere. ``depends`` lists other
    files (globs, relative to the spec) whose changes must trigger a re-export.
    """

    factory: str = Field(pattern=r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$")
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[str] = Field(min_length=1)
    opset: int = Field(17, ge=9, le=23)
    seed: int = 0
    example_size: int = Field(8, ge=1)
    rtol: float = Field(1e-3, ge=0)
    atol: float = Field(1e-5, ge=0)
    depends: list[str] = []

    @property
    def factory_file(self) -> str:
        return self.factory.rsplit(":", 1)[0]

    @property
    def factory_function(self) -> str:
        return self.factory.rsplit(":", 1)[1]


class ModelBase(_Strict):
    """Settings every model kind shares; they map one to one onto Triton's ModelConfig."""

    name: str = Field(pattern=_NAME)
    max_batch_size: int = Field(0, ge=0)
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    dynamic_batching: DynamicBatching | None = None
    instance_group: list[InstanceGroup] = []
    model_warmup: list[Warmup] = []
    parameters: dict[str, str | int | float | bool] = {}

    @model_validator(mode="after")
    def _batching(self) -> ModelBase:
        if self.dynamic_batching is not None and self.max_batch_size == 0:
            raise ValueError("dynamic_batching needs max_batch_size > 0")
        if self.dynamic_batching is not None:
            too_big = [b for b in self.dynamic_batching.preferred_batch_size if b > self.max_batch_size]
            if too_big:
                raise ValueError(f"preferred_batch_size {too_big} exceeds max_batch_size {self.max_batch_size}")
        for warmup in self.model_warmup:
            if self.max_batch_size and warmup.batch_size > self.max_batch_size:
                raise ValueError(f"model_warmup '{warmup.name}' batch_size exceeds max_batch_size")
        return self


class GpuAccelerator(_Strict):
    """ONNX Runtime's TensorRT or CUDA execution provider on GPU instances (``onnxruntime-gpu``).

    Rendered as Triton's ``optimization { execution_accelerators { gpu_execution_accelerator
    { name: ... parameters ... } } }``; the native onnxruntime backend applies it on GPU
    instances (the embedded CPU server has no GPU and ignores it).
    """

    name: Literal["tensorrt", "cuda"] = "tensorrt"
    precision_mode: Literal["FP32", "FP16", "INT8"] = "FP32"
    max_workspace_size_bytes: int | None = Field(None, gt=0)
    trt_engine_cache_path: str | None = None


class OnnxModel(ModelBase):
    """An ONNX model, from an existing ``file`` or exported from PyTorch (``export``)."""

    kind: Literal["onnx"]
    file: str | None = None
    export: TorchExport | None = None
    accelerator: GpuAccelerator | None = None

    @model_validator(mode="after")
    def _one_source(self) -> OnnxModel:
        if (self.file is None) == (self.export is None):
            raise ValueError("give exactly one of 'file' (an .onnx file) or 'export' (a PyTorch factory)")
        return self


class PythonModel(ModelBase):
    """A Triton Python-backend model: a directory with ``model.py`` and declared I/O.

    ``assets`` copies data the model needs into its version directory, so the repository stays
    self-contained: ``{destination: source}`` where destination is relative to the version
    directory and source is a file or directory relative to the spec, or ``package:NAME/sub/path``
    (files an installed Python package ships, e.g. a tokenizer).
    """

    kind: Literal["python"]
    path: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    assets: dict[str, str] = {}

    @field_validator("assets")
    @classmethod
    def _assets(cls, value: dict[str, str]) -> dict[str, str]:
        for dest in value:
            parts = Path(dest).parts
            if not parts or Path(dest).is_absolute() or ".." in parts or dest in ("model.py", "."):
                raise ValueError(f"asset destination '{dest}' must be a relative path inside the version directory")
        return value


class EnsembleStep(_Strict):
    """One step of an ensemble: a model of the same spec and how its tensors are wired.

    ``inputs`` maps the step model's input names to ensemble tensor names; ``outputs`` maps its
    output names to ensemble tensor names (Triton's ``input_map`` / ``output_map``).
    """

    model: str
    inputs: dict[str, str] = Field(min_length=1)
    outputs: dict[str, str] = Field(min_length=1)


class EnsembleModel(ModelBase):
    """Triton's ``ensemble`` platform: ``steps`` run other models of this spec as one model.

    Steps are inline or in ``steps_file`` (a YAML list of steps, relative to the spec; read by
    :func:`load_spec`, which fills ``steps``). The ensemble's inputs (tensors no step produces)
    and their dtypes/dims are derived from the steps that consume them; ``expose`` names the
    ensemble tensors returned to the client (default: every tensor a step produces and no step
    consumes). Wiring is checked at build time against the steps' built configs.
    """

    kind: Literal["ensemble"]
    steps: list[EnsembleStep] | None = Field(None, min_length=1)
    steps_file: str | None = None
    expose: list[str] | None = None

    @model_validator(mode="after")
    def _plain(self) -> EnsembleModel:
        if (self.steps is None) == (self.steps_file is None):
            raise ValueError("give exactly one of 'steps' (inline) or 'steps_file' (e.g. ensembles/<name>.yaml)")
        unsupported = [
            key
            for key, value in (
                ("inputs", self.inputs),
                ("outputs", self.outputs),
                ("dynamic_batching", self.dynamic_batching),
                ("instance_group", self.instance_group),
                ("model_warmup", self.model_warmup),
            )
            if value
        ]
        if unsupported:
            raise ValueError(
                f"an ensemble takes no {', '.join(unsupported)}: inputs and outputs come from its steps "
                "(use 'expose' to pick outputs); batching and instances belong to the step models"
            )
        return self


class TensorRTModel(ModelBase):
    """A TensorRT engine (``model.plan``, platform ``tensorrt_plan``) built from ONNX.

    The ONNX comes from ``onnx`` (a file) or ``from_model`` (an ``onnx`` model of this spec,
    built first). Optimization profiles are derived from ``max_batch_size`` (batch min 1, opt
    ``opt_batch_size`` or max, max ``max_batch_size``) and ``dynamic_dims`` — for each input,
    one ``[min, opt, max]`` per ``-1`` dim in order — or given whole in ``profiles``
    (``[{input: {min: shape, opt: shape, max: shape}}]``, shapes with the batch dim).
    ``int8`` needs ``calibration``: an ``.npz`` with one array per input (first axis = samples).
    Engines are tied to the TensorRT version and GPU compute capability: the lock records both.
    """

    kind: Literal["tensorrt"]
    onnx: str | None = None
    from_model: str | None = None
    fp16: bool = False
    int8: bool = False
    calibration: str | None = None
    workspace_mb: int = Field(1024, ge=16)
    opt_batch_size: int | None = Field(None, ge=1)
    dynamic_dims: dict[str, list[Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=3, max_length=3)]]] = {}
    profiles: list[dict[str, dict[Literal["min", "opt", "max"], list[int]]]] | None = None

    @model_validator(mode="after")
    def _trt(self) -> TensorRTModel:
        if (self.onnx is None) == (self.from_model is None):
            raise ValueError("give exactly one of 'onnx' (an .onnx file) or 'from_model' (an onnx model of this spec)")
        if self.int8 and self.calibration is None:
            raise ValueError("int8 needs 'calibration': an .npz file with sample inputs")
        if self.opt_batch_size and self.opt_batch_size > max(1, self.max_batch_size):
            raise ValueError("opt_batch_size exceeds max_batch_size")
        for name, ranges in self.dynamic_dims.items():
            for low, opt, high in ranges:
                if not low <= opt <= high:
                    raise ValueError(f"dynamic_dims.{name}: need min <= opt <= max (got {[low, opt, high]})")
        return self


class RandomInit(_Strict):
    """A randomly initialised transformers model (no weights can be downloaded for tests/demos).

    Built deterministically from ``seed`` at build time and saved with ``save_pretrained``.
    ``vocab_size`` must cover the byte tokenizer (259 ids: 256 bytes, BOS, EOS, PAD).
    """

    family: Literal["gpt2", "llama"] = "gpt2"
    layers: int = Field(2, ge=1, le=64)
    hidden_size: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    vocab_size: int = Field(259, ge=259)
    max_positions: int = Field(1024, ge=16)
    seed: int = 0

    @model_validator(mode="after")
    def _shape(self) -> RandomInit:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        return self


class LlmScheduler(_Strict):
    """The in-flight batching engine's limits (see python_backends/llm/engine.py).

    ``mode: static`` is a benchmark baseline: Triton's dynamic batcher hands a batch to
    ``generate()``, which answers when its longest sequence ends (needs max_batch_size > 0).
    """

    mode: Literal["inflight", "static"] = "inflight"
    max_running: Annotated[int, Field(ge=1)] = 8
    max_batched_tokens: Annotated[int, Field(ge=1)] = 2048
    kv_cache_tokens: Annotated[int, Field(ge=16)] = 65536
    max_queue: Annotated[int, Field(ge=0)] = 64
    preemption: Literal["recompute", "no_evict"] = "recompute"


class LlmModel(ModelBase):
    """A causal language model served with token streaming and in-flight batching.

    The model is a local transformers directory (``path``) or ``random_init``. ``tokenizer`` is
    ``auto`` (the model directory's own tokenizer; the byte tokenizer for ``random_init``),
    ``byte``, or a directory of tokenizer files. Inputs and outputs are fixed: the Triton vLLM
    backend's contract (text_input, stream, sampling_parameters, … → text_output, …).
    """

    kind: Literal["llm"]
    path: str | None = None
    random_init: RandomInit | None = None
    tokenizer: str = "auto"
    scheduler: LlmScheduler = LlmScheduler()
    device: Literal["cpu", "cuda", "auto"] = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    threads: int | None = Field(None, ge=1)
    default_max_tokens: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _llm(self) -> LlmModel:
        if (self.path is None) == (self.random_init is None):
            raise ValueError("give exactly one of 'path' (a transformers model directory) or 'random_init'")
        if self.inputs or self.outputs:
            raise ValueError("an llm model takes no inputs/outputs: they are the vLLM backend's contract")
        if self.model_warmup:
            raise ValueError("an llm model takes no model_warmup (send a short generate request instead)")
        if self.random_init is not None and self.tokenizer not in ("auto", "byte"):
            raise ValueError("a random_init model uses the byte tokenizer: leave 'tokenizer' at auto or byte")
        if self.scheduler.mode == "inflight" and (self.max_batch_size or self.dynamic_batching):
            raise ValueError(
                "an in-flight llm batches itself: keep max_batch_size 0 and no dynamic_batching "
                "(scheduler.mode: static is the baseline that uses Triton's batcher)"
            )
        if self.scheduler.mode == "static" and not self.max_batch_size:
            raise ValueError("scheduler.mode static needs max_batch_size > 0 and dynamic_batching")
        return self


Model = Annotated[OnnxModel | PythonModel | EnsembleModel | LlmModel | TensorRTModel, Field(discriminator="kind")]


class Resources(_Strict):
    """Kubernetes container resources (quantities as strings, e.g. ``"2"``, ``"4Gi"``)."""

    requests: dict[str, str] = {"cpu": "1", "memory": "2Gi"}
    limits: dict[str, str] = {"cpu": "2", "memory": "4Gi"}


class Environment(_Strict):
    """Where releases are deployed. ``kind: kserve`` renders a ServingRuntime + InferenceService.

    ``runtime_image`` must be pinned by digest (``…@sha256:…``): a tag could change under a
    running release. Credentials never go here; clusters come from the kubeconfig ``context``.
    """

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    kind: Literal["kserve"] = "kserve"
    namespace: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    context: str | None = None
    mode: Literal["Serverless", "RawDeployment"] = "RawDeployment"
    runtime_image: str = Field(pattern=r"^[^@\s]+@sha256:[0-9a-f]{64}$")
    resources: Resources = Resources()
    gpus: int = Field(0, ge=0)
    shm_size: str = "1Gi"


class Spec(_Strict):
    """The whole tritonkit.yaml."""

    version: Literal[1] = 1
    name: str = Field(pattern=_NAME)
    models: list[Model] = Field(min_length=1)
    environments: list[Environment] = []

    def environment(self, name: str) -> Environment:
        """The environment called ``name``; a SpecError with a suggestion otherwise."""
        for env in self.environments:
            if env.name == name:
                return env
        names = [e.name for e in self.environments]
        raise SpecError(
            f"no environment named '{name}' in the spec",
            hint=did_you_mean(name, names) or f"declare it under 'environments:' (known: {', '.join(names) or 'none'})",
        )

    @model_validator(mode="after")
    def _unique(self) -> Spec:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"model name '{model.name}' appears twice")
            seen.add(model.name)
        names = [env.name for env in self.environments]
        twice = sorted({n for n in names if names.count(n) > 1} | ({"local"} & set(names)))
        if twice:
            raise ValueError(f"environment name '{twice[0]}' appears twice or is reserved ('local')")
        return self

    def model(self, name: str) -> ModelBase:
        """The model called ``name``; a SpecError with a suggestion otherwise."""
        for model in self.models:
            if model.name == name:
                return model
        names = [m.name for m in self.models]
        raise SpecError(f"no model named '{name}'", hint=did_you_mean(name, names) or f"models: {', '.join(names)}")


class LoadedSpec(BaseModel):
    """A validated spec and the file it came from (paths resolve against ``root``)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: Spec
    path: Path

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()


# --------------------------------------------------------------------------- loading


def load_spec(path: Path) -> LoadedSpec:
    """Read, validate and check the files a spec names.

    Args:
        path: the tritonkit.yaml file.

    Returns:
        The validated spec with its location.

    Raises:
        SpecError: for unreadable YAML, schema violations and missing files; the message
            names the file, line and key path, and the hint says how to fix it.
    """
    if not path.is_file():
        raise SpecError(
            "file not found", file=path, hint="run 'tritonkit init' to write a starter spec, or pass -f PATH"
        )
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
        root_node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"invalid YAML: {problem}", file=where, hint="fix the YAML syntax at that line") from exc
    if not isinstance(data, dict):
        raise SpecError(
            "the spec must be a mapping with 'name' and 'models'", file=path, hint="see 'tritonkit init' for a starter"
        )
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc, path, root_node) from None
    loaded = LoadedSpec(spec=spec, path=path.resolve())
    _check_files(loaded, root_node)
    return _with_step_files(loaded, root_node)


def _check_files(loaded: LoadedSpec, node: yaml.Node | None) -> None:
    for index, model in enumerate(loaded.spec.models):
        if isinstance(model, OnnxModel) and model.file is not None:
            _require_file(loaded, node, ("models", index, "file"), model.file, "an existing .onnx file")
        elif isinstance(model, OnnxModel) and model.export is not None:
            key: tuple[Any, ...] = ("models", index, "export", "factory")
            _require_file(loaded, node, key, model.export.factory_file, "the Python file that defines the factory")
        elif isinstance(model, PythonModel):
            key = ("models", index, "path")
            directory = loaded.resolve(model.path)
            if not (directory / "model.py").is_file():
                raise SpecError(
                    f"'{model.path}' has no model.py",
                    file=_where(loaded.path, node, key),
                    key=_dotted(key),
                    hint="point 'path' at a directory containing the Triton Python backend model.py",
                )
            for dest, source in model.assets.items():
                if asset_path(loaded, source) is None:
                    package = source.removeprefix("package:").split("/")[0]
                    fix = f"pip install {package}" if source.startswith("package:") else "fix the path (spec-relative)"
                    raise SpecError(
                        f"asset '{dest}': source '{source}' not found",
                        file=_where(loaded.path, node, ("models", index, "assets", dest)),
                        key=_dotted(("models", index, "assets", dest)),
                        hint=fix,
                    )
        elif isinstance(model, TensorRTModel):
            for field_name, rel in (("onnx", model.onnx), ("calibration", model.calibration)):
                if rel is not None:
                    _require_file(loaded, node, ("models", index, field_name), rel, f"an existing {field_name} file")
            if model.from_model is not None:
                by_name = {m.name: m for m in loaded.spec.models}
                if not isinstance(by_name.get(model.from_model), OnnxModel):
                    key = ("models", index, "from_model")
                    raise SpecError(
                        f"'{model.from_model}' is not an onnx model of this spec",
                        file=_where(loaded.path, node, key),
                        key=_dotted(key),
                        hint=did_you_mean(model.from_model, [n for n, m in by_name.items() if isinstance(m, OnnxModel)])
                        or "name a model with kind: onnx",
                    )
        elif isinstance(model, LlmModel):
            for field_name, rel, need in (("path", model.path, "config.json"), ("tokenizer", model.tokenizer, None)):
                if rel is None or (field_name == "tokenizer" and rel in ("auto", "byte")):
                    continue
                key = ("models", index, field_name)
                directory = loaded.resolve(rel)
                if not directory.is_dir() or (need and not (directory / need).is_file()):
                    raise SpecError(
                        f"'{rel}' is not a {'transformers model' if need else 'tokenizer'} directory",
                        file=_where(loaded.path, node, key),
                        key=_dotted(key),
                        hint="point it at a local directory written by save_pretrained() (no downloads here)",
                    )


def asset_path(loaded: LoadedSpec, source: str) -> Path | None:
    """Where an asset source lives (``package:NAME/sub`` or a spec-relative path); None if absent."""
    if source.startswith("package:"):
        import importlib.util

        name, _, sub = source.removeprefix("package:").partition("/")
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(list(found.submodule_search_locations)[0]) / sub
    else:
        path = loaded.resolve(source)
    return path if path.exists() else None


def _with_step_files(loaded: LoadedSpec, node: yaml.Node | None) -> LoadedSpec:
    """Read every ensemble's ``steps_file`` into its ``steps`` (errors name that file and key)."""
    models: list[Any] = []
    for index, model in enumerate(loaded.spec.models):
        if isinstance(model, EnsembleModel) and model.steps_file is not None:
            key: tuple[Any, ...] = ("models", index, "steps_file")
            _require_file(loaded, node, key, model.steps_file, "a YAML list of ensemble steps")
            path = loaded.resolve(model.steps_file)
            try:
                data = yaml.safe_load(path.read_text())
                steps = TypeAdapter(list[EnsembleStep]).validate_python(data)
            except yaml.YAMLError as exc:
                raise SpecError(f"invalid YAML: {exc}", file=path, hint="fix the YAML syntax") from None
            except ValidationError as exc:
                error = exc.errors()[0]
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
                raise SpecError(
                    error["msg"],
                    file=path,
                    key=f"steps{where}",
                    hint="each step needs 'model', 'inputs' {step input: tensor} and 'outputs' {step output: tensor}",
                ) from None
            if not steps:
                raise SpecError("no steps", file=path, hint="list at least one step")
            model = model.model_copy(update={"steps": steps})
        models.append(model)
    spec = loaded.spec.model_copy(update={"models": models})
    return LoadedSpec(spec=spec, path=loaded.path)


def _require_file(loaded: LoadedSpec, node: yaml.Node | None, key: tuple[Any, ...], rel: str, what: str) -> None:
    if not loaded.resolve(rel).is_file():
        raise SpecError(
            f"file '{rel}' not found (relative to {loaded.root})",
            file=_where(loaded.path, node, key),
            key=_dotted(key),
            hint=f"set it to {what}",
        )


def _spec_error(exc: ValidationError, path: Path, node: yaml.Node | None) -> SpecError:
    """Turn the first pydantic error into a SpecError with line, key path and hint."""
    error = exc.errors()[0]
    raw_loc = tuple(error["loc"])
    loc = tuple(part for part in raw_loc if part not in ("onnx", "python", "ensemble", "llm", "tensorrt"))
    key = _dotted(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        unknown = str(loc[-1])
        known = _known_fields(raw_loc[:-1])
        suggestion = did_you_mean(unknown, known)
        return SpecError(
            f"unknown key '{unknown}'",
            file=_where(path, node, loc),
            key=key,
            hint=suggestion or f"allowed keys here: {', '.join(sorted(known))}",
        )
    if kind == "missing":
        return SpecError("required key is missing", file=_where(path, node, loc[:-1]), key=key, hint=f"add '{loc[-1]}'")
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        return SpecError(
            "'kind' must be one of: onnx, python, ensemble, llm, tensorrt",
            file=_where(path, node, loc),
            key=f"{key}.kind" if key else "kind",
            hint="set kind: onnx (an .onnx file or a PyTorch export), python (a model.py directory) "
            "ensemble (steps over other models), llm (a causal language model with token streaming) "
            "or tensorrt (an engine built from ONNX)",
        )
    message = error["msg"].removeprefix("Value error, ")
    return SpecError(
        f"{message} (got {error.get('input')!r})" if kind != "value_error" else message,
        file=_where(path, node, loc),
        key=key,
        hint=_hint_for(kind, loc),
    )


def _hint_for(kind: str, loc: tuple[Any, ...]) -> str:
    field = str(loc[-1]) if loc else ""
    if field == "dtype":
        return f"use one of {', '.join(dtypes.CANONICAL)}"
    if kind.startswith("int") or kind.startswith("greater") or kind.startswith("less"):
        return f"set '{field}' to a whole number in range"
    if kind == "string_pattern_mismatch":
        return "names use letters, digits, '_', '.', '-' (factories: 'path/file.py:function')"
    if kind.startswith("list"):
        return f"'{field}' takes a YAML list"
    return "see the spec reference in README.md"


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``loc`` (walks the pydantic models, following 'kind' tags)."""
    cls: Any = Spec
    tags = {
        "onnx": OnnxModel,
        "python": PythonModel,
        "ensemble": EnsembleModel,
        "llm": LlmModel,
        "tensorrt": TensorRTModel,
    }
    for part in loc:
        if isinstance(part, int):
            continue
        if part in tags:
            cls = tags[part]
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        cls = _model_in(annotation)
        if cls is None:
            return []
    return list(cls.model_fields) if cls is not None else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _where(path: Path, node: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    """``file:line`` of the deepest YAML node along ``loc``."""
    line = None
    current = node
    for part in loc:
        if current is None:
            break
        line = current.start_mark.line + 1
        current = _child(current, part)
    if current is not None:
        line = current.start_mark.line + 1
    return f"{path}:{line}" if line else str(path)


def _child(node: yaml.Node, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == part:
                return value_node
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None
