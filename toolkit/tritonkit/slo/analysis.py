"""SLO analysis: live counters of a model over a window, judged against its intent. Pure.

One function, :func:`analyse`, used by ``tritonkit check`` (a CI or cron gate) and by
promotion analysis (local, and every step of a KServe canary): it takes two reads of a model's
counters (a window apart) and its ``slo`` and ``capacity``, and says whether the model meets its
objective, with the numbers and what to do ("p99 12.4 ms > 10: 81% of it is queue; at 2,600 req/s
one replica is not enough: the capacity is 1,150/s, you need 3 replicas").

With a ``baseline`` (the previous release's counters over the same window, or the last window it
served) it also judges the new release against the old one: a p99 more than ``tolerance`` times
the baseline's *and* slower by more than a quarter of the SLO's budget (5 ms without one), or an
error rate above the baseline's by more than the error budget (0.1% without one), is a
regression even inside the SLO. Too little traffic on either side (fewer than
``MIN_REQUESTS`` answered) compares nothing: a p99 of five requests is noise. An ``llm`` model is
compared on its TTFT and TPOT p99 instead (same rule, a quarter of ``ttft_p99_ms`` /
``tpot_p99_ms`` as the margin), not on the request p99: a whole generation's time follows how many
tokens it produced, which a new model changes without being slower.

For an ``llm`` model (its reads carry the engine's TTFT/TPOT histograms) the latency objectives
are ``ttft_p99_ms`` and ``tpot_p99_ms``: the p99 of what the window observed, from the bucket
deltas (:meth:`~tritonkit.serve.metrics.Histogram.quantile`, PromQL's ``histogram_quantile``),
judged with the engine's waiting and running sequences and KV-cache usage as the reason ("TTFT
p99 840 ms > 500: 12 requests waiting, KV cache 97% full").

Example:
    >>> verdict = analyse("classifier", before, after, slo=Slo(p99_ms=10), capacity=None, baseline=(b0, b1))
    >>> verdict.ok, verdict.violations
    >>> analyse("chat", before, after, slo=Slo(ttft_p99_ms=500, tpot_p99_ms=50), capacity=None).numbers["ttft_p99_ms"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from tritonkit.serve.metrics import SUMMARY_SPAN_S, ModelCounters
from tritonkit.spec.intent import DEFAULT_HEADROOM, Capacity, Slo

TOLERANCE = 2.0
"""How many times the baseline's p99 the new release may take before it is a regression."""

MARGIN, MARGIN_MS = 0.25, 5.0
"""How much slower than the baseline a p99 must also be to count: a share of the SLO's budget, or
milliseconds without one (a p99 ratio alone flags noise: 3 ms against 1 ms right after a load)."""

MIN_REQUESTS = 20
"""Requests each side must have answered in the window before p99s and error rates are compared."""

Window = tuple[ModelCounters, ModelCounters]
"""Two reads of one model's counters, a window apart (``before``, ``after``)."""


Intent = Mapping[str, tuple[Slo, Capacity | None]]
"""Per model: its SLO and measured capacity (models without an SLO are not judged)."""

Reads = Mapping[str, Window]
"""Per model: two reads of its counters over the window that just ended."""

_NOTHING = ModelCounters(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_EMPTY: Window = (_NOTHING, _NOTHING)


@dataclass(frozen=True)
class Verdict:
    """What the window showed, whether it meets the SLO, and what to do when it does not."""

    model: str
    ok: bool
    numbers: dict[str, float]
    violations: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    inconclusive: str = ""  # why the window cannot be judged (too little traffic); not ok either

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "ok": self.ok,
            "inconclusive": self.inconclusive or None,
            "numbers": {k: (None if math.isnan(v) else v) for k, v in self.numbers.items()},
            "violations": self.violations,
            "advice": self.advice,
        }


