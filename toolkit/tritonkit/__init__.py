"""tritonkit: immutable, content-hashed NVIDIA Triton model repositories.

The public surface, re-exported here (a test pins ``__all__``)::

    from tritonkit import load_spec, build, verify, TritonServer

    loaded = load_spec(Path("tritonkit.yaml"))
    result = build(loaded, Path("dist"))
    assert verify(result.path).ok
    with TritonServer(result.path) as server:
        print(server.endpoints.http_url)
"""

from __future__ import annotations

from .bench import BenchPoint, bench
from .build import BuildResult, ModelResult, build, plan
from .errors import (
    BuildError,
    DependencyError,
    PromoteError,
    ServerError,
    SpecError,
    TritonkitError,
    TuneError,
    VerifyError,
)
from .promote import LocalEnvironment, Promotion
from .promote_kserve import KServeEnvironment
from .releases import Release, ReleaseStore
from .repository import Lock, read_lock
from .server import Endpoints, TritonServer, find_triton
from .spec import LoadedSpec, Spec, load_spec
from .tune import TunePoint, TuneResult, TuneSettings, tune
from .verify import Finding, VerifyReport, verify

__all__ = [
    "BenchPoint",
    "BuildError",
    "BuildResult",
    "DependencyError",
    "Endpoints",
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
    "VerifyError",
    "VerifyReport",
    "bench",
    "build",
    "find_triton",
    "load_spec",
    "plan",
    "read_lock",
    "tune",
    "verify",
]
