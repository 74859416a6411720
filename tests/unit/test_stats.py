"""Percentiles and server-statistics deltas (pure code)."""

from __future__ import annotations

import math

from tritonkit.perf.stats import percentile, server_delta


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert math.isnan(percentile([], 50))


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
