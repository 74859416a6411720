"""Load-test arithmetic: latency samples → measurement windows → stable points.

The pure core of ``tritonkit bench`` and ``tune``; it does no I/O. A
request is recorded as a :class:`Sample` with its *intended* send time, so open-loop latency is
measured from when a request should have left, not when an overloaded client got round to it
(no coordinated omission). Server-side numbers come from deltas of Triton's statistics API.

Example:
    >>> windows = split_windows(samples, start=0.0, width=2.0)
    >>> [w.throughput for w in windows], is_stable(windows)
    ([101.5, 99.0, 100.5], True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One request: times in seconds on one monotonic clock."""

    intended: float
    sent: float
    done: float
    ok: bool = True

    @property
    def latency(self) -> float:
        """From the intended send time to completion."""
        return self.done - self.intended

    @property
    def lag(self) -> float:
        """How late the client sent it (client-side overhead or saturation)."""
        return self.sent - self.intended


@dataclass(frozen=True)
class WindowStats:
    """Client-side numbers for one measurement window (latencies in milliseconds)."""

    start: float
    width: float
    completed: int
    errors: int
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    lag_p99_ms: float


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(samples: Sequence[Sample], start: float, width: float) -> WindowStats:
    """Stats of the samples that *completed* in ``[start, start + width)``."""
    inside = [s for s in samples if start <= s.done < start + width]
    good = [s.latency * 1e3 for s in inside if s.ok]
    lags = [s.lag * 1e3 for s in inside]
    return WindowStats(
        start=start,
        width=width,
        completed=len(good),
        errors=len(inside) - len(good),
        throughput=len(good) / width if width > 0 else math.nan,
        p50_ms=percentile(good, 50),
        p90_ms=percentile(good, 90),
        p99_ms=percentile(good, 99),
        max_ms=max(good) if good else math.nan,
        lag_p99_ms=percentile(lags, 99),
    )


def split_windows(samples: Sequence[Sample], start: float, width: float) -> list[WindowStats]:
    """Consecutive full windows of ``width`` seconds from ``start`` up to the last completion."""
    if not samples:
        return []
    end = max(s.done for s in samples)
    count = int((end - start) // width)
    return [summarize(samples, start + i * width, width) for i in range(count)]


def is_stable(windows: Sequence[WindowStats], *, last: int = 3, tolerance: float = 0.10) -> bool:
    """True when the last ``last`` windows agree within ``tolerance`` on throughput and p99."""
    if len(windows) < last:
        return False
    tail = windows[-last:]
    for metric in ("throughput", "p99_ms"):
        values = [getattr(w, metric) for w in tail]
        if any(math.isnan(v) for v in values):
            return False
        mean = sum(values) / len(values)
        if mean == 0 or any(abs(v - mean) / mean > tolerance for v in values):
            return False
    return True


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
    client_cpu: float  # highest worker CPU use, fraction of one core
    processes: int  # load worker processes used
    server: ServerBreakdown
    engine: str = "builtin"  # "perf_analyzer" or "builtin": the meter that measured it

    @property
    def client_overhead_ms(self) -> float:
        """Client p50 latency minus the server's mean request time (queue + compute)."""
        s = self.server
        server_ms = (s.queue_us + s.compute_input_us + s.compute_infer_us + s.compute_output_us) / 1e3
        return self.result.p50_ms - server_ms
