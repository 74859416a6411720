"""The real embedded Triton serving built repositories: both kinds, both protocols, batching."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from click.testing import CliRunner

from tritonkit import BuildResult, Endpoints, ServerError, TritonServer, build_repository, load_spec
from tritonkit.cli import main
from tritonkit.errors import UsageError
from tritonkit.perf.stats import server_delta
from tritonkit.serve.binary import stub_pycache
from tritonkit.serve.endpoints import free_port

CENTRES = np.array([[2.0, 0.0, 0.0, 1.0], [0.0, 2.0, 1.0, 0.0], [0.0, 0.0, 2.0, 2.0]], dtype=np.float32)


def _http(server: TritonServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.endpoints.http_url.removeprefix("http://"))


def test_onnx_model_over_http_classifies(demo_server: TritonServer) -> None:
    client = _http(demo_server)
    tensor = httpclient.InferInput("features", [3, 4], "FP32")
    tensor.set_data_from_numpy(CENTRES)
    result = client.infer("classifier", [tensor])
    logits = result.as_numpy("logits")
    assert logits.shape == (3, 3) and logits.dtype == np.float32
    assert list(logits.argmax(axis=1)) == [0, 1, 2]
    assert result.get_response()["model_version"] == "1"


def test_onnx_served_matches_onnxruntime_in_process(demo_server: TritonServer, demo_build: BuildResult) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    batch = rng.standard_normal((5, 4)).astype(np.float32)
    session = ort.InferenceSession(
        str(demo_build.path / "classifier" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = session.run(["logits"], {"features": batch})[0]
    client = grpcclient.InferenceServerClient(demo_server.endpoints.grpc_url)
    tensor = grpcclient.InferInput("features", [5, 4], "FP32")
    tensor.set_data_from_numpy(batch)
    got = client.infer("classifier", [tensor]).as_numpy("logits")
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_python_model_over_grpc(demo_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(demo_server.endpoints.grpc_url)
    logits = np.array([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]], dtype=np.float32)
    tensor = grpcclient.InferInput("logits", [2, 3], "FP32")
    tensor.set_data_from_numpy(logits)
    result = client.infer("postprocess", [tensor])
    probabilities = result.as_numpy("probabilities")
    np.testing.assert_allclose(probabilities.sum(axis=1), [1.0, 1.0], rtol=1e-6)
    assert [row[0] for row in result.as_numpy("label")] == [b"setosa", b"virginica"]


def test_ensemble_runs_both_steps_in_one_call(demo_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(demo_server.endpoints.grpc_url)
    samples = np.array([[2.1, 0.1, -0.2, 0.9], [0.0, 0.2, 2.1, 1.9]], dtype=np.float32)
    features = grpcclient.InferInput("features", [2, 4], "FP32")
    features.set_data_from_numpy(samples)
    ensemble = client.infer("classify", [features])
    logits = client.infer("classifier", [features]).as_numpy("logits")
    chained = grpcclient.InferInput("logits", list(logits.shape), "FP32")
    chained.set_data_from_numpy(logits)
    by_hand = client.infer("postprocess", [chained])
    assert [row[0] for row in ensemble.as_numpy("label")] == [b"setosa", b"virginica"]
    np.testing.assert_allclose(ensemble.as_numpy("probabilities"), by_hand.as_numpy("probabilities"), rtol=1e-6)


def _metric(server: TritonServer, name: str, model: str) -> float:
    with urllib.request.urlopen(server.endpoints.metrics_url, timeout=5) as response:
        text = response.read().decode()
    pattern = rf'^{name}{{[^}}]*model="{model}"[^}}]*}} ([0-9.e+]+)$'
    values = [float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE)]
    return sum(values)


def test_concurrent_requests_form_dynamic_batches_run_as_one_onnxruntime_call(demo_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(demo_server.endpoints.grpc_url)

    def model_stats() -> dict:
        return client.get_inference_statistics("classifier", as_json=True)["model_stats"][0]

    before = model_stats()
    runs_before = _metric(demo_server, "tritonkit_onnxruntime_runs_total", "classifier")
    rows_before = _metric(demo_server, "tritonkit_onnxruntime_rows_total", "classifier")
    requests = 96

    def one(i: int) -> int:
        tensor = grpcclient.InferInput("features", [1, 4], "FP32")
        tensor.set_data_from_numpy(CENTRES[i % 3 : i % 3 + 1])
        return int(client.infer("classifier", [tensor]).as_numpy("logits").argmax())

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(one, range(requests)))
    assert answers == [i % 3 for i in range(requests)]  # batching never mixes up responses

    delta = server_delta(before, model_stats())
    assert delta.requests == requests
    assert sum(size * count for size, count in delta.batch_sizes.items()) == requests
    assert delta.mean_batch_size > 1, delta.batch_sizes
    assert delta.compute_infer_us > 0 and delta.queue_us > 0

    runs = _metric(demo_server, "tritonkit_onnxruntime_runs_total", "classifier") - runs_before
    rows = _metric(demo_server, "tritonkit_onnxruntime_rows_total", "classifier") - rows_before
    assert rows == requests
    assert runs == sum(delta.batch_sizes.values())  # one onnxruntime call per executed batch
    assert runs < requests


def test_model_that_fails_to_load_reports_tritons_reason(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('weights.bin is missing')\n"
    )
    (tmp_path / "tritonkit.yaml").write_text(
        "name: broken\nmodels:\n  - name: broken\n    kind: python\n    path: broken\n"
        "    inputs: [{name: x, dtype: FP32, dims: [1]}]\n    outputs: [{name: y, dtype: FP32, dims: [1]}]\n"
    )
    result = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "out", cache_dir=tmp_path / "cache")
    server = TritonServer(result.path, endpoints=Endpoints.allocate())
    with pytest.raises(ServerError, match="model 'broken' failed to load: .*weights.bin is missing") as info:
        server.start()
    assert info.value.hint
    assert server.pid is None  # stopped after the failure


def test_infer_command(demo_server: TritonServer, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", CENTRES)
    url = demo_server.endpoints.http_url.removeprefix("http://")
    result = CliRunner().invoke(
        main, ["infer", "classifier", "--input", f"features={tmp_path / 'x.npy'}", "--url", url]
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert "logits float32 [3, 3]" in result.output

    np.save(tmp_path / "wrong.npy", CENTRES.astype(np.float64))
    result = CliRunner().invoke(
        main, ["infer", "classifier", "--input", f"features={tmp_path / 'wrong.npy'}", "--url", url]
    )
    assert result.exit_code == UsageError.exit_code
    assert "holds float64, the model wants FP32" in result.stderr and "hint:" in result.stderr

    result = CliRunner().invoke(main, ["infer", "clasifier", "--url", url])
    assert result.exit_code == ServerError.exit_code
    assert "did you mean 'classifier'?" in result.stderr


def test_infer_json_with_the_server_from_tritonkit_url(demo_server: TritonServer) -> None:
    url = demo_server.endpoints.http_url.removeprefix("http://")
    result = CliRunner().invoke(main, ["infer", "postprocess", "--json"], env={"TRITONKIT_URL": url})
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "tritonkit/infer/v1" and doc["model"] == "postprocess"
    assert doc["outputs"]["probabilities"]["shape"] == [1, 3] and doc["outputs"]["label"]["datatype"] == "object"
    assert isinstance(doc["outputs"]["label"]["data"][0][0], str)  # BYTES as text
    nowhere = CliRunner().invoke(main, ["infer", "postprocess"], env={"TRITONKIT_URL": f"127.0.0.1:{free_port()}"})
    assert nowhere.exit_code == ServerError.exit_code and "cannot reach Triton" in nowhere.stderr


def _ports(endpoints: Endpoints) -> tuple[int, int, int]:
    return endpoints.http_port, endpoints.grpc_port, endpoints.metrics_port


def test_serve_passes_arguments_after_dashdash_and_says_why_triton_stopped(demo_build: BuildResult) -> None:
    ports = [str(port) for port in _ports(Endpoints.allocate())]
    args = ["serve", str(demo_build.alias), "--http-port", ports[0], "--grpc-port", ports[1]]
    args += ["--metrics-port", ports[2]]
    command = [sys.executable, "-m", "tritonkit", *args, "--", "--no-such-flag=1"]
    bad = subprocess.run(command, capture_output=True, text=True, timeout=120)  # serve sets a SIGTERM handler
    assert bad.returncode == ServerError.exit_code, bad.stdout + bad.stderr
    assert "error: tritonserver exited with code 1: unrecognized option '--no-such-flag=1'" in bad.stderr
    own = CliRunner().invoke(main, [*args, "--", "--model-repository=/tmp"])
    assert own.exit_code == UsageError.exit_code and "'--model-repository' after -- is set by tritonkit" in own.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = CliRunner().invoke(main, ["serve", str(demo_build.alias), "--http-port", str(port)])
    assert taken.exit_code == ServerError.exit_code
    assert f"error: HTTP port {port} is already in use by another process: pid {os.getpid()}" in taken.stderr


def test_a_port_taken_before_triton_binds_it_is_retried_on_fresh_ports(
    demo_build: BuildResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bind race of a shared CI runner: a port free when chosen is taken before Triton binds
    it. On allocated endpoints the server starts on fresh ones; endpoints a user chose fail with
    the line that says why."""
    import tritonkit.serve.server as server_module

    monkeypatch.setattr(server_module, "check_ports_free", lambda endpoints: None)  # lose the race for real
    chosen = Endpoints.allocate()
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", chosen.grpc_port))
        thief.listen()
        server = TritonServer(demo_build.path, endpoints=chosen, models=[])
        with server:
            assert server.endpoints != chosen and chosen.grpc_port not in _ports(server.endpoints)
            with urllib.request.urlopen(server.endpoints.http_url + "/v2/health/live", timeout=5) as live:
                assert live.status == 200
        fixed = Endpoints("127.0.0.1", chosen.http_port, chosen.grpc_port, chosen.metrics_port)  # a user's choice
        # (with the holder check off, as here, the reason is Triton's line; on, it names the holder)
        with pytest.raises(ServerError, match=r"failed to start GRPC service: .*already in use"):
            TritonServer(demo_build.path, endpoints=fixed, models=[]).start()