def analyse(
    model: str,
    before: ModelCounters,
    after: ModelCounters,
    *,
    slo: Slo | None,
    capacity: Capacity | None,
    replicas: int = 1,
    baseline: Window | None = None,
    tolerance: float = TOLERANCE,
) -> Verdict:
    """Judge the window between two reads of the same server.

    Args:
        model: the model's name (for the messages).
        before, after: two reads of its counters; ``after`` carries the p99 over Triton's window.
        slo: the objective (``None``: only report the numbers).
        capacity: what tune measured one replica to sustain (for the traffic check).
        replicas: replicas that share the traffic (the plan's count; 1 for a local server).
        baseline: the previous release's two reads (``None``: judge against the SLO only).
        tolerance: the p99 ratio to the baseline's beyond which the new release has regressed.

    Returns:
        The verdict; ``numbers`` gains ``baseline_p99_ms`` and ``baseline_error_rate`` (NaN when
        no baseline was given), an ``llm`` model's also ``baseline_ttft_p99_ms`` and
        ``baseline_tpot_p99_ms``.
    """
    seconds = max(after.at - before.at, 1e-9)
    served = after.success - before.success
    failed = after.failure - before.failure
    asked = _asked(before, after)
    executions = after.executions - before.executions
    request_us = after.request_us - before.request_us
    numbers = {
        "seconds": seconds,
        "rps": served / seconds,
        "error_rate": failed / (served + failed) if served + failed else 0.0,
        "p99_ms": after.p99_us / 1e3,
        # what the p99 covers: Triton's summaries reach 60 s back, more than a shorter window
        "p99_span_s": max(seconds, SUMMARY_SPAN_S),
        "queue_share": (after.queue_us - before.queue_us) / request_us if request_us > 0 else math.nan,
        "mean_batch": (after.inferences - before.inferences) / executions if executions else math.nan,
        "capacity_rps": capacity.rps if capacity else math.nan,
        "replicas": float(replicas),
    }
    violations: list[str] = []
    advice: list[str] = []
    llm = after.ttft is not None or after.tpot is not None
    if llm:
        numbers.update(_engine_numbers(before, after))
        _judge_engine(numbers, slo, violations, advice)
    if slo is not None and slo.p99_ms is not None and numbers["p99_ms"] > slo.p99_ms:
        share = numbers["queue_share"]
        queue = f": {share:.0%} of it is queue" if not math.isnan(share) else ""
        violations.append(f"p99 {numbers['p99_ms']:.1f} ms > {slo.p99_ms:g}{queue}")
        if not math.isnan(share) and share > 0.5:
            advice.append(
                "requests wait more than they run: add replicas or instances, or cap the queue (max_queue_ms)"
            )
        else:
            advice.append("requests run slowly, not in a queue: re-tune (tritonkit tune) or use faster hardware")
    if slo is not None and slo.error_rate is not None and numbers["error_rate"] > slo.error_rate:
        violations.append(f"error rate {numbers['error_rate']:.2%} > {slo.error_rate:.2%}")
        advice.append(
            "look at the failures in Triton's log (requests the queue policy refused count as errors; a policy "
            "refuses some even below capacity: see the docs' known limits)"
        )
    measured = capacity.tokens_per_s if capacity is not None and llm else None  # an llm's work: tokens
    rate, unit, each = ("tokens_per_s", "tokens/s", " tokens/s") if measured is not None else ("rps", "req/s", "/s")
    if capacity is not None and served:
        limit = measured if measured is not None else capacity.rps
        per_replica = numbers[rate] / max(1, replicas)
        if per_replica > limit:
            spare = 1 + (slo.spare if slo is not None else DEFAULT_HEADROOM)
            needed = math.ceil(numbers[rate] * spare / limit)
            violations.append(
                f"{numbers[rate]:,.0f} {unit} over {replicas} replica(s) is more than the measured capacity "
                f"of {limit:,.0f}{each} each"
            )
            advice.append(f"at this traffic you need {needed} replicas, the plan has {replicas}")
    peak = (slo.peak_tokens_per_s if llm else None) if slo is not None else None
    if peak is not None and numbers.get("tokens_per_s", 0.0) > peak:
        advice.append(f"traffic {numbers['tokens_per_s']:,.0f} tokens/s is above the planned peak of {peak:g}: re-plan")
    elif slo is not None and slo.peak_rps is not None and numbers["rps"] > slo.peak_rps:
        advice.append(f"traffic {numbers['rps']:,.0f}/s is above the planned peak of {slo.peak_rps:g}/s: re-plan")
    if baseline is not None:
        regressions, notes = _against_baseline(numbers, asked, baseline, slo, tolerance)
        violations += regressions
        advice += notes
    else:
        numbers.update(baseline_p99_ms=math.nan, baseline_error_rate=math.nan)
        if llm:
            numbers.update(baseline_ttft_p99_ms=math.nan, baseline_tpot_p99_ms=math.nan, baseline_invalid_rate=math.nan)
    inconclusive = ""
    if slo is not None and asked < MIN_REQUESTS:
        # No data is not good data (Flagger halts on it too): a p99 of five requests, or of none,
        # says nothing about the SLO, so the window is not judged ok.
        inconclusive = f"inconclusive: {asked:.0f} requests in {seconds:.0f}s, {MIN_REQUESTS} needed to judge"
        violations.append(inconclusive)
        advice.append("send traffic through the window (or lengthen it), then judge again")
    return Verdict(
        model=model, ok=not violations, numbers=numbers, violations=violations, advice=advice, inconclusive=inconclusive
    )


