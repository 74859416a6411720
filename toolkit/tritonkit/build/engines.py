"""Where TensorRT engines can run: this machine's TensorRT and GPU, and what a lock's engines need.

Shared by the TensorRT builder (refuse to build where nothing can), verify (an engine built for
another TensorRT version or compute capability is a finding) and serve (refuse to serve engines
where they cannot load). Reads package metadata, the lock and ``nvidia-smi``-free CUDA queries;
builds nothing.

Example:
    >>> here = runtime()
    >>> engine_problems({"kind": "tensorrt", "engine": {"tensorrt": "10.3.0"}}, here)
    []
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonkit.artifact.hashing import LOCK_FILE
from tritonkit.artifact.lock import read_lock
from tritonkit.build.builders.base import MISSING, tool_version


@dataclass(frozen=True)
class Runtime:
    """What this machine offers for engines: TensorRT's version and the GPU (None when absent)."""

    tensorrt: str | None
    gpu_name: str | None
    compute_capability: str | None


def runtime() -> Runtime:
    """The local TensorRT Python package version and GPU 0, read without building anything."""
    found = tool_version("tensorrt")
    version: str | None = None if found == MISSING else found
    if version is None:
        try:
            import tensorrt  # noqa: F401  (a system install without package metadata)

            version = str(tensorrt.__version__)
        except ImportError:
            version = None
    name, capability = _gpu()
    return Runtime(version, name, capability)


def _gpu() -> tuple[str | None, str | None]:
    """GPU 0's name and compute capability through the CUDA driver API (no Python CUDA package)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None, None
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None, None
    device = ctypes.c_int(0)
    cuda.cuDeviceGet(ctypes.byref(device), 0)
    buffer = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(buffer, 256, device)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ..._MINOR
    return buffer.value.decode(), f"{major.value}.{minor.value}"


def major_version(version: str | None) -> int:
    head = (version or "0").split(".")[0]
    return int(head) if head.isdigit() else 0


def engine_problems(entry: dict[str, Any], local: Runtime) -> list[str]:
    """Why a locked engine cannot run here (empty when it can, or when nothing is known here).

    ``entry`` is the model's lock entry; its ``engine`` holds what the build recorded.
    """
    engine = entry.get("engine") or {}
    problems = []
    if local.tensorrt and engine.get("tensorrt") and engine["tensorrt"] != local.tensorrt:
        problems.append(f"built with TensorRT {engine['tensorrt']}, this machine has {local.tensorrt}")
    if local.compute_capability and engine.get("compute_capability") not in (None, local.compute_capability):
        problems.append(
            f"built for compute capability {engine['compute_capability']} ({engine.get('gpu')}), "
            f"this GPU is {local.compute_capability} ({local.gpu_name})"
        )
    return problems


def lock_check(root: Path, local: Runtime | None = None) -> list[str]:
    """Problems of every engine in a built repository on this machine (for verify and serve)."""
    models = _lock_models(root)
    here = local or runtime()
    return [f"{name}: {problem}" for name, entry in sorted(models.items()) for problem in engine_problems(entry, here)]


def check_servable(root: Path, *, embedded: bool, local: Runtime | None = None) -> None:
    """Refuse to serve TensorRT engines where they cannot run.

    Raises:
        ServerError: the embedded (CPU, Python-backend-only) Triton, no GPU, or an engine built
            for another TensorRT version / compute capability.
    """
    from tritonkit.errors import ServerError

    engines = engines_in(root)
    if not engines:
        return
    if embedded:
        raise ServerError(
            f"{', '.join(engines)}: TensorRT engines need Triton's tensorrt backend, which the embedded server lacks",
            hint="serve with --triton-bin /opt/tritonserver/bin/tritonserver on a GPU host (or an NGC container)",
        )
    here = local or runtime()
    if here.gpu_name is None:
        raise ServerError(f"{', '.join(engines)}: TensorRT engines need an NVIDIA GPU", hint="serve on a GPU host")
    problems = lock_check(root, here)
    if problems:
        raise ServerError(problems[0], hint="rebuild the engine on this host: tritonkit build --no-cache")


def engines_in(root: Path) -> list[str]:
    """Names of the models in a built repository whose lock entry is a TensorRT engine."""
    return sorted(name for name, entry in _lock_models(root).items() if entry.get("kind") == "tensorrt")


def _lock_models(root: Path) -> dict[str, dict[str, Any]]:
    """The lock's per-model entries; none where the tree has no lock (verify reports that)."""
    if not (root / LOCK_FILE).is_file():
        return {}
    return read_lock(root).models