def test_equal_ports_given_to_triton_are_explained_by_tritons_reason(demo_build: BuildResult) -> None:
    """Triton prints its 400-line --help before the reason: the message names the reason."""
    e = Endpoints.allocate()
    server = TritonServer(demo_build.path, endpoints=e, models=[], extra_args=[f"--metrics-port={e.grpc_port}"])
    with pytest.raises(ServerError) as refused:
        server.start()
    assert "cannot listen to GRPC requests and metrics requests at the same address" in refused.value.message


def test_infer_against_no_server_is_one_clear_line() -> None:
    result = CliRunner().invoke(main, ["infer", "classifier", "--url", f"127.0.0.1:{free_port()}"])
    assert result.exit_code == ServerError.exit_code
    assert result.stderr.startswith("error: cannot reach Triton")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_command_binds_loopback_and_stops_cleanly(demo_build: BuildResult, stop_signal: signal.Signals) -> None:
    ports = [str(port) for port in _ports(Endpoints.allocate())]
    command = [sys.executable, "-m", "tritonkit", "serve", str(demo_build.alias),
               "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # serve prints this once every model is ready
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        assert any("Ctrl-C to stop" in line for line in lines), "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/models/classifier/ready", timeout=5) as r:
            assert r.status == 200
        listening = Path("/proc/net/tcp").read_text()
        assert f"0100007F:{int(ports[0]):04X}" in listening  # bound to 127.0.0.1, not 0.0.0.0
        found = subprocess.run(["pgrep", "-f", f"tritonserver.*http-port={ports[0]}"], capture_output=True, text=True)
        server_pids = [int(pid) for pid in found.stdout.split() if int(pid) != process.pid]
        assert server_pids
        process.send_signal(stop_signal)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{ports[0]}" in output and "stopped (exit code" in output
    for pid in server_pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower()


def test_serve_refuses_a_tampered_repository(writable_copy: Path) -> None:
    (writable_copy / "classifier" / "1" / "model.onnx").write_bytes(b"oops")
    result = CliRunner().invoke(main, ["serve", str(writable_copy), "--http-port", str(free_port())])
    assert result.exit_code == ServerError.exit_code
    assert "failed verification" in result.stderr and "hint:" in result.stderr


ADD = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "x").as_numpy() for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", x + ADDEND)]) for x in inputs]
"""


def test_served_python_models_neither_write_nor_read_bytecode_in_the_repository(tmp_path: Path) -> None:
    """The stub ignores PYTHONDONTWRITEBYTECODE: as root it wrote __pycache__/ into served
    repositories, and it ran a .pyc planted there (an unchecked-hash one, whatever the source
    says; issue "a root of trust", row 3). The stub's bytecode now lives in a cache of its own,
    outside every repository; verify refuses any .pyc the lock does not list."""
    import py_compile

    from tritonkit.artifact.layout import make_writable
    from tritonkit.build.verify import verify

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.py").write_text(ADD.replace("ADDEND", "1"))
    (tmp_path / "tritonkit.yaml").write_text(
        "name: t\nmodels:\n  - name: m\n    kind: python\n    path: m\n    max_batch_size: 4\n"
        "    inputs: [{name: x, dtype: FP32, dims: [1]}]\n    outputs: [{name: y, dtype: FP32, dims: [1]}]\n"
    )
    built = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "out", cache_dir=tmp_path / "cache")

    def answer() -> float:
        with TritonServer(built.path, endpoints=Endpoints.allocate()) as server:
            client = httpclient.InferenceServerClient(server.endpoints.http_url.removeprefix("http://"))
            x = httpclient.InferInput("x", [1, 1], "FP32")
            x.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
            value = float(client.infer("m", [x]).as_numpy("y")[0, 0])
            client.close()
            return value

    assert answer() == 1.0
    assert not list(built.path.rglob("__pycache__")), "the stub wrote bytecode into the repository"
    source_dir = (built.path / "m" / "1").resolve()
    own = stub_pycache() / source_dir.relative_to(source_dir.anchor) / f"model.{sys.implementation.cache_tag}.pyc"
    assert own.is_file(), "the stub kept no bytecode in its own cache (every start compiles torch again)"
    assert verify(built.path).ok

    version = built.path / "m" / "1"
    make_writable(version)
    planted = tmp_path / "evil" / "model.py"
    planted.parent.mkdir()
    planted.write_text(ADD.replace("ADDEND", "1000"))
    (version / "__pycache__").mkdir()
    py_compile.compile(
        str(planted), cfile=str(version / "__pycache__" / f"model.{sys.implementation.cache_tag}.pyc"),
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )  # fmt: skip
    report = verify(built.path)
    assert [f.kind for f in report.findings] == ["added"] and "bytecode" in report.findings[0].message
    assert answer() == 1.0  # served without verifying: the source still runs, not the planted bytecode
