"""tritonkit: immutable, content-hashed NVIDIA Triton model repositories.

The public surface, re-exported here lazily (importing ``tritonkit`` imports none of the
stages; a name is imported on first use; a test pins ``__all__``)::

    from tritonkit import load_spec, build_repository, verify, TritonServer

    loaded = load_spec(Path("tritonkit.yaml"))
    result = build_repository(loaded, Path("dist"))
    assert verify(result.path).ok
    with TritonServer(result.path) as server:
        print(server.endpoints.http_url)

The build function is ``build_repository`` (not ``build``): ``tritonkit.build`` is the build
stage's package, and a function of the same name would be shadowed by it.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# gRPC's C core logs to stderr on its own (fork_posix.cc "Other threads are currently calling into
# gRPC, skipping fork() handlers" whenever a process is started while a tritonclient gRPC client
# exists: perf_analyzer, a Triton server): only its errors reach a tritonkit user's terminal. gRPC
# reads it when first imported, which no import of tritonkit does before this line (a program that
# imports grpc or tritonclient.grpc before tritonkit sets it itself); a value the user set is kept.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# name -> the module that defines it; docs/architecture.md says which stage owns what.
_EXPORTS = {
    "BenchPoint": "tritonkit.perf.stats",
    "bench": "tritonkit.perf.bench",
    "BuildResult": "tritonkit.build.pipeline",
    "ModelResult": "tritonkit.build.pipeline",
    "build_repository": "tritonkit.build.pipeline",
    "plan": "tritonkit.build.pipeline",
    "BuildError": "tritonkit.errors",
    "DependencyError": "tritonkit.errors",
    "PromoteError": "tritonkit.errors",
    "ServerError": "tritonkit.errors",
    "SpecError": "tritonkit.errors",
    "TritonkitError": "tritonkit.errors",
    "TuneError": "tritonkit.errors",
    "UsageError": "tritonkit.errors",
    "VerifyError": "tritonkit.errors",
    "Environment": "tritonkit.deploy.environment",
    "Promotion": "tritonkit.deploy.environment",
    "open_environment": "tritonkit.deploy",
    "LocalEnvironment": "tritonkit.deploy.local",
    "KServeEnvironment": "tritonkit.deploy.kserve",
    "Event": "tritonkit.events",
    "Release": "tritonkit.release.store",
    "ReleaseStore": "tritonkit.release.store",
    "Lock": "tritonkit.artifact.lock",
    "read_lock": "tritonkit.artifact.lock",
    "Endpoints": "tritonkit.serve.endpoints",
    "TritonServer": "tritonkit.serve.server",
    "find_triton": "tritonkit.serve.binary",
    "LoadedSpec": "tritonkit.spec.schema",
    "Spec": "tritonkit.spec.schema",
    "load_spec": "tritonkit.spec.loader",
    "TunePoint": "tritonkit.perf.tune",
    "TuneResult": "tritonkit.perf.tune",
    "TuneSettings": "tritonkit.perf.tune",
    "tune": "tritonkit.perf.tune",
    "Finding": "tritonkit.build.verify",
    "VerifyReport": "tritonkit.build.verify",
    "verify": "tritonkit.build.verify",
}

__all__ = [
    "BenchPoint",
    "BuildError",
    "BuildResult",
    "DependencyError",
    "Endpoints",
    "Environment",
    "Event",
    "Finding",
    "KServeEnvironment",
    "LoadedSpec",
    "LocalEnvironment",
    "Lock",
    "ModelResult",
    "PromoteError",
    "Promotion",
    "Release",
    "ReleaseStore",
    "ServerError",
    "Spec",
    "SpecError",
    "TritonServer",
    "TritonkitError",
    "TuneError",
    "TunePoint",
    "TuneResult",
    "TuneSettings",
    "UsageError",
    "VerifyError",
    "VerifyReport",
    "bench",
    "build_repository",
    "find_triton",
    "load_spec",
    "open_environment",
    "plan",
    "read_lock",
    "tune",
    "verify",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tritonkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from tritonkit.artifact.lock import Lock, read_lock
    from tritonkit.build.pipeline import BuildResult, ModelResult, build_repository, plan
    from tritonkit.build.verify import Finding, VerifyReport, verify
    from tritonkit.deploy import open_environment
    from tritonkit.deploy.environment import Environment, Promotion
    from tritonkit.deploy.kserve import KServeEnvironment
    from tritonkit.deploy.local import LocalEnvironment
    from tritonkit.errors import (
        BuildError,
        DependencyError,
        PromoteError,
        ServerError,
        SpecError,
        TritonkitError,
        TuneError,
        UsageError,
        VerifyError,
    )
    from tritonkit.events import Event
    from tritonkit.perf.bench import bench
    from tritonkit.perf.stats import BenchPoint
    from tritonkit.perf.tune import TunePoint, TuneResult, TuneSettings, tune
    from tritonkit.release.store import Release, ReleaseStore
    from tritonkit.serve.binary import find_triton
    from tritonkit.serve.endpoints import Endpoints
    from tritonkit.serve.server import TritonServer
    from tritonkit.spec.loader import load_spec
    from tritonkit.spec.schema import LoadedSpec, Spec
