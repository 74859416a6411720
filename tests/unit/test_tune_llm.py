"""The pure decisions of an llm tune: judging a level, the next concurrency, a level's numbers."""

from __future__ import annotations

import math

import pytest

from tritonkit.perf.tune_llm import (
    LlmPoint,
    LlmTuneResult,
    choose,
    next_level,
    summarize,
    unmet_hint,
)
from tritonkit.serve.llm_client import Generation
from tritonkit.slo.llm import LlmSlo, engine_within, level_within
from tritonkit.spec.intent import Capacity, MeasuredOn

SLO = LlmSlo(ttft_p99_ms=100, tpot_p99_ms=10)


def _point(c: int, rps: float, ok: bool = True) -> LlmPoint:
    return LlmPoint(c, 1.0, 10, 0, rps, rps * 8, 10, 20, 2, 3, 10, ok)


def test_judge_needs_both_budgets_no_errors_and_samples() -> None:
    assert level_within(SLO, ttft_p99_ms=100, tpot_p99_ms=10, errors=0, completed=3)
    assert not level_within(SLO, ttft_p99_ms=101, tpot_p99_ms=1, errors=0, completed=3)
    assert not level_within(SLO, ttft_p99_ms=1, tpot_p99_ms=10.5, errors=0, completed=3)
    assert not level_within(SLO, ttft_p99_ms=1, tpot_p99_ms=1, errors=1, completed=3)
    assert not level_within(SLO, ttft_p99_ms=math.nan, tpot_p99_ms=1, errors=0, completed=3)
    assert level_within(LlmSlo(None, 10), ttft_p99_ms=5000, tpot_p99_ms=1, errors=0, completed=1)  # TTFT not judged


def test_the_engine_view_is_judged_where_it_was_observed() -> None:
    assert engine_within(SLO, 99, 9) and not engine_within(SLO, 451, 9) and not engine_within(SLO, 1, 11)
    assert engine_within(SLO, math.nan, math.nan)  # no observation in the window: the client's view decides
    assert engine_within(LlmSlo(None, 10), 5000, 9)


def test_the_hint_asks_for_what_the_worse_view_measured() -> None:
    engine_slower = LlmPoint(1, 1.0, 5, 0, 5, 40, 10, 90, 2, 9, 5, False, engine_ttft_p99_ms=245.0)
    assert unmet_hint(engine_slower, SLO).startswith("ask for ttft_p99_ms ≥ 294, or fewer")


def test_next_level_doubles_bisects_and_stops() -> None:
    assert next_level([_point(1, 5)], 64) == (2, "")
    assert next_level([_point(1, 5), _point(2, 9)], 64) == (4, "")
    over = [_point(1, 5), _point(2, 9), _point(4, 16), _point(8, 20, ok=False)]
    assert next_level(over, 64) == (6, "")  # between the last good and the first bad
    assert next_level([*over, _point(6, 18)], 64) == (7, "")
    level, why = next_level([*over, _point(6, 18), _point(7, 19, ok=False)], 64)
    assert level == 0 and "c=6 is within the SLO and c=7 is not" in why
    wide = [_point(8, 30), _point(16, 40), _point(32, 35, ok=False), _point(24, 47, ok=False)]
    assert next_level([*wide, _point(20, 41, ok=False)], 64) == (18, "")
    assert next_level([*wide, _point(20, 41, ok=False), _point(18, 31, ok=False)], 64)[0] == 0  # 16 → 18
    assert next_level([_point(1, 5), _point(2, 5.1)], 64) == (4, "")  # one flat level may be noise
    assert next_level([_point(1, 5), _point(2, 4), _point(4, 9)], 64) == (8, "")  # it was
    level, why = next_level([_point(1, 5), _point(2, 5.1), _point(4, 5.2)], 64)
    assert level == 0 and "stopped growing at c=2 and c=4" in why
    assert next_level([_point(1, 5), _point(2, 9)], 2)[0] == 0
    assert next_level([_point(1, 5, ok=False)], 64)[0] == 0


def test_the_capacity_is_the_lowest_concurrency_within_2_percent_of_the_most_requests() -> None:
    assert choose([_point(1, 41), _point(2, 89.5), _point(4, 89.7)]).concurrency == 2  # saturated at 2
    assert choose([_point(1, 41), _point(2, 80), _point(4, 89.7)]).concurrency == 4


def _generation(sent: float, first: float, gaps: list[float], tokens: list[int]) -> Generation:
    times = [first]
    for gap in gaps:
        times.append(times[-1] + gap)
    g = Generation(prompt="p", sent_at=sent, chunk_times=times, chunk_tokens=tokens, finish_reason="length")
    g.output_tokens, g.done_at = sum(tokens), times[-1]
    return g


def test_summarize_counts_the_window_and_spreads_coalesced_tokens() -> None:
    gens = [
        _generation(0.0, 0.05, [0.01, 0.01], [1, 1, 1]),  # sent before the window: no sample
        _generation(1.0, 1.02, [0.01, 0.04], [1, 1, 4]),  # the last piece: 4 tokens of 10 ms each
        _generation(1.5, 1.53, [0.01], [1, 1]),
    ]
    slo = LlmSlo(ttft_p99_ms=100, tpot_p99_ms=12)
    point = summarize(gens, 1.0, 2.0, 2, slo)
    assert point.samples == 2 and point.completed == 2 and point.rps == pytest.approx(2.0)
    assert point.ttft_p99_ms == pytest.approx(30) and point.tpot_p99_ms == pytest.approx(10)
    assert point.tokens_per_s == pytest.approx(8) and point.within_slo and point.errors == 0
    gens.append(Generation(prompt="p", sent_at=1.2, error="overloaded", done_at=1.21))
    refused = summarize(gens, 1.0, 2.0, 2, slo)
    assert refused.errors == 1 and not refused.within_slo and refused.first_error == "overloaded"


def test_the_capacity_is_a_valid_spec_capacity_with_the_request_size() -> None:
    result = LlmTuneResult("chat", SLO, "Hello", 8, points=[_point(1, 5)], measured_on=MeasuredOn(cores="2"))
    result.best = result.points[0]
    doc = result.capacity()
    assert doc is not None and doc["measured_on"] == {"cores": "2", "meter": "llm_client"}
    capacity = Capacity(**doc)
    assert capacity.p99_ms is None and capacity.ttft_p99_ms == 20 and capacity.output_tokens == 8
