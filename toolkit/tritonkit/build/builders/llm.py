"""Builder for ``kind: llm``: the engine, the model and its tokenizer in one version directory.

Layout of ``<model>/1/``:

- ``model.py``, ``engine.py`` and the engine's modules (:data:`ENGINE_FILES`): tritonkit's
  Python backend (copied from ``python_backends/llm``, so the repository's hash covers the code
  that serves it);
- ``hf/``: the transformers model — a copy of ``path``, or a ``random_init`` model created
  here from its seed and written with ``save_pretrained`` (deterministic: same seed, same
  torch and transformers → same bytes);
- ``tokenizer/``: a separate tokenizer directory, when the spec names one;
- ``model.json``: the engine arguments (scheduler budgets, device, dtype, tokenizer).

The config is the Triton vLLM backend's contract: ``backend: "python"``, decoupled,
``max_batch_size: 0``, ``text_input``/``stream``/``sampling_parameters``/… in,
``text_output``/``finish_reason``/``num_input_tokens``/``num_output_tokens`` out.

Example:
    >>> config = LlmBuilder().build(ctx, model_dir)
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.build.builders.base import MISSING, VERSION, BuildContext, tool_version
from tritonkit.build.modelconfig import model_config
from tritonkit.errors import BuildError
from tritonkit.spec.schema import InstanceGroup, LlmModel, LoadedSpec, ModelBase, RandomInit, TensorSpec

ENGINE_FILES = (
    "model.py",
    "engine.py",
    "sequences.py",
    "scheduler.py",
    "runner.py",
    "output.py",
    "static.py",
    "tokens.py",
    "kv_cache.py",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")

INPUTS = [
    TensorSpec(name="text_input", dtype="BYTES", dims=[1]),
    TensorSpec(name="stream", dtype="BOOL", dims=[1], optional=True),
    TensorSpec(name="sampling_parameters", dtype="BYTES", dims=[1], optional=True),
    TensorSpec(name="exclude_input_in_output", dtype="BOOL", dims=[1], optional=True),
    TensorSpec(name="return_finish_reason", dtype="BOOL", dims=[1], optional=True),
    TensorSpec(name="return_num_input_tokens", dtype="BOOL", dims=[1], optional=True),
    TensorSpec(name="return_num_output_tokens", dtype="BOOL", dims=[1], optional=True),
]
OUTPUTS = [
    TensorSpec(name="text_output", dtype="BYTES", dims=[-1]),
    TensorSpec(name="finish_reason", dtype="BYTES", dims=[-1]),
    TensorSpec(name="num_input_tokens", dtype="UINT32", dims=[-1]),
    TensorSpec(name="num_output_tokens", dtype="UINT32", dims=[-1]),
]


def engine_source(name: str) -> Path:
    """Path of one of tritonkit's LLM backend files."""
    return Path(str(resources.files("tritonkit.python_backends").joinpath("llm", name)))


