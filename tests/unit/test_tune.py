"""The pure half of tune: settings <-> config, the concurrency step, the stats-steered proposals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tritonkit import BenchPoint, TunePoint, TuneSettings, UsageError
from tritonkit.perf.stats import ServerBreakdown, WindowStats
from tritonkit.perf.tune import Bounds, _dominated, _step_down, better, next_concurrency, parse_duration, propose

CONFIG = {
    "name": "m",
    "max_batch_size": 32,
    "instance_group": [{"name": "m_0", "count": 1, "kind": "KIND_CPU"}],
    "dynamic_batching": {"preferred_batch_size": [8, 16], "max_queue_delay_microseconds": "2000"},
    "model_warmup": [{"name": "w", "batch_size": 8}],
}


def _point(
    settings: TuneSettings,
    *,
    throughput: float = 1000.0,
    p99: float = 5.0,
    batches: dict[int, int] | None = None,
    queue_us: float = 100.0,
    compute_us: float = 400.0,
    concurrency: int = 8,
    within: bool = True,
) -> TunePoint:
    window = WindowStats(0.0, 1.0, int(throughput), throughput, p99 / 2, p99 * 0.8, p99, p99 * 1.5, 0.0)
    server = ServerBreakdown(int(throughput), queue_us, 10.0, compute_us - 20.0, 10.0, batches or {1: 10})
    bench = BenchPoint("concurrency", concurrency, [window], window, True, "", server)
    return TunePoint(settings, bench, within)


def test_settings_read_from_and_applied_to_triton_json() -> None:
    settings = TuneSettings.from_config(CONFIG)
    assert settings == TuneSettings(1, 32, 2000, (8, 16))
    applied = TuneSettings(3, 64, 500, ()).apply(CONFIG)
    assert applied["max_batch_size"] == 64
    assert applied["instance_group"] == [{"name": "m_0", "count": 3, "kind": "KIND_CPU"}]
    assert applied["dynamic_batching"] == {"preferred_batch_size": [], "max_queue_delay_microseconds": 500}
    assert applied["model_warmup"] == CONFIG["model_warmup"]
    assert CONFIG["max_batch_size"] == 32  # the original is not modified
    assert TuneSettings.from_config(applied) == TuneSettings(3, 64, 500, ())


def test_batches_stop_at_the_smallest_reachable_preferred_size() -> None:
    settings = TuneSettings(1, 32, 2000, (8, 16))
    assert settings.batch_limit(7.9) == 8
    assert settings.batch_limit(12.0) == 16
    assert settings.batch_limit(20.0) == 32
    assert TuneSettings(1, 32, 0).batch_limit(5.0) == 32


def test_next_concurrency_doubles_far_from_the_budget_and_aims_near_it() -> None:
    bounds = Bounds(max_concurrency=100)
    assert next_concurrency(4, p99_ms=2.0, slo_ms=10.0, bounds=bounds) == 8
    assert next_concurrency(16, p99_ms=6.0, slo_ms=10.0, bounds=bounds) == 24  # 0.9 * 10 / 6 = 1.5x
    assert next_concurrency(16, p99_ms=9.9, slo_ms=10.0, bounds=bounds) == 18  # at least +10%
    assert next_concurrency(1, p99_ms=9.9, slo_ms=10.0, bounds=bounds) == 2  # always advances
    assert next_concurrency(80, p99_ms=1.0, slo_ms=10.0, bounds=bounds) == 100


def test_full_preferred_batches_lift_the_limit_first() -> None:
    best = _point(TuneSettings(1, 32, 2000, (8, 16)), batches={8: 100})
    proposals = propose(best, Bounds(), slo_ms=10.0)
    assert proposals[0] == TuneSettings(1, 32, 2000, ())
    assert TuneSettings(1, 64, 2000, ()) in proposals


def test_queue_time_that_is_batching_delay_asks_for_a_shorter_delay() -> None:
    best = _point(TuneSettings(1, 32, 2000), batches={1: 100}, queue_us=2100, compute_us=300, p99=3.0)
    proposals = propose(best, Bounds(), slo_ms=10.0)
    assert proposals[0] == TuneSettings(1, 32, 500)
    assert TuneSettings(2, 32, 2000) not in proposals  # the model is idle: more copies cannot help


def test_small_batches_with_requests_in_flight_ask_to_wait_longer_then_for_a_preferred_size() -> None:
    eager = _point(TuneSettings(1, 32, 0), batches={2: 50, 3: 50}, queue_us=300, compute_us=900, p99=9.0)
    assert TuneSettings(1, 32, 250) in propose(eager, Bounds(), slo_ms=10.0)[:2]
    waiting = _point(TuneSettings(1, 32, 1000), batches={6: 50, 7: 50}, queue_us=900, compute_us=900, p99=9.0)
    proposals = propose(waiting, Bounds(), slo_ms=10.0)
    assert TuneSettings(1, 32, 2500) in proposals[:2]  # x4, capped at a quarter of the budget
    assert TuneSettings(1, 32, 1000, (4,)) in proposals[:2]


def test_preferred_equal_to_max_batch_size_is_no_preference() -> None:
    config = {**CONFIG, "dynamic_batching": {"preferred_batch_size": [32]}}
    assert TuneSettings.from_config(config).preferred_batch_size == ()


def test_a_busy_model_asks_for_another_instance_within_bounds() -> None:
    busy = _point(TuneSettings(2, 32, 100), batches={12: 100}, queue_us=200, compute_us=1500, p99=9.0)
    assert TuneSettings(3, 32, 100) in propose(busy, Bounds(max_instances=4), slo_ms=10.0)
    assert TuneSettings(3, 32, 100) not in propose(busy, Bounds(max_instances=2), slo_ms=10.0)
    assert TuneSettings(1, 32, 100) in propose(busy, Bounds(max_instances=2), slo_ms=10.0)


def test_proposals_respect_bounds_and_never_repeat_the_best() -> None:
    best = _point(TuneSettings(1, 128, 0), batches={128: 50}, queue_us=10, compute_us=2000, p99=2.0)
    proposals = propose(best, Bounds(max_instances=1, max_batch=128), slo_ms=10.0)
    assert best.settings not in proposals
    assert all(p.max_batch_size <= 128 and p.instances == 1 for p in proposals)
    assert all(p.max_queue_delay_microseconds <= 2500 for p in proposals)  # a quarter of the budget


def test_better_needs_the_slo_and_a_margin() -> None:
    base = _point(TuneSettings(1, 8, 0), throughput=1000)
    assert better(_point(TuneSettings(1, 16, 0), throughput=1030), base, rate=None)
    assert not better(_point(TuneSettings(1, 16, 0), throughput=1010), base, rate=None)
    assert not better(_point(TuneSettings(1, 16, 0), throughput=5000, within=False), base, rate=None)
    assert better(_point(TuneSettings(1, 16, 0), p99=4.0), _point(TuneSettings(1, 8, 0), p99=5.0), rate=100.0)
    assert better(base, None, rate=None)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600), ("45", 45), (" 2M ", 120)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "0s", "m"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(UsageError, match="is not a duration"):
        parse_duration(text)


def test_confirmation_claims_only_what_every_pair_agrees_on() -> None:
    from tritonkit.perf.search import Confirmation

    sure = Confirmation((1.31, 1.22, 1.40))
    assert sure.confirmed and sure.median == 1.31 and (sure.low, sure.high) == (1.22, 1.40)
    assert sure.describe() == "1.31x (1.22-1.40 over 3 interleaved pairs)"
    noisy = Confirmation((1.4, 0.97, 1.1))  # the spread crosses 1.0: no improvement is claimed
    assert not noisy.confirmed and noisy.median == 1.1
    assert not Confirmation(()).confirmed


def test_batching_that_does_not_pay_asks_for_one_request_per_instance() -> None:
    settings = TuneSettings(2, 32, 0)
    solo = _point(settings, batches={1: 10}, compute_us=12_000.0, concurrency=1)
    # batches of 2 that take twice as long as one request: an item costs what it did alone
    flat = _point(settings, batches={2: 10}, compute_us=24_000.0, concurrency=4)
    assert TuneSettings(2, 8, 0) in propose(flat, Bounds(min_batch=8), slo_ms=50, solo=solo)
    assert TuneSettings(2, 1, 0) in propose(flat, Bounds(), slo_ms=50, solo=solo)
    # batches of 2 for 1.2x the time: batching pays, and one instance alone has no one to wait for
    paying = _point(settings, batches={2: 10}, compute_us=14_400.0, concurrency=4)
    assert all(c.max_batch_size > 1 for c in propose(paying, Bounds(), slo_ms=50, solo=solo))
    single = _point(TuneSettings(1, 32, 0), batches={2: 10}, compute_us=24_000.0, concurrency=4)
    assert all(c.max_batch_size > 1 for c in propose(single, Bounds(), slo_ms=50, solo=solo))
    assert all(c.max_batch_size > 1 for c in propose(flat, Bounds(), slo_ms=50))  # nothing to compare with


def test_a_candidate_slower_at_the_same_concurrency_with_no_lower_p99_cannot_win() -> None:
    best = _point(TuneSettings(2, 32, 0), throughput=150.0, p99=40.0, concurrency=4)
    assert _dominated(_point(TuneSettings(3, 32, 0), throughput=152.0, p99=45.0, concurrency=4), best)
    assert not _dominated(_point(TuneSettings(3, 32, 0), throughput=160.0, p99=45.0, concurrency=4), best)
    assert not _dominated(_point(TuneSettings(3, 32, 0), throughput=140.0, p99=30.0, concurrency=4), best)
    assert not _dominated(_point(TuneSettings(3, 32, 0), throughput=140.0, p99=45.0, concurrency=5), best)
    assert [_step_down(c) for c in (1, 2, 3, 4, 8)] == [1, 1, 2, 3, 6]


def test_a_winner_whose_re_measurement_broke_the_budget_is_never_claimed() -> None:
    """The busy-host defect: after confirmation kept the original settings, the original's median
    re-measured point was over the budget, and tune reported it as ``best``."""
    from tritonkit.perf.search import TuneResult

    settings = TuneSettings(1, 8, 100, ())
    held = TuneResult("m", p99_ms=10.0, rate=None, original=settings, best=_point(settings, p99=9.0))
    held.withdraw_unheld()
    assert held.best is not None and not held.not_confirmed and held.capacity() is not None
    over = _point(settings, p99=14.5, within=False)
    broke = TuneResult("m", p99_ms=10.0, rate=None, original=settings, best=over)
    broke.withdraw_unheld()
    assert broke.best is None and broke.unconfirmed is over and broke.capacity() is None
    assert broke.not_confirmed == f"{settings.label()} re-measured p99 14.50 ms at c=8, over the 10 ms p99 budget"


def test_threads_are_the_onnxruntime_parameter_both_backends_read() -> None:
    config = {**CONFIG, "parameters": {"intra_op_thread_count": {"string_value": "1"}}}
    settings = TuneSettings.from_config(config)
    assert settings.threads == 1 and settings.label().endswith("thr 1")
    applied = TuneSettings(2, 32, 0, (), threads=3).apply(config)
    assert applied["parameters"]["intra_op_thread_count"] == {"string_value": "3"}
    assert TuneSettings.from_config(CONFIG).threads == 0  # unset: the backend's default, and not written
    assert "parameters" not in TuneSettings(1, 32, 0).apply(CONFIG)


def test_a_gpu_execution_accelerator_is_a_setting_that_keeps_what_was_written_beside_it() -> None:
    """Triton's ``optimization.execution_accelerators.gpu_execution_accelerator``, as both
    onnxruntime backends read it (model_config.proto: ``ExecutionAccelerators``)."""
    written = {"name": "tensorrt", "parameters": {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"}}
    config = {**CONFIG, "optimization": {"execution_accelerators": {"gpu_execution_accelerator": [written]}}}
    settings = TuneSettings.from_config(config)
    assert settings.accelerator == "tensorrt-fp16" and settings.label().endswith("on tensorrt-fp16")
    assert settings.apply(config)["optimization"] == config["optimization"]  # its workspace stays
    fp32 = replace(settings, accelerator="tensorrt").apply(config)
    assert fp32["optimization"]["execution_accelerators"]["gpu_execution_accelerator"] == [
        {"name": "tensorrt", "parameters": {"precision_mode": "FP32"}}
    ]
    assert replace(settings, accelerator="").apply(config)["optimization"]["execution_accelerators"] == {}
    cuda = TuneSettings(1, 32, 0, accelerator="cuda").apply(CONFIG)
    assert cuda["optimization"]["execution_accelerators"]["gpu_execution_accelerator"] == [
        {"name": "cuda", "parameters": {}}
    ]
    assert TuneSettings.from_config(cuda).accelerator == "cuda"
    assert (
        "optimization" not in TuneSettings(1, 32, 0).apply(CONFIG)
        and TuneSettings.from_config(CONFIG).accelerator == ""
    )
    unknown = {**CONFIG, "optimization": {"execution_accelerators": {"gpu_execution_accelerator": [{"name": "x"}]}}}
    assert TuneSettings.from_config(unknown).accelerator == ""  # one tune does not know: left as written
    assert TuneSettings.from_config(unknown).apply(unknown)["optimization"] == unknown["optimization"]


def test_a_busy_onnxruntime_model_is_offered_threads_within_the_cores() -> None:
    busy = _point(TuneSettings(1, 32, 0, (), threads=1), queue_us=50.0, compute_us=900.0)
    proposals = propose(busy, Bounds(cores=2), slo_ms=10.0)
    assert TuneSettings(1, 32, 0, (), threads=2) in proposals
    at_limit = _point(TuneSettings(2, 32, 0, (), threads=1), queue_us=50.0, compute_us=900.0)
    assert all(p.instances * p.threads <= 2 or p.threads == 1 for p in propose(at_limit, Bounds(cores=2), 10.0))
    assert TuneSettings(2, 32, 0, (), threads=2) not in propose(at_limit, Bounds(cores=2), slo_ms=10.0)
    assert all(p.threads == 1 for p in propose(busy, Bounds(), slo_ms=10.0))  # cores 0: threads not searched
    unset = _point(TuneSettings(2, 32, 0), queue_us=50.0, compute_us=900.0)
    assert TuneSettings(2, 32, 0, (), threads=2) in propose(unset, Bounds(cores=4), slo_ms=10.0)


def test_measured_on_reads_gpu_from_the_served_instances_not_the_clients_environment() -> None:
    """Issue 25 defect 10: measured_on.gpu was $CUDA_VISIBLE_DEVICES of the client."""
    from tritonkit.perf.tune import _instances_gpu

    assert _instances_gpu({"instance_group": [{"kind": "KIND_CPU", "count": 2}]}) == "none"
    assert _instances_gpu({"instance_group": [{"kind": "KIND_GPU", "count": 1, "gpus": [1, 0]}]}) == "gpu 0,1"
    assert _instances_gpu({"instance_group": [{"kind": "KIND_GPU", "count": 1}]}) == "gpu"
    assert _instances_gpu({}) == "unknown"
