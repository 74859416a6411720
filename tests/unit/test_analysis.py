"""Live-metrics analysis against an SLO, on counters made up by hand (the integration tests read
the real Triton's and Prometheus's): the request counters, and an llm engine's TTFT/TPOT histograms."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from tritonkit.serve.metrics import Histogram, ModelCounters, Scrape, model_counters, parse, window_counters
from tritonkit.slo.analysis import analyse
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
    assert "too little traffic to compare" in verdict.advice[0]
    # and is not a pass either (issue 25, defect 6): five requests cannot show the SLO is met
    assert not verdict.ok and verdict.violations == ["inconclusive: 5 requests in 10s, 20 needed to judge"]
    assert verdict.inconclusive and verdict.as_dict()["inconclusive"] == verdict.inconclusive


def test_no_traffic_is_inconclusive_not_ok() -> None:
    """check with no traffic said ok, and a slow release promoted with no traffic stayed."""
    verdict = analyse("m", *_window(0, 0), slo=Slo(p99_ms=10), capacity=None)
    assert not verdict.ok and verdict.inconclusive.startswith("inconclusive: 0 requests")
    assert analyse("m", *_window(0, 0), slo=None, capacity=None).ok  # no SLO: nothing to judge, only numbers


def test_without_a_baseline_the_numbers_say_so() -> None:
    verdict = analyse("m", *_window(500, 5), slo=Slo(p99_ms=10), capacity=None)
    assert verdict.ok and math.isnan(verdict.numbers["baseline_p99_ms"])
    assert verdict.as_dict()["numbers"]["baseline_error_rate"] is None  # type: ignore[index]


# ------------------------------------------------------------------------------- llm models

INF = math.inf
ENGINE = """# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{model="chat",version="1",instance="a.1",le="0.1"} 6
vllm:time_to_first_token_seconds_bucket{model="chat",version="1",instance="a.1",le="0.5"} 9
vllm:time_to_first_token_seconds_bucket{model="chat",version="1",instance="a.1",le="+Inf"} 10
vllm:time_to_first_token_seconds_bucket{model="chat",version="1",instance="b.2",le="0.1"} 4
vllm:time_to_first_token_seconds_bucket{model="chat",version="1",instance="b.2",le="0.5"} 9
vllm:time_to_first_token_seconds_bucket{model="chat",version="1",instance="b.2",le="+Inf"} 10
vllm:time_to_first_token_seconds_sum{model="chat",version="1",instance="a.1"} 3.5
vllm:num_requests_waiting{model="chat",version="1",instance="a.1"} 3
vllm:num_requests_waiting{model="chat",version="1",instance="b.2"} 1
vllm:kv_cache_usage_perc{model="chat",version="1",instance="a.1"} 0.25
vllm:kv_cache_usage_perc{model="chat",version="1",instance="b.2"} 0.5
nv_inference_request_success{model="chat",version="1"} 20
tritonkit_llm_request_failure_total{model="chat",version="1",instance="a.1",reason="overloaded"} 2
tritonkit_llm_request_failure_total{model="chat",version="1",instance="b.2",reason="invalid"} 1
"""


def test_histogram_quantile_interpolates_as_promql() -> None:
    h = Histogram(((0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (INF, 100.0)))
    assert h.quantile(0.5) == 0.1  # the rank lands exactly on a bucket's upper bound
    assert h.quantile(0.25) == pytest.approx(0.05)  # the lowest bucket starts at 0
    assert h.quantile(0.7) == pytest.approx(0.1 + 0.4 * 20 / 40)
    assert h.quantile(0.99) == pytest.approx(0.5 + 0.5 * 9 / 10)
    assert Histogram(((0.1, 1.0), (INF, 10.0))).quantile(0.99) == 0.1  # in +Inf: the highest finite bound
    assert math.isnan(Histogram(((0.1, 0.0), (INF, 0.0))).quantile(0.99))  # nothing observed
    assert math.isnan(Histogram(((0.1, 3.0),)).quantile(0.99))  # no +Inf bucket


def test_histogram_delta_is_the_window_and_a_reset_starts_from_zero() -> None:
    before = Histogram(((0.1, 10.0), (1.0, 12.0), (INF, 12.0)))
    after = Histogram(((0.1, 10.0), (1.0, 20.0), (INF, 22.0)))
    window = after.minus(before)
    assert window.buckets == ((0.1, 0.0), (1.0, 8.0), (INF, 10.0)) and window.count == 10
    assert window.quantile(0.5) == pytest.approx(0.1 + 0.9 * 5 / 8)
    restarted = Histogram(((0.1, 1.0), (1.0, 2.0), (INF, 2.0)))
    assert restarted.minus(after) == restarted and after.minus(None) == after


def test_engine_series_are_merged_over_instances_and_gauges_peak_over_the_window() -> None:
    first = Scrape(0.0, parse(ENGINE))
    busier = Scrape(1.0, parse(ENGINE.replace('instance="a.1"} 3', 'instance="a.1"} 7')))
    last = Scrape(2.0, parse(ENGINE.replace("} 0.5\n", "} 0.125\n")))
    counters = model_counters(first, "chat")
    assert counters.ttft == Histogram(((0.1, 10.0), (0.5, 18.0), (INF, 20.0)))
    assert counters.tpot is None and math.isnan(counters.running)
    assert (counters.waiting, counters.kv_usage) == (4, 0.5)  # summed; the fullest instance
    # Triton counted the error responses as successes; the client's invalid request is counted apart
    # (issue 25 defect 11: it was a server failure, against the error budget)
    assert (counters.success, counters.failure, counters.invalid) == (17, 2, 1)
    before, after = window_counters([first, busier, last], "chat")
    assert before == counters and after.at == 2.0
    assert (after.waiting, after.kv_usage) == (8, 0.5)  # peaks, not the last read's 4 and 0.25
    assert model_counters(first, "chat", version=2).ttft is None


def _engine(at: float, first_tokens: float, slow: float, *, waiting: float = 0, kv: float = 0.1, running: float = 1):
    """Counters of an llm model: ``first_tokens`` TTFTs, ``slow`` of them over 1 s; TPOTs all 20-50 ms."""
    ttft = Histogram(((0.1, first_tokens - slow), (1.0, first_tokens - slow), (2.5, first_tokens), (INF, first_tokens)))
    tpot = Histogram(((0.02, 0.0), (0.05, 10 * first_tokens), (INF, 10 * first_tokens)))
    return ModelCounters(at, first_tokens, 0, first_tokens, first_tokens, 0, 0, ttft=ttft, tpot=tpot,
                         waiting=waiting, running=running, kv_usage=kv)  # fmt: skip


def test_llm_ttft_over_budget_names_the_queue_and_the_kv_cache() -> None:
    before = _engine(0, 100, 0)
    after = _engine(10, 200, 5, waiting=12, kv=0.97, running=8)
    verdict = analyse("chat", before, after, slo=Slo(ttft_p99_ms=500, tpot_p99_ms=50), capacity=None)
    n = verdict.numbers
    assert n["first_tokens"] == 100 and n["ttft_p99_ms"] == pytest.approx(1000 + 1500 * 4 / 5)
    assert n["tpot_p99_ms"] == pytest.approx(20 + 30 * 990 / 1000) and n["rps"] == 10
    assert verdict.violations == ["TTFT p99 2,200 ms > 500: 12 requests waiting, KV cache 97% full"]
    assert verdict.advice[0].startswith("the KV cache is full: add a replica")
    waiting = analyse("chat", before, _engine(10, 200, 5, waiting=3, kv=0.4), slo=Slo(ttft_p99_ms=500), capacity=None)
    assert "requests wait for a running slot" in waiting.advice[0]
    idle = analyse("chat", before, _engine(10, 200, 5), slo=Slo(ttft_p99_ms=500), capacity=None)
    assert "prefill itself is slow" in idle.advice[0]


def test_llm_tpot_over_budget_and_within_budget() -> None:
    before, after = _engine(0, 100, 0), _engine(10, 200, 0, running=6)
    slow = analyse("chat", before, after, slo=Slo(ttft_p99_ms=500, tpot_p99_ms=10), capacity=None)
    assert slow.violations == ["TPOT p99 49.7 ms > 10: 6 sequences running"]
    assert "lower scheduler.max_running" in slow.advice[0]
    fine = analyse("chat", before, after, slo=Slo(ttft_p99_ms=500, tpot_p99_ms=50, error_rate=0.01), capacity=None)
    assert fine.ok and fine.advice == [] and fine.as_dict()["numbers"]["waiting"] == 0


def test_llm_window_without_generations_is_not_a_violation_but_says_so() -> None:
    quiet = analyse("chat", _engine(0, 100, 0), _engine(10, 100, 0), slo=Slo(ttft_p99_ms=1), capacity=None)
    assert math.isnan(quiet.numbers["ttft_p99_ms"]) and "no generation started" in quiet.advice[0]
    assert quiet.violations == [quiet.inconclusive]  # no TTFT violation claimed; no pass either
    assert quiet.as_dict()["numbers"]["ttft_p99_ms"] is None


def test_ordinary_models_carry_no_engine_numbers() -> None:
    verdict = analyse(
        "m", _counters(0, 0, 0, 0, 0), _counters(5, 50, 5, 1, 3000), slo=Slo(ttft_p99_ms=1), capacity=None
    )
    assert verdict.ok and "ttft_p99_ms" not in verdict.numbers


def test_an_llm_release_is_compared_with_its_baseline_on_ttft_and_tpot_not_the_request_p99() -> None:
    slow = (_engine(0, 100, 0), replace(_engine(10, 200, 5), quantiles_us={0.99: 900_000}))  # TTFT p99 2.2 s
    previous = (_engine(0, 100, 0), replace(_engine(10, 200, 0), quantiles_us={0.99: 300_000}))  # 99 ms
    verdict = analyse("chat", *slow, slo=Slo(ttft_p99_ms=5000, tpot_p99_ms=60), capacity=None, baseline=previous)
    assert verdict.violations == ["TTFT p99 2,200 ms is 22.2x the previous release's 99.0 ms"]  # inside its SLO
    n = verdict.numbers
    assert n["baseline_ttft_p99_ms"] == pytest.approx(99) and n["baseline_tpot_p99_ms"] == n["tpot_p99_ms"]
    # 3x the request p99 (a longer generation is not a slower one) and a TTFT within a quarter of 10 s: ok
    calm = analyse("chat", *slow, slo=Slo(ttft_p99_ms=10_000), capacity=None, baseline=previous)
    assert calm.ok and n["p99_ms"] == 900 and n["baseline_p99_ms"] == 300
    alone = analyse("chat", *slow, slo=Slo(ttft_p99_ms=10_000), capacity=None)
    assert alone.as_dict()["numbers"]["baseline_ttft_p99_ms"] is None  # type: ignore[index]


def test_an_llm_is_judged_and_planned_in_tokens() -> None:
    """Issue 25 defect 11: an llm's traffic against its capacity was requests/s of one size."""
    capacity = Capacity(rps=4, concurrency=8, ttft_p99_ms=200, tpot_p99_ms=20, tokens_per_s=1000)
    before = replace(_engine(0, 100, 0), tokens=0.0, invalid=0.0)
    after = replace(_engine(10, 200, 0), tokens=30_000.0, invalid=7.0)  # 3,000 tokens/s, 10 requests/s
    verdict = analyse("chat", before, after, slo=Slo(ttft_p99_ms=500, tpot_p99_ms=50), capacity=capacity)
    assert verdict.numbers["tokens_per_s"] == 3000 and verdict.numbers["client_invalid"] == 7
    assert verdict.violations == [
        "3,000 tokens/s over 1 replica(s) is more than the measured capacity of 1,000 tokens/s each"
    ]
    assert "you need 4 replicas" in verdict.advice[-1]


def test_an_llm_release_that_refuses_as_invalid_what_the_previous_one_served_regresses() -> None:
    """Client-invalid requests are not server errors (issue 25 defect 11), but a release that
    refuses as invalid what its baseline answered has broken its clients all the same."""
    before = replace(_engine(0, 100, 0), invalid=0.0)
    after = replace(_engine(10, 200, 0), invalid=50.0)  # 100 served, 50 refused as invalid
    baseline = (replace(_engine(0, 100, 0), invalid=0.0), replace(_engine(10, 200, 0), invalid=0.0))
    slo = Slo(ttft_p99_ms=5000, tpot_p99_ms=500, error_rate=0.01)
    verdict = analyse("chat", before, after, slo=slo, capacity=None, baseline=baseline)
    assert verdict.numbers["error_rate"] == 0 and verdict.numbers["invalid_rate"] == pytest.approx(1 / 3)
    assert verdict.violations == ["client-invalid 33.33% of requests against the previous release's 0.00%"]
    alone = analyse("chat", before, after, slo=slo, capacity=None)
    assert alone.ok, alone.violations  # against its SLO alone: the client's mistakes are not its errors
