"""``tritonkit bench``: closed-loop (concurrency) and open-loop (request rate) load tests.

The meter is NVIDIA's perf_analyzer (:mod:`tritonkit.perf.analyzer`), the C++ client Model
Analyzer uses. There is no second, Python load generator any more: on the 2-core machines this
was built on, one in Python shared the cores with the server it measured and read 0.61x
perf_analyzer's throughput at concurrency 8 and 0.79x at 32 (``benchmarks/bench_vs_perf_analyzer.py``,
2026-12-01), however cheap it was made, so its figures could not be compared, planned or tuned
with. Where perf_analyzer is not installed, bench (and tune, which measures through it) stops with
:class:`~tritonkit.errors.DependencyError` and the install line, instead of measuring the client.

Each point is one perf_analyzer run in time windows until three agree within 10% on throughput
and p99 (or ``max_windows``; a point that never settles is measured once more with the bar
lifted and marked unstable). Open-loop arrivals are Poisson (or constant), and perf_analyzer measures
latency from each request's scheduled send time. The server's own breakdown (queue, compute,
executed batch sizes) comes from deltas of Triton's statistics over the same run. Both the random
data and ``input_data`` are written as perf_analyzer JSON, so every point sends the same requests.

Example:
    >>> points = bench("classifier", concurrency=[1, 8], url="127.0.0.1:8001")
    >>> points[1].result.throughput, points[1].server.mean_batch_size
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from tritonkit.errors import UsageError
from tritonkit.events import Event, Progress, emit
from tritonkit.perf.analyzer import Windows, measure_point, require_analyzer
from tritonkit.perf.inputs import to_analyzer_json, workload_for
from tritonkit.perf.stats import BenchPoint
from tritonkit.serve.client import default_address


def bench(
    model: str,
    *,
    url: str | None = None,
    protocol: str = "grpc",
    concurrency: Sequence[int] = (),
    rate: Sequence[float] = (),
    poisson: bool = True,
    batch_size: int = 1,
    window_s: float = 2.0,
    max_windows: int = 10,
    progress: Progress | None = None,
    input_data: Path | None = None,
    shapes: Mapping[str, list[int]] | None = None,
    windows: Windows = Windows.UNTIL_STABLE,
) -> list[BenchPoint]:
    """Measure ``model`` at each concurrency (closed loop) or rate (open loop) with perf_analyzer.

    Args:
        input_data: real inputs (a ``.npy`` file, a directory, or perf_analyzer JSON; see
            :mod:`tritonkit.perf.inputs`); random data when ``None``.
        shapes: fixed sizes for variable dims of random data, ``{"x": [3, 224, 224]}``.
        windows: how many perf_analyzer windows measure each point (:class:`~tritonkit.perf.analyzer.Windows`:
            until three agree, bench's default; or exactly three, tune's, ``max_windows`` unused).

    Raises:
        ServerError: unreachable server, unknown or unready model, or perf_analyzer failing on it.
        UsageError: neither or both of ``concurrency`` and ``rate``.
        DependencyError: perf_analyzer is not installed or cannot run.
    """
    if bool(concurrency) == bool(rate):
        raise UsageError(
            "give either concurrency levels or request rates",
            hint="closed loop: concurrency levels such as 1 and 8; open loop: request rates such as 50 and 200",
        )
    analyzer = require_analyzer()
    address = url or default_address(protocol)
    workload = workload_for(model, address, protocol, input_data, shapes or {})

    def report(label: str, done: int, total: int) -> None:
        emit(progress, Event("bench", label, f"window {done}/{total}", done=done, total=total, unit="windows"))

    levels = [("concurrency", float(c)) for c in concurrency] + [("rate", float(r)) for r in rate]
    with tempfile.TemporaryDirectory(prefix="tritonkit-bench-") as scratch:
        data = to_analyzer_json(workload.sample, Path(scratch) / "input.json")
        return [
            measure_point(
                analyzer,
                model,
                address,
                protocol,
                mode,
                level,
                workload=workload,
                input_data=data,
                poisson=poisson,
                batch_size=batch_size,
                window_s=window_s,
                max_windows=max_windows,
                report=report,
                windows=windows,
            )  # fmt: skip
            for mode, level in levels
        ]
