"""Model variants in the build: made by onnxruntime's tools from a recipe in the spec, the same
bytes twice, accuracy measured on real inputs and held to slo.accuracy, loaded by Triton."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from click.testing import CliRunner

from tests.helpers import copy_example
from tritonkit import Endpoints, TritonServer, load_spec
from tritonkit.artifact.lock import read_lock
from tritonkit.build.variants import accuracy, run_requests
from tritonkit.cli import main
from tritonkit.errors import BuildError, SpecError, UsageError
from tritonkit.spec.intent import Accuracy, AccuracyBudget

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


def test_an_accelerators_accuracy_is_measured_on_the_server_that_serves_it(
    project: Path, int8_build: tuple[Path, str], int8_server: TritonServer
) -> None:
    """A GPU execution provider's numerics exist only on the server, so tune --variants checks it
    there: the model is loaded with the accelerator's config, each request sent alone, and the
    served config loaded back. This CPU server's Python-based onnxruntime backend ignores the
    accelerator, so here the answers must equal the built file's run by onnxruntime: that checks
    the path (load, requests, output order, restore), not a GPU."""
    from tritonkit.perf.variants import output_names, served_outputs, served_settings

    url = int8_server.endpoints.grpc_url
    served = served_settings("classifier", url, "grpc")
    assert served.accelerator == ""
    model_file = int8_build[0] / "classifier" / "1" / "model.onnx"
    samples = [{"features": row} for row in np.load(project / "data" / "features.npy")[:6]]
    outputs = served_outputs(
        "classifier", address=url, protocol="grpc", samples=samples, names=output_names(model_file),
        settings=replace(served, accelerator="tensorrt-fp16"),
    )  # fmt: skip
    assert accuracy(run_requests(model_file, samples, batching=True), outputs).exact
    assert served_settings("classifier", url, "grpc") == served  # the served config is back


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


def test_a_mask_measures_a_transformer_variant_over_its_real_tokens(tmp_path: Path) -> None:
    """A BERT exported with the exporter's default names, padded requests, int8 per-channel:
    with ``slo.accuracy.mask: attention_mask`` the build's figures cover only the real tokens
    (recomputed here from both models' outputs), and a mask that names no input is a spec error
    at that key."""
    import yaml

    from tests.integration.model_families import transformers_bert

    family = transformers_bert(tmp_path)
    rng = np.random.default_rng(11)
    ids = rng.integers(1, 64, (12, 11)).astype(np.int64)
    mask = (np.arange(11) < rng.integers(3, 12, (12, 1))).astype(np.int64)  # 3 to 11 real tokens each
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "input_ids.npy", ids * mask)
    np.save(tmp_path / "data" / "attention_mask.npy", mask)

    def spec(mask_name: str) -> Path:
        entry = {**family.entry, "variant": {"recipe": "int8-dynamic", "per_channel": True, "data": "data"},
                 "slo": {"accuracy": {"min_cosine": 0.0, "mask": mask_name}}}  # fmt: skip
        path = tmp_path / f"bert-{mask_name}.yaml"
        path.write_text(yaml.safe_dump({"name": "bert", "models": [entry]}))
        return path

    code, _, output = _build(spec("attention_mask"), tmp_path / "dist")
    assert code == 0, output
    recorded = Accuracy(**read_lock(tmp_path / "dist" / "bert").models["bert"]["variant"]["accuracy"])
    assert recorded.mask == "attention_mask" and recorded.samples == 12
    samples = [{"input_ids": i, "attention_mask": m} for i, m in zip(ids * mask, mask, strict=True)]
    original = run_requests(tmp_path / family.file, samples, batching=True)
    variant = run_requests(tmp_path / "dist" / "bert" / "bert" / "1" / "model.onnx", samples, batching=True)
    real = [[out[0][m.astype(bool)]] for out, m in zip(original, mask, strict=True)]
    real_variant = [[out[0][m.astype(bool)]] for out, m in zip(variant, mask, strict=True)]
    assert recorded.cosine == pytest.approx(accuracy(real, real_variant).cosine, abs=1e-9)
    assert recorded.max_abs_error == pytest.approx(accuracy(real, real_variant).max_abs_error, abs=1e-9)
    assert recorded.cosine != pytest.approx(accuracy(original, variant).cosine, abs=1e-9)  # padding counted

    code, _, output = _build(spec("mask"), tmp_path / "wrong")
    assert code == SpecError.exit_code and "slo.accuracy.mask" in output and "'mask' is not an input" in output, output


# --------------------------------------------------------------------------- tune --variants


@pytest.fixture()
def searchable(project: Path, tmp_path: Path) -> Path:
    """A spec whose classifier has a latency and an accuracy budget and no variant yet (built)."""
    spec = (project / "tritonkit.yaml").read_text()
    anchor = "    parameters:\n      intra_op_thread_count: 1\n"
    budget = "    slo: {p99_ms: 15, accuracy: {min_top1: 0.95, min_cosine: 0.999}}\n"
    path = project / f"search-{tmp_path.name}.yaml"
    path.write_text(spec.replace(anchor, anchor + budget, 1))
    code, _, output = _build(path, tmp_path / "dist")
    assert code == 0, output
    return path


def test_tune_variants_keeps_only_what_holds_the_budgets_and_writes_a_spec_that_builds(
    searchable: Path, tmp_path: Path
) -> None:
    """Which variant wins, and whether tune confirms a winner at all, is measured (it varies with the
    host); what is guaranteed: every variant
    admitted holds slo.accuracy and every one dropped for accuracy misses it, the chosen one is
    written with its data, and that spec builds to a repository whose lock holds the budget."""
    repository = tmp_path / "dist" / "demo"
    server = TritonServer(repository, endpoints=Endpoints.allocate(), models=["classifier"])
    server.start()
    try:
        before = _answers(server)
        done = subprocess.run(
            [
                sys.executable, "-m", "tritonkit", "tune", "classifier", "-f", str(searchable), "--variants",
                "--input-data", str(searchable.parent / "data" / "features.npy"), "--url", server.endpoints.grpc_url,
                "--repository", str(repository), "--budget", "20s", "--window", "0.5", "--yes", "--json",
                "--report", str(tmp_path / "report"),
            ],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert _answers(server) == before  # the repository's model and config serve again
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    budget = AccuracyBudget(min_top1=0.95, min_cosine=0.999)
    rows = {row["variant"]: row for row in document["variants"]}
    assert set(rows) >= {"original", "optimized", "int8-dynamic (per-channel)", "int8-static (per-channel)"}
    for name, row in rows.items():
        if name == "original":
            continue
        measured = Accuracy(**row["accuracy"])
        if row["dropped"] and row["dropped"].startswith("outside the accuracy budget"):
            assert budget.misses(measured) and row["throughput"] is None
        else:
            assert budget.misses(measured) == "", name
    assert any("fp16" in line for line in document["not_tried"])  # no GPU here, and it says so
    page = (tmp_path / "report" / "tune.html").read_text()
    assert "<h2>Variants</h2>" in page and all(name in page for name in rows)
    written = load_spec(searchable).spec.model("classifier")
    chosen = document["variant"] if document["written"] else None  # no confirmed winner: nothing written
    assert (written.variant is None) == (chosen is None)
    if document["variant"] is None:  # the original kept: its screening climb is the search's first step
        assert rows["original"]["throughput"] in [p["bench"]["result"]["throughput"] for p in document["points"]]
    if chosen is not None:
        assert written.variant.model_dump(exclude_none=True) == {"per_channel": True, **chosen}
        assert rows[next(n for n, r in rows.items() if r["recipe"] and r["recipe"]["recipe"] == chosen["recipe"])]
    code, _, output = _build(searchable, tmp_path / "tuned")
    assert code == 0, output
    lock = read_lock(tmp_path / "tuned" / "demo").models["classifier"]
    if chosen is not None and chosen["recipe"] != "optimized":
        assert budget.misses(Accuracy(**lock["variant"]["accuracy"])) == ""
    assert (lock["capacity"]["rps"] > 0) if document["written"] else ("capacity" not in lock)


def _answers(server: TritonServer) -> list[float]:
    client = grpcclient.InferenceServerClient(server.endpoints.grpc_url)
    request = grpcclient.InferInput("features", [1, 4], "FP32")
    request.set_data_from_numpy(np.linspace(-1, 1, 4, dtype=np.float32)[np.newaxis])
    try:
        return client.infer("classifier", [request]).as_numpy("logits").ravel().tolist()
    finally:
        client.close()


@pytest.mark.parametrize(
    ("edit", "args", "message"),
    [
        ("", ["--rate", "100"], "leave out --rate"),
        ("", ["--input-data", "/tmp"], "outside the project"),
        ("    variant: {recipe: optimized}\n", [], "already built as variant optimized"),
    ],
)
def test_tune_variants_refuses_before_any_server_starts(
    searchable: Path, edit: str, args: list[str], message: str
) -> None:
    if edit:
        text = searchable.read_text().replace("    slo: {p99_ms: 15", edit + "    slo: {p99_ms: 15", 1)
        searchable.write_text(text)
    done = CliRunner().invoke(main, ["tune", "classifier", "-f", str(searchable), "--variants", *args])
    assert done.exit_code == UsageError.exit_code and message in done.output, done.output
    assert "Triton pid" not in done.output


def test_tune_variants_is_for_onnx_models(searchable: Path) -> None:
    done = CliRunner().invoke(main, ["tune", "postprocess", "-f", str(searchable), "--variants", "--p99-ms", "5"])
    assert done.exit_code == UsageError.exit_code and "for kind: onnx models" in done.output, done.output
