"""Models users actually have: each family builds, loads on the real Triton (``verify --load``)
and answers like onnxruntime in-process (rtol 1e-4).

The families (tests/integration/model_families.py) are made here from packages: TorchScript
exporter default names, the dynamo exporter, a skl2onnx pipeline (zipmap=False), a tiny BERT
with a dynamic sequence dim, external data with odd tensor names, and a fixed-batch model with
a scalar output. One repository holds them all, so one Triton serves the whole module.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner

from tests.integration.model_families import MAKERS, ODD_INPUT, ODD_OUTPUT, Family, external_data, sklearn_pipeline
from tritonkit import BuildResult, Endpoints, TritonServer, build_repository, load_spec
from tritonkit.artifact.layout import make_writable, remove_tree
from tritonkit.artifact.lock import read_lock, write_lock
from tritonkit.build import pbtxt
from tritonkit.build.verify import verify
from tritonkit.cli import main
from tritonkit.errors import SpecError, VerifyError
from tritonkit.serve.loadcheck import load_check

pytest.importorskip("skl2onnx", reason="skl2onnx is in the dev extra (make .venv/.installed)")
pytest.importorskip("onnxscript", reason="onnxscript is in the dev extra (the dynamo exporter needs it)")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Family]]:
    root = tmp_path_factory.mktemp("families")
    families = {name: make(root) for name, make in MAKERS.items()}
    # an ensemble over the odd names: step tensors are wired by those names
    ensemble = {
        "name": "odd_ensemble",
        "kind": "ensemble",
        "max_batch_size": 8,
        "steps": [{"model": "external", "inputs": {ODD_INPUT: "raw/in:0"}, "outputs": {ODD_OUTPUT: "0.result"}}],
    }
    spec = {"name": "families", "models": [*(f.entry for f in families.values()), ensemble]}
    (root / "tritonkit.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root, families


@pytest.fixture(scope="module")
def built(project: tuple[Path, dict[str, Family]], tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    root, _ = project
    return build_repository(
        load_spec(root / "tritonkit.yaml"), root / "dist", cache_dir=tmp_path_factory.mktemp("families-cache")
    )


@pytest.fixture(scope="module")
def server(built: BuildResult) -> Iterator[TritonServer]:
    with TritonServer(built.path, endpoints=Endpoints.allocate()) as running:
        yield running


def test_verify_load_loads_and_queries_every_family(built: BuildResult) -> None:
    result = CliRunner().invoke(main, ["verify", str(built.path), "--load"])
    assert result.exit_code == 0, result.output + result.stderr
    for name in MAKERS:
        assert name in result.output
    assert f"Triton loaded and answered {len(MAKERS) + 1} model(s)" in result.output


def test_ensemble_wires_odd_names(project: tuple[Path, dict[str, Family]], server: TritonServer) -> None:
    import tritonclient.http as httpclient

    _, families = project
    x = families["external"].request[ODD_INPUT]
    client = httpclient.InferenceServerClient(server.endpoints.http_url.removeprefix("http://"))
    try:
        tensor = httpclient.InferInput("raw/in:0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        via_ensemble = client.infer("odd_ensemble", [tensor]).as_numpy("0.result")
        tensor = httpclient.InferInput(ODD_INPUT, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        direct = client.infer("external", [tensor]).as_numpy(ODD_OUTPUT)
    finally:
        client.close()
    np.testing.assert_array_equal(via_ensemble, direct)


@pytest.mark.parametrize("name", list(MAKERS))
def test_family_answers_like_onnxruntime(
    name: str, project: tuple[Path, dict[str, Family]], server: TritonServer
) -> None:
    root, families = project
    _answers_like_onnxruntime(server, name, root / families[name].file, families[name].request)


def _answers_like_onnxruntime(server: TritonServer, name: str, file: Path, request: dict[str, np.ndarray]) -> None:
    """Triton's answer for ``name`` equals onnxruntime's in-process run of ``file`` on ``request``."""
    import tritonclient.http as httpclient

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, request)))
    client = httpclient.InferenceServerClient(server.endpoints.http_url.removeprefix("http://"))
    try:
        inputs = []
        for input_name, array in request.items():
            tensor = httpclient.InferInput(input_name, list(array.shape), _datatype(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(name, inputs)
    finally:
        client.close()
    for output_name, want in expected.items():
        got = result.as_numpy(output_name)
        assert got is not None, output_name
        # a tensor without dims is carried as [batch, 1] (or [1]) with reshape []: same values
        got = got.reshape(want.shape)
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=f"{name}.{output_name}")
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{name}.{output_name}")


def _datatype(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(array.dtype))


def test_exporter_names_reach_the_config_unchanged(project: tuple[Path, dict[str, Family]], built: BuildResult) -> None:
    """Defect 1: names such as "0" or onnx::Gemm_0 failed the build with a pydantic error."""
    _, families = project
    config = pbtxt.parse((built.path / "torchscript" / "config.pbtxt").read_text())
    assert [i.name for i in config.input] == families["torchscript"].notes["inputs"]
    assert [o.name for o in config.output] == families["torchscript"].notes["outputs"]
    odd = pbtxt.parse((built.path / "external" / "config.pbtxt").read_text())
    assert [i.name for i in odd.input] == [ODD_INPUT] and [o.name for o in odd.output] == [ODD_OUTPUT]


def test_rank1_and_scalar_outputs_are_reshaped(built: BuildResult) -> None:
    """Defect 3: skl2onnx's label [N] had no dims and Triton refused the config."""
    sklearn = pbtxt.parse((built.path / "sklearn" / "config.pbtxt").read_text())
    label = next(o for o in sklearn.output if o.name == "label")
    assert list(label.dims) == [1] and label.HasField("reshape") and list(label.reshape.shape) == []
    fixed = pbtxt.parse((built.path / "fixed" / "config.pbtxt").read_text())
    assert fixed.max_batch_size == 0
    by_name = {o.name: o for o in fixed.output}
    # a scalar of a non-batching model: dims [1] without reshape (Triton refuses an empty one there)
    assert list(by_name["total"].dims) == [1] and not by_name["total"].HasField("reshape")
    assert list(by_name["count"].dims) == [-1] and not by_name["count"].HasField("reshape")


