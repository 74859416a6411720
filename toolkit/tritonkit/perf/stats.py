"""What bench measures, as data: windows, points, and the server's side of a run.

Pure; it does no I/O. Client-side figures (:class:`WindowStats`) come from perf_analyzer
(:mod:`tritonkit.perf.analyzer`); the server-side breakdown (:class:`ServerBreakdown`) from
deltas of Triton's statistics API over the same run (:func:`server_delta`).

Example:
    >>> delta = server_delta(stats_before, stats_after)
    >>> delta.queue_us, delta.mean_batch_size
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WindowStats:
    """Client-side numbers for one measurement window (latencies in milliseconds)."""

    start: float
    width: float
    completed: int
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    lag_p99_ms: float  # 0: perf_analyzer sends on schedule or flags the point client-limited


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class ServerBreakdown:
    """Server-side averages per request over an interval (microseconds) and executed batches."""

    requests: int
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float
    batch_sizes: dict[int, int] = field(default_factory=dict)

    @property
    def mean_batch_size(self) -> float:
        executions = sum(self.batch_sizes.values())
        return sum(size * n for size, n in self.batch_sizes.items()) / executions if executions else math.nan


def server_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> ServerBreakdown:
    """Difference of two ``model_stats`` entries of Triton's statistics API (JSON form)."""

    def stat(doc: Mapping[str, Any], name: str) -> tuple[int, int]:
        entry = doc.get("inference_stats", {}).get(name, {})
        return int(entry.get("count", 0)), int(entry.get("ns", 0))

    count_after, _ = stat(after, "success")
    count_before, _ = stat(before, "success")
    requests = count_after - count_before

    def avg_us(name: str) -> float:
        (_, ns_after), (_, ns_before) = stat(after, name), stat(before, name)
        return (ns_after - ns_before) / requests / 1e3 if requests else math.nan

    return ServerBreakdown(
        requests=requests,
        queue_us=avg_us("queue"),
        compute_input_us=avg_us("compute_input"),
        compute_infer_us=avg_us("compute_infer"),
        compute_output_us=avg_us("compute_output"),
        batch_sizes=_batch_delta(before.get("batch_stats", []), after.get("batch_stats", [])),
    )


def _batch_delta(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    def counts(entries: Iterable[Mapping[str, Any]]) -> dict[int, int]:
        return {int(e["batch_size"]): int(e.get("compute_infer", {}).get("count", 0)) for e in entries}

    old, new = counts(before), counts(after)
    delta = {size: new[size] - old.get(size, 0) for size in new}
    return {size: n for size, n in sorted(delta.items()) if n > 0}


@dataclass(frozen=True)
class BenchPoint:
    """One measured load level."""

    mode: str  # "concurrency" | "rate"
    level: float
    windows: list[WindowStats]
    result: WindowStats  # over the last (up to) three windows
    stable: bool
    client_limited: str  # "" when the generator kept up, else why not
    server: ServerBreakdown
    meter: str = "perf_analyzer"  # what measured it

    @property
    def client_overhead_ms(self) -> float:
        """Client p50 latency minus the server's mean request time (queue + compute)."""
        s = self.server
        server_ms = (s.queue_us + s.compute_input_us + s.compute_infer_us + s.compute_output_us) / 1e3
        return self.result.p50_ms - server_ms
