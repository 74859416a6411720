"""tritonkit bench against the real embedded Triton: sane, internally consistent numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonkit import ServerError, TritonServer
from tritonkit.cli import _common, main
from tritonkit.errors import UsageError
from tritonkit.perf.bench import bench
from tritonkit.serve.server import free_port


def _consistent(point) -> None:  # type: ignore[no-untyped-def]
    r = point.result
    assert r.completed > 0 and r.errors == 0
    assert math.isclose(r.throughput, r.completed / r.width)
    assert r.p50_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
    assert not point.client_limited, point.client_limited
    # the server saw (about) what the client completed over the same span
    assert point.server.requests >= r.completed * 0.9


def test_closed_loop_over_grpc_batches_under_concurrency(demo_server: TritonServer) -> None:
    points = bench("classifier", url=demo_server.endpoints.grpc_url, concurrency=[1, 8], window_s=1.0, max_windows=6)
    assert [p.level for p in points] == [1.0, 8.0]
    for point in points:
        _consistent(point)
    assert points[1].server.mean_batch_size > 1, points[1].server.batch_sizes
    assert points[1].result.throughput > points[0].result.throughput


def test_open_loop_over_http_keeps_the_rate(demo_server: TritonServer) -> None:
    url = demo_server.endpoints.http_url.removeprefix("http://")
    (point,) = bench("classifier", url=url, protocol="http", rate=[100], window_s=1.0, max_windows=6)
    _consistent(point)
    assert 85 <= point.result.throughput <= 115  # Poisson arrivals at 100/s
    assert point.result.lag_p99_ms < 5


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

    neither = runner.invoke(main, ["bench", "classifier", "--url", demo_server.endpoints.grpc_url])
    assert neither.exit_code == UsageError.exit_code and "either concurrency levels or request rates" in neither.stderr