def test_external_data_is_copied_locked_and_verified(built: BuildResult, tmp_path: Path) -> None:
    """Defect 2: the .data file was neither copied nor hashed; verify said ok, Triton failed."""
    lock = read_lock(built.path)
    assert "external/1/weights.data" in lock.files
    assert (built.path / "external" / "1" / "weights.data").is_file()

    copy = tmp_path / "repo"
    shutil.copytree(built.path, copy)
    make_writable(copy)
    try:
        data = copy / "external" / "1" / "weights.data"
        original = data.read_bytes()
        data.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
        (copy / "external" / "1" / "more.data").write_bytes(b"not in the lock")
        findings = {(f.kind, f.path) for f in verify(copy).findings}
        assert {("changed", "external/1/weights.data"), ("added", "external/1/more.data")} <= findings, findings
        (copy / "external" / "1" / "more.data").unlink()
        data.unlink()
        report = verify(copy)
        assert any(f.kind == "missing" and f.path == "external/1/weights.data" for f in report.findings), report
        # A repository whose lock never knew the file (what the old build wrote): still a finding.
        write_lock(copy, lock.repository, lock.models)
        report = verify(copy)
        assert [(f.kind, f.path) for f in report.findings] == [("artifact", "external/1/weights.data")], report
        # … and Triton's own reason when loaded (just the model and the ensemble over it: the other
        # families' loading is test_verify_load's)
        for other in set(MAKERS) - {"external"}:
            remove_tree(copy / other)
        check = load_check(copy)
        failed = {m.name: m for m in check.failed}
        assert set(failed) == {"external", "odd_ensemble"}, check.models  # the ensemble runs it
        assert not failed["external"].loaded and failed["external"].detail
    finally:
        remove_tree(copy)


def test_external_data_is_part_of_the_cache_key(tmp_path: Path) -> None:
    family = external_data(tmp_path)
    (tmp_path / "tritonkit.yaml").write_text(yaml.safe_dump({"name": "ext", "models": [family.entry]}))
    cache = tmp_path / "cache"
    first = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "dist", cache_dir=cache)
    data = tmp_path / "weights.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF  # same graph, other weights
    data.write_bytes(bytes(raw))
    second = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "dist", cache_dir=cache)
    assert not second.models[0].cached and second.digest != first.digest


def test_missing_external_data_is_a_spec_error_naming_the_file(tmp_path: Path) -> None:
    family = external_data(tmp_path, data_name="big.weights")
    (tmp_path / "big.weights").unlink()
    (tmp_path / "tritonkit.yaml").write_text(yaml.safe_dump({"name": "ext", "models": [family.entry]}))
    out = tmp_path / "dist"
    result = CliRunner().invoke(main, ["build", "-f", str(tmp_path / "tritonkit.yaml"), "-o", str(out)])
    assert result.exit_code == SpecError.exit_code, result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and "models[0].file" in lines[0] and "'big.weights'" in lines[0], lines
    assert lines[1].startswith("hint: ")
    assert not out.exists() or not any(out.iterdir())


