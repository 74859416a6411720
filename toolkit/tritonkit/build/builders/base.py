"""What every builder shares: the build context and the :class:`Builder` protocol.

A builder lists the files its model depends on (for the cache key) and writes one Triton
model directory: the artifact into ``<model_dir>/<version>/``, returning the ModelConfig that
:mod:`tritonkit.build.pipeline` renders to ``config.pbtxt``.

Example:
    >>> class EchoBuilder:
    ...     kind = "python"
    ...     def input_files(self, loaded, model): return []
    ...     def tool_versions(self, model): return {}
    ...     def build(self, ctx, model_dir): ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.spec.schema import LoadedSpec, ModelBase

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


MISSING = "missing"
"""What :func:`tool_version` returns for a package that is not installed."""


def tool_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or :data:`MISSING`.

    The one way tool versions are read for lock files and cache keys (so an absent tool is
    spelled the same everywhere).
    """
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return MISSING
