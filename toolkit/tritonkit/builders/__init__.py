"""Model builders: one per model kind, all behind the small :class:`Builder` protocol.

A builder lists the files its model depends on (for the cache key) and writes one Triton
model directory: the artifact into ``<model_dir>/<version>/`` and returns the ModelConfig that
:mod:`tritonkit.build` renders to ``config.pbtxt``.

Example:
    >>> builder = builder_for(model)
    >>> config = builder.build(ctx, model_dir)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tritonclient.grpc import model_config_pb2 as pb

from ..spec import LlmModel, LoadedSpec, ModelBase, OnnxModel, PythonModel, TensorRTModel

VERSION = "1"


@dataclass
class BuildContext:
    """What a builder needs to know besides its spec entry."""

    loaded: LoadedSpec
    index: int
    workdir: Path
    log: Callable[[str], None] = field(default=lambda message: None)
    cache_dir: Path = Path(".")
    built: dict[str, Path] = field(default_factory=dict)  # model name -> built model dir, earlier in this build
    meta: dict[str, Any] = field(default_factory=dict)  # facts for the lock file (e.g. an engine's GPU)

    @property
    def model(self) -> ModelBase:
        return self.loaded.spec.models[self.index]

    def key(self, *parts: str | int) -> str:
        """Dotted key path of a field of this model, for error messages."""
        out = f"models[{self.index}]"
        for part in parts:
            out += f"[{part}]" if isinstance(part, int) else f".{part}"
        return out


class Builder(Protocol):
    """What every model kind implements."""

    kind: str

    def input_files(self, loaded: LoadedSpec, model: ModelBase) -> list[Path]:
        """Source files whose bytes go into the model's cache key."""
        ...

    def tool_versions(self, model: ModelBase) -> dict[str, str]:
        """Versions of the tools whose output ends up in the artifact."""
        ...

    def build(self, ctx: BuildContext, model_dir: Path) -> pb.ModelConfig:
        """Write the artifact under ``model_dir/VERSION`` and return the model's config."""
        ...


def builder_for(model: ModelBase) -> Builder:
    """The builder for a spec entry's kind."""
    from .llm import LlmBuilder
    from .onnx import OnnxBuilder
    from .python import PythonBuilder
    from .tensorrt import TensorRTBuilder

    if isinstance(model, OnnxModel):
        return OnnxBuilder()
    if isinstance(model, PythonModel):
        return PythonBuilder()
    if isinstance(model, LlmModel):
        return LlmBuilder()
    if isinstance(model, TensorRTModel):
        return TensorRTBuilder()
    raise NotImplementedError(f"no builder for model kind of '{model.name}'")


__all__ = ["VERSION", "BuildContext", "Builder", "builder_for"]