def test_build_check_reports_tritons_reason(tmp_path: Path) -> None:
    """``build --check``: a model Triton refuses at load is reported with Triton's reason, exit 4."""
    family = external_data(tmp_path)
    spec = {"name": "chk", "models": [family.entry]}
    (tmp_path / "tritonkit.yaml").write_text(yaml.safe_dump(spec))
    ok = CliRunner().invoke(
        main, ["build", "-f", str(tmp_path / "tritonkit.yaml"), "-o", str(tmp_path / "d"), "--check"]
    )
    assert ok.exit_code == 0, ok.output + ok.stderr
    assert "Triton loaded and answered 1 model(s)" in ok.output
    # A parameter the backend cannot parse makes the load itself fail inside Triton.
    spec["models"][0]["parameters"] = {"intra_op_thread_count": "many"}
    (tmp_path / "tritonkit.yaml").write_text(json.dumps(spec))
    bad = CliRunner().invoke(
        main, ["build", "-f", str(tmp_path / "tritonkit.yaml"), "-o", str(tmp_path / "d"), "--check"]
    )
    assert bad.exit_code == VerifyError.exit_code, bad.output + bad.stderr
    assert "'external' failed to load" in bad.stderr and "many" in bad.stderr, bad.stderr


def test_bench_runs_on_odd_tensor_names(server: TritonServer) -> None:
    from tritonkit.perf.bench import bench

    (point,) = bench("external", url=server.endpoints.grpc_url, concurrency=[2], window_s=0.5, max_windows=3)
    assert point.result.completed > 0


def test_skl2onnx_default_zipmap_is_refused_with_the_way_out(tmp_path: Path) -> None:
    """Defect 4: a real skl2onnx ZipMap output got a hint about "a dynamic batch axis"."""
    family = sklearn_pipeline(tmp_path, zipmap=True)
    (tmp_path / "tritonkit.yaml").write_text(yaml.safe_dump({"name": "zm", "models": [family.entry]}))
    result = CliRunner().invoke(main, ["build", "-f", str(tmp_path / "tritonkit.yaml"), "-o", str(tmp_path / "d")])
    assert result.exit_code == SpecError.exit_code, result.output + result.stderr
    error, hint = [line for line in result.stderr.splitlines() if line.strip()]
    assert "'output_probability' is a sequence of maps, which Triton cannot serve" in error
    assert "'zipmap': False" in hint and "batch axis" not in hint
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_large_models_are_checked_without_loading_their_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the size limit the early check is onnx.checker on the path (no onnxruntime session
    holding every weight); it must still accept external data next to the graph."""
    import onnxruntime

    from tritonkit.build.builders import onnx as onnx_builder

    monkeypatch.setattr(onnx_builder, "_SESSION_CHECK_BYTES", 0)
    sessions: list[str] = []
    real = onnxruntime.InferenceSession

    def spy(path: str, *args: object, **kwargs: object) -> object:
        sessions.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    family = external_data(tmp_path)
    (tmp_path / "tritonkit.yaml").write_text(yaml.safe_dump({"name": "big", "models": [family.entry]}))
    result = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "d", cache_dir=tmp_path / "c")
    assert verify(result.path).ok and sessions == []


def test_infer_cli_takes_odd_names_and_fixed_batch_models(
    project: tuple[Path, dict[str, Family]], server: TritonServer, tmp_path: Path
) -> None:
    _, families = project
    x = families["external"].request[ODD_INPUT]
    np.save(tmp_path / "x.npy", x)
    runner = CliRunner()
    odd = runner.invoke(
        main,
        ["infer", "external", "--input", f"{ODD_INPUT}={tmp_path / 'x.npy'}", "--url", server.endpoints.grpc_url]
        + ["--protocol", "grpc"],
    )
    assert odd.exit_code == 0, odd.output + odd.stderr
    assert f"{ODD_OUTPUT} float32 [3, 16]" in odd.output
    fixed = runner.invoke(main, ["infer", "fixed", "--url", server.endpoints.http_url.removeprefix("http://")])
    assert fixed.exit_code == 0, fixed.output + fixed.stderr
    assert "total float32 [1]" in fixed.output and "doubled float32 [2, 4]" in fixed.output


def test_tune_reloads_a_model_with_odd_names(server: TritonServer) -> None:
    """tune reloads candidate configs through the repository API; odd names must survive the
    config round trip (JSON override) and the original is loaded back."""
    import tritonclient.http as httpclient

    from tritonkit.perf.tune import tune

    result = tune("external", p99_ms=500, url=server.endpoints.grpc_url, budget_s=12, max_points=3, window_s=0.5)
    assert result.points, result
    client = httpclient.InferenceServerClient(server.endpoints.http_url.removeprefix("http://"))
    try:
        config = client.get_model_config("external")
    finally:
        client.close()
    assert [i["name"] for i in config["input"]] == [ODD_INPUT]
    assert [o["name"] for o in config["output"]] == [ODD_OUTPUT]


def test_external_data_outside_the_project_is_refused(tmp_path: Path) -> None:
    """External data follows the project's confinement rule, through symlinks too."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    family = external_data(project)
    (project / "weights.data").rename(elsewhere / "weights.data")
    (project / "weights.data").symlink_to(elsewhere / "weights.data")
    (project / "tritonkit.yaml").write_text(yaml.safe_dump({"name": "ext", "models": [family.entry]}))
    result = CliRunner().invoke(main, ["build", "-f", str(project / "tritonkit.yaml"), "-o", str(project / "d")])
    assert result.exit_code == SpecError.exit_code, result.output + result.stderr
    assert "'weights.data', which resolves to" in result.stderr and "outside the project" in result.stderr