def _against_baseline(
    numbers: dict[str, float], answered: float, baseline: Window, slo: Slo | None, tolerance: float
) -> tuple[list[str], list[str]]:
    """Regressions of the new release against the previous one (and advice); adds the baseline's
    numbers to ``numbers``."""
    before, after = baseline
    served, failed = after.success - before.success, after.failure - before.failure
    asked = _asked(before, after)
    numbers["baseline_p99_ms"] = after.p99_us / 1e3
    numbers["baseline_error_rate"] = failed / (served + failed) if served + failed else 0.0
    llm = "ttft_p99_ms" in numbers
    if llm:
        engine = _engine_numbers(before, after)
        numbers.update(baseline_ttft_p99_ms=engine["ttft_p99_ms"], baseline_tpot_p99_ms=engine["tpot_p99_ms"],
                       baseline_invalid_rate=engine["invalid_rate"])  # fmt: skip
    if answered < MIN_REQUESTS or asked < MIN_REQUESTS:
        return [], [
            f"too little traffic to compare with the previous release ({answered:.0f} and {asked:.0f} "
            f"requests, want {MIN_REQUESTS} each): judged against the SLO only"
        ]
    budgets = {"p99": slo.p99_ms} if slo is not None else {}
    if llm:
        budgets = {"TTFT p99": slo.ttft_p99_ms, "TPOT p99": slo.tpot_p99_ms} if slo is not None else {}
    latencies = ("TTFT p99", "TPOT p99") if llm else ("p99",)
    regressions = [
        line for sli in latencies if (line := _slower(sli, numbers, budgets.get(sli), tolerance)) is not None
    ]
    budget = slo.error_rate if slo is not None and slo.error_rate is not None else 0.001
    rate, old_rate = numbers["error_rate"], numbers["baseline_error_rate"]
    if rate > old_rate + budget:
        regressions.append(f"error rate {rate:.2%} against the previous release's {old_rate:.2%}")
    if llm and numbers["invalid_rate"] > numbers["baseline_invalid_rate"] + budget:
        # not the server's errors, but a release that refuses as invalid what the previous one served
        # (a smaller context, a stricter parser) has broken its clients all the same
        regressions.append(
            f"client-invalid {numbers['invalid_rate']:.2%} of requests against the previous release's "
            f"{numbers['baseline_invalid_rate']:.2%}"
        )
    advice = [
        "the previous release served the same traffic better: compare the two releases ('tritonkit diff OLD NEW')"
    ]
    return regressions, advice if regressions else []


def _slower(sli: str, numbers: dict[str, float], budget_ms: float | None, tolerance: float) -> str | None:
    """The regression line when ``sli`` (``p99``, ``TTFT p99``, ``TPOT p99``) is more than
    ``tolerance`` times the baseline's and slower by more than the margin, else None (also when
    either side has no number)."""
    key = sli.lower().replace(" ", "_") + "_ms"
    new, old = numbers[key], numbers[f"baseline_{key}"]
    margin = MARGIN * budget_ms if budget_ms is not None else MARGIN_MS
    if math.isnan(new) or math.isnan(old) or not (new > old * tolerance and new - old > margin):
        return None
    show = _ms if sli != "p99" else (lambda ms: f"{ms:.1f}")  # as the SLO's own lines write each
    return f"{sli} {show(new)} ms is {new / old:.1f}x the previous release's {show(old)} ms"


