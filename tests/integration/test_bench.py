"""tritonkit bench against the real embedded Triton: sane, internally consistent numbers."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tritonkit import ServerError, TritonServer
from tritonkit.cli import _common, main
from tritonkit.errors import DependencyError, UsageError
from tritonkit.perf.analyzer import find_analyzer, parse_csv
from tritonkit.perf.bench import bench
from tritonkit.serve.endpoints import free_port


def _consistent(point) -> None:  # type: ignore[no-untyped-def]
    r = point.result
    assert point.meter == "perf_analyzer" and point.stable in (True, False)
    assert r.completed > 0 and r.throughput > 0
    assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
    assert not point.client_limited, point.client_limited
    # the server saw at least what perf_analyzer measured (it also counts the warm-up windows)
    assert point.server.requests >= r.completed


def test_closed_loop_over_grpc_batches_under_concurrency(demo_server: TritonServer) -> None:
    points = bench("classifier", url=demo_server.endpoints.grpc_url, concurrency=[1, 8], window_s=0.5, max_windows=4)
    assert [p.level for p in points] == [1.0, 8.0]
    for point in points:
        _consistent(point)
    assert points[1].server.mean_batch_size > 1, points[1].server.batch_sizes
    assert points[1].result.throughput > points[0].result.throughput


def test_open_loop_over_http_keeps_the_rate(demo_server: TritonServer) -> None:
    url = demo_server.endpoints.http_url.removeprefix("http://")
    (point,) = bench("classifier", url=url, protocol="http", rate=[100], window_s=1.0, max_windows=4)
    _consistent(point)
    assert 80 <= point.result.throughput <= 120  # Poisson arrivals at 100/s


def test_without_a_working_perf_analyzer_bench_says_how_to_install_it(
    demo_server: TritonServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """perf_analyzer is the one meter: a binary that is not one is refused with the install line (exit 6)."""
    fake = tmp_path / "perf_analyzer"
    fake.write_text("#!/bin/sh\necho 'libcudart.so.12: cannot open shared object file' >&2\nexit 127\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TRITONKIT_PERF_ANALYZER", str(fake))
    done = CliRunner().invoke(main, ["bench", "classifier", "--url", demo_server.endpoints.grpc_url, "-c", "1"])
    assert done.exit_code == DependencyError.exit_code, done.output + done.stderr
    assert "is not a working perf_analyzer (libcudart.so.12" in done.stderr and "make perf-tools" in done.stderr


def test_bench_cli_table_report_and_bad_input(
    demo_server: TritonServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_common.console, "width", 200)
    runner = CliRunner()
    ok = runner.invoke(
        main,
        [
            "bench",
            "classifier",
            "--url",
            demo_server.endpoints.grpc_url,
            "-c",
            "2",
            "--window",
            "1",
            "--max-windows",
            "4",
            "--report",
            str(tmp_path / "report"),
        ],
    )
    assert ok.exit_code == 0, ok.output + ok.stderr
    assert "inf/s" in ok.output and "c=2" in ok.output
    png, page = tmp_path / "report" / "bench.png", tmp_path / "report" / "bench.html"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    text = page.read_text()
    assert "data:image/png;base64," in text and "<td>c=2</td>" in text

    unknown = runner.invoke(main, ["bench", "clasifier", "--url", demo_server.endpoints.grpc_url, "-c", "1"])
    assert unknown.exit_code == ServerError.exit_code
    assert "unknown model 'clasifier'" in unknown.stderr and "did you mean 'classifier'?" in unknown.stderr

    down = runner.invoke(main, ["bench", "classifier", "--url", f"127.0.0.1:{free_port()}", "-c", "1"])
    assert down.exit_code == ServerError.exit_code and "cannot reach Triton" in down.stderr

    as_json = runner.invoke(
        main, ["bench", "classifier", "--json", "--url", demo_server.endpoints.grpc_url, "-c", "2", "--window", "0.5"]
    )
    assert as_json.exit_code == 0, as_json.stderr
    doc = json.loads(as_json.stdout)  # the table went to stderr
    (point,) = doc["points"]
    assert (doc["schema"], point["mode"], point["level"]) == ("tritonkit/bench/v2", "concurrency", 2)
    assert point["result"]["throughput"] > 0 and point["server"]["mean_batch_size"] >= 1
    assert "inf/s" in as_json.stderr

    neither = runner.invoke(main, ["bench", "classifier", "--url", demo_server.endpoints.grpc_url])
    assert neither.exit_code == UsageError.exit_code and "either concurrency levels or request rates" in neither.stderr


ANALYZER = find_analyzer()


def test_bench_agrees_with_perf_analyzer_on_the_same_server(demo_server: TritonServer, tmp_path: Path) -> None:
    """tritonkit bench and perf_analyzer run by hand, alternating, at c=8: the same throughput and
    p99 within a generous bound (the host is shared; benchmarks/bench_vs_perf_analyzer.py holds
    the 10% bar at c = 1, 8, 32 and in open loop)."""
    assert ANALYZER is not None, "perf_analyzer is not installed: 'make perf-tools' installs it into .venv-perf"
    grpc = demo_server.endpoints.grpc_url
    ours, theirs = [], []
    for round_ in range(2):
        (point,) = bench("classifier", url=grpc, concurrency=[8], window_s=1.0, max_windows=6)
        ours.append((point.result.throughput, point.result.p99_ms))
        csv_file = tmp_path / f"pa{round_}.csv"
        args = [str(ANALYZER.binary), "-m", "classifier", "-u", grpc, "-i", "grpc", "--concurrency-range", "8:8:1",
                "--measurement-interval", "1000", "--percentile=99", "-s", "1000", "-f", str(csv_file)]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=ANALYZER.environment())
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        row = parse_csv(csv_file.read_text())
        theirs.append((row["Inferences/Second"], row["p99 latency"] / 1e3))
    throughput = statistics.median(o[0] for o in ours) / statistics.median(t[0] for t in theirs)
    p99 = statistics.median(o[1] for o in ours) / statistics.median(t[1] for t in theirs)
    assert 0.7 <= throughput <= 1.4 and 0.5 <= p99 <= 2.0, (ours, theirs)


def test_real_input_data_is_sent_and_checked(demo_server: TritonServer, tmp_path: Path) -> None:
    np.save(tmp_path / "features.npy", np.array([5.0, 3.4, 1.5, 0.2], dtype=np.float32))
    (point,) = bench(
        "classifier", url=demo_server.endpoints.grpc_url, concurrency=[2], window_s=0.5, max_windows=3,
        input_data=tmp_path,
    )  # fmt: skip
    assert point.result.completed > 0
    np.save(tmp_path / "wrong.npy", np.ones(4, dtype=np.float64))
    refused = CliRunner().invoke(
        main, ["bench", "classifier", "--url", demo_server.endpoints.grpc_url, "-c", "1",
               "--input-data", str(tmp_path / "wrong.npy")],
    )  # fmt: skip
    assert refused.exit_code == UsageError.exit_code and "holds float64, the model wants FP32" in refused.stderr


PICKY_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            if not np.all(x == 42.0):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"not 42: {x.ravel()[:2]}")))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))
        return responses
"""
PICKY_SPEC = """
name: picky
models:
  - name: picky
    kind: python
    path: picky
    max_batch_size: 4
    inputs: [{name: x, dtype: FP32, dims: [1]}]
    outputs: [{name: y, dtype: FP32, dims: [1]}]
"""


def test_bench_sends_the_given_data_not_random_data(tmp_path: Path) -> None:
    """A model that answers only x == 42: random data fails, the given data is served (the
    perf_analyzer engine once sent random data whatever --input-data said)."""
    from tritonkit import Endpoints, build_repository, load_spec

    (tmp_path / "picky").mkdir()
    (tmp_path / "picky" / "model.py").write_text(PICKY_MODEL)
    (tmp_path / "tritonkit.yaml").write_text(PICKY_SPEC)
    built = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "dist", cache_dir=tmp_path / "cache")
    np.save(tmp_path / "x.npy", np.array([42.0], dtype=np.float32))
    endpoints = Endpoints.allocate()
    with TritonServer(built.path, endpoints=endpoints) as server:
        (point,) = bench(
            "picky", url=server.endpoints.grpc_url, concurrency=[1], window_s=0.5, max_windows=3,
            input_data=tmp_path / "x.npy",
        )  # fmt: skip
        assert point.result.completed > 0 and point.server.requests > 0
        with pytest.raises(ServerError, match="perf_analyzer failed"):  # random data: it stops at the first failure
            bench("picky", url=server.endpoints.grpc_url, concurrency=[1], window_s=0.5)