# ------------------------------------------------------------------ variants of converters' output

# The exporters' and converters' own graphs (not the example's): int8 dynamic quantization
# (onnxruntime.quantization, after its pre-processing) with each family's request as the data.
VARIANT_FAMILIES = ("torchscript", "dynamo", "sklearn", "bert", "fixed")
QUANTIZED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul"}


@pytest.fixture(scope="module")
def variants_built(
    project: tuple[Path, dict[str, Family]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[BuildResult, dict[str, int]]:
    """The families above, each with ``variant: {recipe: int8-dynamic, data: …}``; and how many
    requests each one's data holds."""
    root, families = project
    entries, requests = [], {}
    for name in VARIANT_FAMILIES:
        family = families[name]
        data = root / "variant-data" / name
        data.mkdir(parents=True)
        for input_name, array in family.request.items():
            np.save(data / f"{input_name.replace('/', '%2F')}.npy", array)
        batching = family.entry["max_batch_size"] > 0
        requests[name] = len(next(iter(family.request.values()))) if batching else 1  # rows, or one request
        entries.append({**family.entry, "variant": {"recipe": "int8-dynamic", "data": f"variant-data/{name}"}})
    (root / "variants.yaml").write_text(yaml.safe_dump({"name": "variants", "models": entries}, sort_keys=False))
    built = build_repository(
        load_spec(root / "variants.yaml"), root / "dist-variants", cache_dir=tmp_path_factory.mktemp("variants-cache")
    )
    return built, requests


def test_converter_outputs_get_variants_that_load_and_answer_as_built(
    project: tuple[Path, dict[str, Family]], variants_built: tuple[BuildResult, dict[str, int]]
) -> None:
    """Issue 27 on inputs nobody here wrote: the recipe runs on each exporter's graph (names,
    ai.onnx.ml operators, a fixed batch), the lock records the accuracy measured on every
    request of the data, and Triton serves exactly the file the build made."""
    root, families = project
    built, requests = variants_built
    lock = read_lock(built.path)
    for name in VARIANT_FAMILIES:
        record = lock.models[name]["variant"]
        assert record["recipe"] == "int8-dynamic" and record["accuracy"]["samples"] == requests[name], (name, record)
        assert 0 <= record["accuracy"]["max_abs_error"] < float("inf")
    for name in ("torchscript", "dynamo", "bert"):  # MatMul / Gemm weights: quantized, not copied
        graph = onnx.load(str(built.path / name / "1" / "model.onnx")).graph
        assert QUANTIZED_OPS & {node.op_type for node in graph.node}, name
    with TritonServer(built.path, endpoints=Endpoints.allocate()) as served:
        for name in VARIANT_FAMILIES:
            _answers_like_onnxruntime(served, name, built.path / name / "1" / "model.onnx", families[name].request)


def test_a_variant_of_a_model_with_external_data_is_refused_in_one_line(tmp_path: Path) -> None:
    family = external_data(tmp_path)
    np.save(tmp_path / "x.npy", family.request[ODD_INPUT])
    entry = {**family.entry, "variant": {"recipe": "int8-dynamic", "data": "x.npy"}}
    (tmp_path / "tritonkit.yaml").write_text(yaml.safe_dump({"name": "ext", "models": [entry]}))
    out = tmp_path / "dist"
    result = CliRunner().invoke(main, ["build", "-f", str(tmp_path / "tritonkit.yaml"), "-o", str(out)])
    assert result.exit_code == SpecError.exit_code, result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and "external data" in lines[0] and "models[0].variant" in lines[0], lines
    assert lines[1].startswith("hint: ")
    assert not out.exists() or not any(out.iterdir())
