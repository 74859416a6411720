"""The tritonkit.yaml schema: pydantic models for a spec and its models.

A spec names a repository and lists its models. Each model has a ``kind`` (``onnx``,
``python``, ``ensemble``, ``llm`` or ``tensorrt``) and the settings Triton's model
configuration takes. Paths are relative to the spec file; :mod:`tritonkit.spec.loader` reads
and validates a file into these models.

This module is longer than most (about 490 lines) on purpose: it is the spec's one schema,
every kind's model side by side in the discriminated union, so a reader sees the whole file
format in one place. It holds declarations and field checks only; loading lives in the loader.

Example:
    >>> spec = Spec.model_validate({"repository": "demo", "models": [{"name": "m", "kind": "python"}]})
    >>> spec.model("m").kind
    'python'

Length: about 560 lines: the pydantic models of a whole spec, one per kind plus the
environments; the JSON Schema and the spec reference are generated from them, so they stay in
one place (the intent's records are ``intent.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tritonkit.errors import UsageError, did_you_mean
from tritonkit.spec import dtypes
from tritonkit.spec.intent import Capacity, Slo

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Names become directory names (dist/<name>-<digest>, <model>/), image and Kubernetes names: a
# file name holds 255 bytes; 128 leaves room for the digest suffix and is longer than any real one.
_NAME_MAX = 128


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One input or output: name, dtype and dims *without* the batch dimension (-1 = variable).

    ``name`` is any name Triton accepts: Triton's config check refuses only an empty name, and
    exporters produce names such as ``0``, ``input.1``, ``onnx::Gemm_0`` or ``encoder/x:0``
    (config.pbtxt quotes them). ``dims: []`` is a scalar per batch row (or a rank-0 tensor with
    ``max_batch_size: 0``); the config renders it as ``dims: [1]`` with ``reshape { shape: [] }``,
    Triton's form for it.
    """

    name: str = Field(min_length=1)
    dtype: str = Field(json_schema_extra=dtypes.json_schema())
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
    outputs: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
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

    name: str = Field(pattern=_NAME, max_length=_NAME_MAX)
    max_batch_size: int = Field(0, ge=0)
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    dynamic_batching: DynamicBatching | None = None
    instance_group: list[InstanceGroup] = []
    model_warmup: list[Warmup] = []
    parameters: dict[str, str | int | float | bool] = {}
    slo: Slo | None = None  # intent (spec/intent.py); the repository's slo: fills unset keys
    capacity: Capacity | None = None  # written by 'tritonkit tune', not by hand

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

    def settings_digest(self) -> str:
        """A digest of everything in this model's spec that a measured capacity depends on: all
        of it but its name, ``slo``, ``capacity``, warm-up, and a ``default_queue_policy`` (which
        the build derives from the capacity; tune measures without it). Recorded by tune in
        ``capacity.measured_on.settings``; :func:`tritonkit.slo.plan.plan_model` flags a capacity
        whose model no longer has it (``max_batch_size`` changed since, say)."""
        settings = self.model_dump(mode="json", exclude={"name", "slo", "capacity", "model_warmup"})
        if isinstance(settings.get("dynamic_batching"), dict):
            settings["dynamic_batching"].pop("default_queue_policy", None)
        text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


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

    @property
    def key(self) -> str:
        """``tensorrt``, ``tensorrt-fp16``, ``tensorrt-int8`` or ``cuda``: what tune calls it."""
        if self.name == "cuda":
            return "cuda"
        return "tensorrt" if self.precision_mode == "FP32" else f"tensorrt-{self.precision_mode.lower()}"

    @classmethod
    def from_key(cls, key: str) -> GpuAccelerator:
        """The accelerator :attr:`key` names.

        Raises:
            ValueError: not one of the keys above.
        """
        name, _, precision = key.partition("-")
        if name not in ("tensorrt", "cuda") or (name == "cuda" and precision):
            raise ValueError(f"'{key}' is not an execution accelerator (tensorrt, tensorrt-fp16, tensorrt-int8, cuda)")
        return cls.model_validate({"name": name, "precision_mode": (precision or "fp32").upper()})


VARIANT_RECIPES = ("optimized", "int8-dynamic", "int8-static", "fp16")
"""What a ``variant:`` recipe may be (see :class:`OnnxVariant`)."""


