"""Live-metrics analysis against an SLO, on counters made up by hand (the integration test reads
the real Triton's)."""

from __future__ import annotations

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
