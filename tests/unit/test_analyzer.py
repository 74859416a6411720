"""perf_analyzer's command line and CSV, without running it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonkit.perf.analyzer import Analyzer, _from_passes, _passes, _steady, command, parse_csv

CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
    "8,4639.79,1,685,279,43,463,247,0,1387,2081,3860,8905\n"
)


def test_csv_row_by_column_name() -> None:
    row = parse_csv(CSV)
    assert row["Inferences/Second"] == pytest.approx(4639.79)
    assert row["p99 latency"] == 8905 and row["Concurrency"] == 8


def test_csv_without_a_row_is_an_error() -> None:
    with pytest.raises(ValueError, match="no measurement row"):
        parse_csv(CSV.splitlines()[0] + "\n")


def test_closed_and_open_loop_command_lines() -> None:
    pa = Analyzer(Path("/opt/pa"))
    closed = command(pa, "m", "h:1", "grpc", "concurrency", 8, shapes={"x": [4], "0": [2, 3]}, batch_size=1,
                     window_s=1.5, max_windows=6, csv_file=Path("o.csv"))  # fmt: skip
    assert closed[:3] == ["/opt/pa", "-m", "m"]
    assert "--concurrency-range" in closed and closed[closed.index("--concurrency-range") + 1] == "8:8:1"
    assert closed[closed.index("--measurement-interval") + 1] == "1500"
    assert closed[-4:] == ["--shape", "0:2,3", "--shape", "x:4"]  # sorted by name, names kept as they are
    opened = command(pa, "m", "h:1", "http", "rate", 250, shapes={}, batch_size=4, window_s=2, max_windows=10,
                     poisson=False, csv_file=Path("o.csv"))  # fmt: skip
    assert opened[opened.index("--request-rate-range") + 1] == "250:250:1"
    assert opened[opened.index("--request-distribution") + 1] == "constant"
    assert "--async" in opened and "--async" not in closed  # open loop never waits for an answer to send
    assert opened[opened.index("-b") + 1] == "4" and opened[opened.index("-i") + 1] == "http"


def test_library_path_goes_first() -> None:
    env = Analyzer(Path("/opt/pa"), ("/venv/cuda",)).environment()
    assert env["LD_LIBRARY_PATH"].split(":")[0] == "/venv/cuda"


# perf_analyzer 2.51 -v, word for word, when even its bar fails (the demo's tune met this and exited 5)
UNSTABLE = """Request concurrency: 4
  Pass [1] throughput: 1048.02 infer/sec. p99 latency: 4824 usec
  Pass [2] throughput: 1041.29 infer/sec. p99 latency: 5539 usec
  Pass [3] throughput: 1083.01 infer/sec. p99 latency: 5012 usec
Failed to obtain stable measurement within 3 measurement windows for concurrency 4. Please try to increase \
the --measurement-interval.
"""


def test_a_point_that_never_settles_is_taken_from_its_windows() -> None:
    passes = _passes(UNSTABLE)
    assert passes == [(1048.02, 4824.0), (1041.29, 5539.0), (1083.01, 5012.0)]
    run = _from_passes(passes, window_s=1.0, batch_size=2)
    assert not run.stable and run.p99_ms == pytest.approx(5.539)  # the worst window's p99
    assert run.throughput == pytest.approx((1048.02 + 1041.29 + 1083.01) / 3 / 2)  # requests/s
    assert run.requests == round(run.throughput * 3)


def test_three_windows_are_steady_as_perf_analyzer_judges_them() -> None:
    assert _steady([(1000.0, 5000.0), (1050.0, 5200.0), (980.0, 4900.0)])
    assert not _steady([(1000.0, 5000.0), (1050.0, 6500.0), (980.0, 4900.0)])  # p99 moved 22%
    assert not _steady([(1000.0, 5000.0), (1400.0, 5000.0), (980.0, 5000.0)])  # throughput moved
    assert not _steady([(1000.0, 5000.0), (1000.0, 5000.0)])  # fewer than three