#: KV-cache usage (0-1) from which a slow first token is put down to a full cache.
KV_FULL = 0.9


def _asked(before: ModelCounters, after: ModelCounters) -> float:
    """The requests of a window: served, failed, and those the client got wrong (traffic too,
    though neither served nor the server's failure)."""
    return after.success - before.success + after.failure - before.failure + after.invalid - before.invalid


def _engine_numbers(before: ModelCounters, after: ModelCounters) -> dict[str, float]:
    """An ``llm`` engine's window: TTFT/TPOT p99 (ms) from the bucket deltas, and its gauges."""
    ttft = after.ttft.minus(before.ttft) if after.ttft is not None else None
    tpot = after.tpot.minus(before.tpot) if after.tpot is not None else None
    seconds = max(after.at - before.at, 1e-9)
    invalid = after.invalid - before.invalid  # the client's mistakes: not in the error rate
    asked = _asked(before, after)
    return {
        "tokens_per_s": (after.tokens - before.tokens) / seconds,  # prompt + generated
        "client_invalid": invalid,
        "invalid_rate": invalid / asked if asked else 0.0,
        "ttft_p99_ms": 1000 * ttft.quantile(0.99) if ttft is not None else math.nan,
        "tpot_p99_ms": 1000 * tpot.quantile(0.99) if tpot is not None else math.nan,
        "first_tokens": ttft.count if ttft is not None else math.nan,  # generations that started
        "waiting": after.waiting,
        "running": after.running,
        "kv_usage": after.kv_usage,
    }


def _judge_engine(numbers: dict[str, float], slo: Slo | None, violations: list[str], advice: list[str]) -> None:
    """TTFT and TPOT p99 against ``slo``, explained by the engine's queue and KV cache."""
    if slo is None or (slo.ttft_p99_ms is None and slo.tpot_p99_ms is None):
        return
    waiting, running, kv = numbers["waiting"], numbers["running"], numbers["kv_usage"]
    if not numbers["first_tokens"] > 0:
        advice.append("no generation started in the window: no TTFT or TPOT to judge (send traffic, or watch longer)")
    if slo.ttft_p99_ms is not None and numbers["ttft_p99_ms"] > slo.ttft_p99_ms:
        why = [f"{waiting:.0f} requests waiting"] if not math.isnan(waiting) else []
        why += [f"KV cache {kv:.0%} full"] if not math.isnan(kv) else []
        violations.append(f"TTFT p99 {_ms(numbers['ttft_p99_ms'])} ms > {slo.ttft_p99_ms:g}" + _reason(why))
        if kv >= KV_FULL:
            advice.append(
                "the KV cache is full: add a replica, or lower scheduler.max_running (or raise kv_cache_tokens)"
            )
        elif waiting >= 1:
            advice.append(
                "requests wait for a running slot: add a replica, or raise scheduler.max_running while the KV cache "
                "has room"
            )
        else:
            advice.append("nothing waits, prefill itself is slow: shorter prompts or faster hardware (device: cuda)")
    if slo.tpot_p99_ms is not None and numbers["tpot_p99_ms"] > slo.tpot_p99_ms:
        why = [f"{running:.0f} sequences running"] if not math.isnan(running) else []
        violations.append(f"TPOT p99 {_ms(numbers['tpot_p99_ms'])} ms > {slo.tpot_p99_ms:g}" + _reason(why))
        if running > 1:
            advice.append(
                "every step decodes all running sequences: lower scheduler.max_running (shorter steps) and add a "
                "replica for the traffic"
            )
        else:
            advice.append("one sequence alone decodes this slowly: faster hardware (device: cuda) or a smaller model")


def _reason(parts: list[str]) -> str:
    return f": {', '.join(parts)}" if parts else ""


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def judge_models(intent: Intent, new: Reads, baseline: Reads, *, replicas: int = 1) -> list[Verdict]:
    """Every model with an SLO: its window on the new release against the SLO and its baseline.

    A model the reads lack (no series in Prometheus yet) is judged on zero counters: no traffic,
    no violation, and the numbers say so.
    """
    return [
        analyse(
            name,
            *new.get(name, _EMPTY),
            slo=slo,
            capacity=capacity,
            replicas=replicas,
            baseline=baseline.get(name),
        )
        for name, (slo, capacity) in sorted(intent.items())
    ]