class OnnxVariant(_Strict):
    """How the served model is made from the original (the ``file`` or the ``export``): a recipe of
    onnxruntime's own tools, applied by every build the same way (the same bytes twice).

    - ``optimized``: onnxruntime's offline graph optimizations (``ORT_ENABLE_EXTENDED``: fusions
      that any CPU runs; the layout ones of ``ORT_ENABLE_ALL`` are tied to the machine that saves
      them), numerics unchanged;
    - ``int8-dynamic``: ``onnxruntime.quantization.quantize_dynamic`` with signed int8 weights,
      after onnxruntime's quantization pre-processing; ``per_channel`` weight scales;
    - ``int8-static``: ``quantize_static`` (QDQ, int8 weights, uint8 activations) calibrated on
      ``data`` with MinMax ranges;
    - ``fp16``: onnxruntime's float16 converter, inputs and outputs kept fp32 (it pays on a GPU).

    ``data`` (real inputs, in any form ``--input-data`` takes, inside the project) is what the
    build checks the variant's accuracy on (recorded in the lock) and, for ``int8-static``,
    calibrates on. A recipe that changes numerics needs it. ``tritonkit tune --variants`` writes
    this block.
    """

    recipe: Literal["optimized", "int8-dynamic", "int8-static", "fp16"]
    per_channel: bool = True
    data: str | None = None

    @model_validator(mode="after")
    def _data(self) -> OnnxVariant:
        if self.recipe != "optimized" and self.data is None:
            raise ValueError(
                f"recipe '{self.recipe}' changes the model's numerics: give 'data', real inputs to check it on"
            )
        return self


class OnnxModel(ModelBase):
    """An ONNX model, from an existing ``file`` or exported from PyTorch (``export``), served as is
    or as a ``variant`` made from it."""

    kind: Literal["onnx"]
    file: str | None = None
    export: TorchExport | None = None
    accelerator: GpuAccelerator | None = None
    variant: OnnxVariant | None = None

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


class EnvironmentSpec(_Strict):
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
    # the Prometheus that scrapes the predictor pods (optional): KEDA's signal for RawDeployment
    # autoscaling on Triton's queue, and what 'promote --analysis' reads
    prometheus_url: str | None = None
    # the availability floor: replicas that run whatever the traffic (2 or more survives a node or
    # zone going down; the plan's peak replicas are never fewer)
    min_replicas: int = Field(1, ge=1)
    # the ceiling the autoscaler may reach (what the team pays for at most); unset: 1.5x the
    # plan's replicas, and the plan says it guessed
    max_replicas: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _replica_bounds(self) -> EnvironmentSpec:
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas {self.max_replicas} is below min_replicas {self.min_replicas}")
        return self


class TrustSpec(_Strict):
    """Which public keys may sign this project's releases (see ``tritonkit.release.trust``).

    With ``keys`` listed, every use of a release (verify, serve, promote, export, publish, pull)
    refuses one that is not signed by one of them; ``required: false`` still refuses a wrong
    signature but lets unsigned releases through (a migration step). Paths are relative to the spec.
    """

    keys: list[str] = Field(min_length=1)
    required: bool = True


class Spec(_Strict):
    """The whole tritonkit.yaml."""

    version: Literal[1] = 1
    name: str = Field(pattern=_NAME, max_length=_NAME_MAX)
    # The directory every source path must stay inside (after symlinks), relative to the spec;
    # default: the spec's own directory. It must contain the spec (e.g. ".." for a spec in a subfolder).
    project_root: str | None = None
    models: list[Model] = Field(min_length=1)
    environments: list[EnvironmentSpec] = []
    slo: Slo | None = None  # defaults for every model's slo:
    trust: TrustSpec | None = None  # who may sign releases

    def with_slo_defaults(self) -> Spec:
        """Every model's ``slo`` with the repository-level keys it leaves unset filled in."""
        if self.slo is None:
            return self
        models = [m.model_copy(update={"slo": (m.slo or Slo()).over(self.slo)}) for m in self.models]
        return self.model_copy(update={"models": models})

    def environment(self, name: str) -> EnvironmentSpec:
        """The environment called ``name``; a SpecError with a suggestion otherwise."""
        for env in self.environments:
            if env.name == name:
                return env
        names = [e.name for e in self.environments]
        raise UsageError(
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
        raise UsageError(f"no model named '{name}'", hint=did_you_mean(name, names) or f"models: {', '.join(names)}")


class LoadedSpec(BaseModel):
    """A validated spec and the file it came from (paths resolve against ``root``)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: Spec
    path: Path

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def project(self) -> Path:
        """The directory sources must resolve inside: ``project_root`` (spec-relative) or the spec's."""
        return (self.root / (self.spec.project_root or ".")).resolve()

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()
