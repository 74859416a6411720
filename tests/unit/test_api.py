"""The public surface is deliberate: this test pins it."""

from __future__ import annotations

import tritonkit
from tritonkit.errors import (
    BuildError,
    ClusterError,
    DependencyError,
    NotConfirmed,
    PromoteError,
    RegistryError,
    ServerError,
    SpecError,
    StorageError,
    TritonkitError,
    TuneError,
    UsageError,
    VerifyError,
    did_you_mean,
)
from tritonkit.spec import dtypes


def test_public_names() -> None:
    assert sorted(tritonkit.__all__) == [
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
    for name in tritonkit.__all__:
        assert hasattr(tritonkit, name)


def test_exit_codes_are_distinct() -> None:
    classes = [
        TritonkitError,
        SpecError,
        BuildError,
        VerifyError,
        ServerError,
        DependencyError,
        TuneError,
        PromoteError,
        UsageError,
        RegistryError,
        ClusterError,
        NotConfirmed,
        StorageError,
    ]
    assert 2 not in {c.exit_code for c in classes}, "exit 2 is click's usage error"
    assert len({c.exit_code for c in classes}) == len(classes)
    assert all(issubclass(c, TritonkitError) for c in classes)


def test_spec_error_names_file_and_key() -> None:
    error = SpecError("must be >= 0", file="t.yaml:3", key="models[0].max_batch_size", hint="fix it")
    assert str(error) == "t.yaml:3: models[0].max_batch_size: must be >= 0"


def test_did_you_mean_is_case_insensitive() -> None:
    assert did_you_mean("X", ["x", "y"]) == "did you mean 'x'?"
    assert did_you_mean("zzz", ["x"]) == ""


def test_dtype_names() -> None:
    assert dtypes.canonical("float32") == "FP32"
    assert dtypes.canonical("TYPE_STRING") == "BYTES"
    assert dtypes.config_type("BYTES") == "TYPE_STRING"
    assert dtypes.from_onnx_elem_type(7) == "INT64"
