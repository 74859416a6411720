"""Model variants in the build: made by onnxruntime's tools from a recipe in the spec, the same
bytes twice, accuracy measured on real inputs and held to slo.accuracy, loaded by Triton."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from click.testing import CliRunner

from tests.helpers import copy_example
from tritonkit import Endpoints, TritonServer
from tritonkit.artifact.lock import read_lock
from tritonkit.build.variants import accuracy, run_requests
from tritonkit.cli import main
from tritonkit.errors import BuildError, SpecError
from tritonkit.spec.intent import Accuracy

ROWS = 48


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example project with real-looking features (64 requests) for its classifier."""
    root = copy_example(tmp_path_factory.mktemp("variants") / "model_repository")
    (root / "data").mkdir()
    features = np.random.default_rng(7).normal(size=(ROWS, 4)).astype(np.float32)
    np.save(root / "data" / "features.npy", features)
    return root


def _with_variant(project: Path, variant: str, accuracy_budget: str = "") -> Path:
    """A spec beside the example's whose classifier has ``variant`` (and an slo.accuracy)."""
    spec = (project / "tritonkit.yaml").read_text()
    anchor = "    parameters:\n      intra_op_thread_count: 1\n"
    extra = f"    variant: {variant}\n" + (f"    slo: {{accuracy: {accuracy_budget}}}\n" if accuracy_budget else "")
    name = f"variant-{abs(hash((variant, accuracy_budget))) % 10**8}.yaml"
    (project / name).write_text(spec.replace(anchor, anchor + extra, 1))
    return project / name


def _build(spec: Path, out: Path, *more: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(main, ["build", "-f", str(spec), "-o", str(out), "--json", *more])
    digest = json.loads(done.stdout)["digest"] if done.exit_code == 0 else ""
    return done.exit_code, digest, done.output


@pytest.fixture(scope="module")
def int8_build(project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    spec = _with_variant(project, "{recipe: int8-dynamic, data: data/features.npy}", "{min_top1: 0.95}")
    out = tmp_path_factory.mktemp("dist")
    code, digest, output = _build(spec, out)
    assert code == 0, output
    return out / "demo", digest


def test_a_variant_builds_to_the_same_digest_from_scratch(
    project: Path, int8_build: tuple[Path, str], tmp_path: Path
) -> None:
    spec = _with_variant(project, "{recipe: int8-dynamic, data: data/features.npy}", "{min_top1: 0.95}")
    code, digest, output = _build(spec, tmp_path / "again", "--no-cache")
    assert code == 0, output
    assert digest == int8_build[1]
    original = _with_variant(project, "{recipe: optimized}")
    code, plain, output = _build(original, tmp_path / "plain")
    assert code == 0 and plain != digest, output


def test_the_lock_records_recipe_tools_and_the_accuracy_measured(int8_build: tuple[Path, str]) -> None:
    entry = read_lock(int8_build[0]).models["classifier"]
    assert entry["variant"]["recipe"] == "int8-dynamic" and entry["variant"]["per_channel"] is True
    measured = Accuracy(**entry["variant"]["accuracy"])
    assert measured.samples == ROWS and measured.top1 is not None and measured.top1 >= 0.95
    assert measured.max_abs_error > 0  # int8 weights: not the original's numerics
    assert entry["tools"]["onnxruntime"] and entry["slo"]["accuracy"] == {"min_top1": 0.95}


@pytest.fixture(scope="module")
def int8_server(int8_build: tuple[Path, str]) -> Iterator[TritonServer]:
    server = TritonServer(int8_build[0], endpoints=Endpoints.allocate(), models=["classifier"])
    server.start()
    yield server
    server.stop()


def test_triton_serves_the_variant_within_its_accuracy_budget(
    project: Path, int8_build: tuple[Path, str], int8_server: TritonServer, tmp_path: Path
) -> None:
    """The served answers, against the original model run by onnxruntime on the same requests."""
    code, _, output = _build(_with_variant(project, "{recipe: optimized}"), tmp_path / "original")
    assert code == 0, output
    features = np.load(project / "data" / "features.npy")
    samples = [{"features": row} for row in features]
    reference = run_requests(tmp_path / "original" / "demo" / "classifier" / "1" / "model.onnx", samples, batching=True)
    client = grpcclient.InferenceServerClient(int8_server.endpoints.grpc_url)
    served = []
    for row in features:
        request = grpcclient.InferInput("features", [1, 4], "FP32")
        request.set_data_from_numpy(row[np.newaxis])
        served.append([client.infer("classifier", [request]).as_numpy("logits")[0]])
    client.close()
    measured = accuracy(reference, served)
    assert measured.top1 is not None and measured.top1 >= 0.95 and measured.max_abs_error > 0
    assert measured == Accuracy(**read_lock(int8_build[0]).models["classifier"]["variant"]["accuracy"])


def test_verify_load_proves_the_variant_loads(int8_build: tuple[Path, str]) -> None:
    done = CliRunner().invoke(main, ["verify", str(int8_build[0]), "--load"])
    assert done.exit_code == 0 and "Triton loaded and answered" in done.output, done.output


@pytest.mark.parametrize("recipe", ["optimized", "int8-static", "fp16"])
def test_every_recipe_builds_and_verifies(project: Path, recipe: str, tmp_path: Path) -> None:
    spec = _with_variant(project, f"{{recipe: {recipe}, data: data/features.npy}}")
    code, _, output = _build(spec, tmp_path)
    assert code == 0, output
    entry = read_lock(tmp_path / "demo").models["classifier"]["variant"]
    assert entry["recipe"] == recipe and entry["accuracy"]["samples"] == ROWS
    if recipe == "optimized":
        assert entry["accuracy"]["max_abs_error"] < 1e-5  # graph fusions keep the numerics
    done = CliRunner().invoke(main, ["verify", str(tmp_path / "demo")])
    assert done.exit_code == 0, done.output


def test_a_variant_that_misses_the_budget_fails_and_keeps_the_last_build(
    project: Path, int8_build: tuple[Path, str]
) -> None:
    out = int8_build[0].parent
    before = (out / "demo").resolve()
    spec = _with_variant(project, "{recipe: int8-dynamic, data: data/features.npy}", "{max_abs_error: 1.0e-6}")
    code, _, output = _build(spec, out)
    assert code == BuildError.exit_code
    assert re.search(r"variant int8-dynamic \(per-channel\) misses the accuracy budget: max abs error", output)
    assert "tune --variants" in output
    assert (out / "demo").resolve() == before


def test_a_numerics_changing_recipe_without_data_is_a_spec_error(project: Path, tmp_path: Path) -> None:
    code, _, output = _build(_with_variant(project, "{recipe: int8-static}"), tmp_path)
    assert code == SpecError.exit_code and "give 'data'" in output, output


def test_data_that_does_not_fit_the_model_names_the_key(project: Path, tmp_path: Path) -> None:
    np.save(project / "data" / "wrong.npy", np.zeros((3, 5), dtype=np.float32))
    code, _, output = _build(_with_variant(project, "{recipe: int8-dynamic, data: data/wrong.npy}"), tmp_path)
    assert code == SpecError.exit_code and "variant.data" in output and "does not fit" in output, output