class LlmBuilder:
    """Writes the engine, the model, its tokenizer and ``model.json``."""

    kind = "llm"

    def input_files(self, loaded: LoadedSpec, model: ModelBase) -> list[Path]:
        assert isinstance(model, LlmModel)
        files = {engine_source(name) for name in ENGINE_FILES}
        for rel in (model.path, model.tokenizer if model.tokenizer not in ("auto", "byte") else None):
            if rel is not None:
                root = loaded.resolve(rel)
                files.update(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        return sorted(files)

    def tool_versions(self, model: ModelBase) -> dict[str, str]:
        return {name: tool_version(name) for name in ("torch", "transformers")}

    def build(self, ctx: BuildContext, model_dir: Path) -> pb.ModelConfig:
        model = ctx.model
        assert isinstance(model, LlmModel)
        missing = [name for name in ("torch", "transformers") if tool_version(name) == MISSING]
        if missing:
            raise BuildError(
                f"kind: llm needs {' and '.join(missing)}, which is not installed",
                model=model.name,
                step="setup",
                hint="pip install 'tritonkit[torch,llm]'",
            )
        version = model_dir / VERSION
        version.mkdir(parents=True)
        for name in ENGINE_FILES:
            shutil.copyfile(engine_source(name), version / name)
        hf = version / "hf"
        if model.random_init is not None:
            init = model.random_init
            write_random_model(init, hf)
            ctx.log(f"random-init {init.family}: {init.layers} layers, seed {init.seed}")
        else:
            assert model.path is not None
            shutil.copytree(ctx.loaded.resolve(model.path), hf, ignore=shutil.ignore_patterns("__pycache__", ".*"))
            ctx.log(f"copied {model.path}")
        _check_causal_lm(ctx, hf)
        tokenizer, tokenizer_path = self._tokenizer(ctx, model, version)
        settings = {
            "mode": model.scheduler.mode,
            "model": "hf",
            "tokenizer": tokenizer,
            "tokenizer_path": tokenizer_path,
            "device": model.device,
            "dtype": model.dtype,
            "threads": model.threads,
            "default_max_tokens": model.default_max_tokens,
            "scheduler": model.scheduler.model_dump(exclude={"mode"}),
        }
        (version / "model.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return llm_config(model)

    def _tokenizer(self, ctx: BuildContext, model: LlmModel, version: Path) -> tuple[str, str]:
        if model.tokenizer == "byte" or (model.tokenizer == "auto" and model.random_init is not None):
            return "byte", ""
        if model.tokenizer == "auto":
            if not any((version / "hf" / name).is_file() for name in _TOKENIZER_FILES):
                raise BuildError(
                    f"'{model.path}' has no tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}, …)",
                    model=model.name,
                    step="tokenizer",
                    hint="save the tokenizer into the model directory, or set 'tokenizer:' to its directory or 'byte'",
                )
            return "hf", "hf"
        shutil.copytree(ctx.loaded.resolve(model.tokenizer), version / "tokenizer")
        return "hf", "tokenizer"


def llm_config(model: LlmModel) -> pb.ModelConfig:
    """The Triton config of an llm model (pure; see the module docstring)."""
    groups = model.instance_group or [
        InstanceGroup(count=1, kind="KIND_CPU" if model.device == "cpu" else "KIND_MODEL")
    ]
    config = model_config(
        model.model_copy(update={"instance_group": groups}), backend="python", inputs=INPUTS, outputs=OUTPUTS
    )
    config.model_transaction_policy.decoupled = True
    return config


def write_random_model(spec: RandomInit, target: Path) -> None:
    """Create the ``random_init`` model from its seed and ``save_pretrained`` it to ``target``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the build reports progress itself

    special: dict[str, Any] = {"bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 258}
    cls: Any
    config: Any
    if spec.family == "gpt2":
        config = GPT2Config(
            vocab_size=spec.vocab_size,
            n_positions=spec.max_positions,
            n_embd=spec.hidden_size,
            n_layer=spec.layers,
            n_head=spec.heads,
            **special,
        )
        cls = GPT2LMHeadModel
    else:
        config = LlamaConfig(
            vocab_size=spec.vocab_size,
            hidden_size=spec.hidden_size,
            intermediate_size=spec.hidden_size * 2,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.heads,
            max_position_embeddings=spec.max_positions,
            **special,
        )
        cls = LlamaForCausalLM
    torch.manual_seed(spec.seed)
    model = cls(config).eval()
    model.save_pretrained(target, safe_serialization=True)


def _check_causal_lm(ctx: BuildContext, hf: Path) -> None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(hf, local_files_only=True)
    except Exception as exc:
        raise BuildError(
            f"transformers cannot read the model's config.json: {exc}",
            model=ctx.model.name,
            step="model",
            hint="point 'path' at a directory written by save_pretrained()",
        ) from None
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise BuildError(
            f"{architectures[0]} is not a causal language model",
            model=ctx.model.name,
            step="model",
            hint="kind: llm serves *ForCausalLM / *LMHeadModel architectures",
        )


__all__ = ["INPUTS", "OUTPUTS", "LlmBuilder", "engine_source", "llm_config", "write_random_model"]
