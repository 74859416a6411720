"""Live-metrics analysis against an SLO, on counters made up by hand (the integration test reads
the real Triton's)."""

from __future__ import annotations

import math

from tritonkit.deploy.analysis import analyse
from tritonkit.serve.metrics import ModelCounters, Scrape, model_counters, parse
from tritonkit.spec.intent import Capacity, Slo

TEXT = """# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="classifier",version="1"} 200
nv_inference_request_success{model="classifier",version="2"} 10
nv_inference_request_failure{model="classifier",reason="REJECTED",version="1"} 3
nv_inference_request_summary_us{model="classifier",version="1",quantile="0.99"} 40953
nv_inference_request_summary_us{model="other",version="1",quantile="0.99"} 1
"""


def _counters(at: float, success: float, request_us: float, queue_us: float, p99_us: float, failure: float = 0):
    return ModelCounters(at, success, failure, success, success / 4, request_us, queue_us, {0.99: p99_us})


def test_text_format_is_parsed_per_model() -> None:
    counters = model_counters(Scrape(0.0, parse(TEXT)), "classifier")
    assert counters.success == 210 and counters.failure == 3 and counters.p99_us == 40953


def test_a_queue_bound_violation_says_so_and_what_to_do() -> None:
    before = _counters(0, 0, 0, 0, 0)
    after = _counters(10, 26_000, 26_000 * 12_000, 26_000 * 9_720, 12_400, failure=52)
    verdict = analyse(
        "m",
        before,
        after,
        slo=Slo(p99_ms=10, error_rate=0.001),
        capacity=Capacity(rps=1150, concurrency=8, p99_ms=9),
        replicas=2,
    )
    assert not verdict.ok
    assert verdict.violations[0] == "p99 12.4 ms > 10: 81% of it is queue"
    assert verdict.violations[1].startswith("error rate 0.20% > 0.10%")
    assert "2,600 req/s over 2 replica(s) is more than the measured capacity of 1,150/s each" in verdict.violations[2]
    assert "at this traffic you need 3 replicas, the plan has 2" in verdict.advice
    assert verdict.numbers["mean_batch"] == 4


def test_within_the_slo_is_ok() -> None:
    verdict = analyse(
        "m", _counters(0, 0, 0, 0, 0), _counters(5, 500, 500 * 2000, 500 * 500, 3000), slo=Slo(p99_ms=10), capacity=None
    )
    assert verdict.ok and verdict.violations == [] and verdict.numbers["rps"] == 100


def _window(
    requests: float, p99_ms: float, failures: float = 0, seconds: float = 10
) -> tuple[ModelCounters, ModelCounters]:
    return _counters(0, 0, 0, 0, 0), _counters(seconds, requests, requests * 1000, 0, p99_ms * 1e3, failure=failures)


def test_a_release_slower_than_its_baseline_regresses_even_inside_the_slo() -> None:
    verdict = analyse("m", *_window(500, 40), slo=Slo(p99_ms=100), capacity=None, baseline=_window(4500, 5))
    assert not verdict.ok
    assert verdict.violations == ["p99 40.0 ms is 8.0x the previous release's 5.0 ms"]
    assert verdict.numbers["baseline_p99_ms"] == 5 and "tritonkit diff" in verdict.advice[0]


def test_a_small_difference_from_the_baseline_is_not_a_regression() -> None:
    # 10x the baseline, but 18 ms slower is within a quarter of the 100 ms budget: noise, not a regression
    verdict = analyse("m", *_window(500, 20), slo=Slo(p99_ms=100), capacity=None, baseline=_window(4500, 2))
    assert verdict.ok and verdict.advice == []


def test_errors_the_baseline_did_not_have_are_a_regression() -> None:
    verdict = analyse("m", *_window(500, 5, failures=25), slo=None, capacity=None, baseline=_window(4500, 5))
    assert not verdict.ok and verdict.violations == ["error rate 4.76% against the previous release's 0.00%"]


def test_too_little_traffic_compares_nothing_and_says_so() -> None:
    verdict = analyse("m", *_window(5, 400), slo=Slo(p99_ms=1000), capacity=None, baseline=_window(4500, 5))
    assert verdict.ok and "too little traffic to compare" in verdict.advice[0]


def test_without_a_baseline_the_numbers_say_so() -> None:
    verdict = analyse("m", *_window(500, 5), slo=Slo(p99_ms=10), capacity=None)
    assert verdict.ok and math.isnan(verdict.numbers["baseline_p99_ms"])
    assert verdict.as_dict()["numbers"]["baseline_error_rate"] is None  # type: ignore[index]
