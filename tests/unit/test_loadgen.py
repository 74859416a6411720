"""Window statistics, stability and server-statistics deltas (pure code)."""

from __future__ import annotations

import math

from tritonkit.perf.stats import Sample, is_stable, percentile, server_delta, split_windows, summarize


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert math.isnan(percentile([], 50))


def test_latency_counts_from_intended_time_not_send_time() -> None:
    late = Sample(intended=0.0, sent=0.5, done=0.6)
    assert math.isclose(late.latency, 0.6) and math.isclose(late.lag, 0.5)
    stats = summarize([late], start=0.0, width=1.0)
    assert math.isclose(stats.p99_ms, 600.0) and math.isclose(stats.lag_p99_ms, 500.0)


def test_windows_throughput_and_errors() -> None:
    samples = [Sample(i * 0.01, i * 0.01, i * 0.01 + 0.005, ok=(i % 10 != 0)) for i in range(300)]
    windows = split_windows(samples, start=0.0, width=1.0)
    assert len(windows) == 2
    assert windows[0].completed == 90 and windows[0].errors == 10
    assert math.isclose(windows[0].throughput, 90.0)
    assert windows[0].p50_ms <= windows[0].p90_ms <= windows[0].p99_ms <= windows[0].max_ms


def test_stability_needs_three_agreeing_windows_on_throughput_and_p99() -> None:
    steady = [Sample(i * 0.01, i * 0.01, i * 0.01 + 0.005) for i in range(500)]
    windows = split_windows(steady, 0.0, 1.0)
    assert is_stable(windows)
    assert not is_stable(windows[:2])
    spiky = steady[:-100] + [Sample(s.intended, s.sent, s.done + 0.05) for s in steady[-100:]]
    assert not is_stable(split_windows(spiky, 0.0, 1.0))


def test_server_delta() -> None:
    def stats(success: int, queue_ns: int, infer_ns: int, batches: dict[int, int]) -> dict:
        return {
            "inference_stats": {
                "success": {"count": success, "ns": 0},
                "queue": {"count": success, "ns": queue_ns},
                "compute_infer": {"count": success, "ns": infer_ns},
            },
            "batch_stats": [{"batch_size": b, "compute_infer": {"count": n}} for b, n in batches.items()],
        }

    delta = server_delta(stats(10, 1_000_000, 2_000_000, {1: 10}), stats(30, 3_000_000, 6_000_000, {1: 12, 4: 4, 6: 1}))
    assert delta.requests == 20
    assert math.isclose(delta.queue_us, 100.0) and math.isclose(delta.compute_infer_us, 200.0)
    assert delta.batch_sizes == {1: 2, 4: 4, 6: 1}
    assert math.isclose(delta.mean_batch_size, (2 + 16 + 6) / 7)
