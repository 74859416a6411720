"""``tritonkit tune`` for ``kind: llm`` models: the measured capacity within a TTFT/TPOT SLO.

An in-flight batching engine has no Triton batching to tune, so this measures and does not
search. Decisions, and why:

* **The load** is closed loop: ``c`` threads, each with its own gRPC stream
  (:class:`~tritonkit.serve.llm_client.LlmStream`), send one streamed generation after another:
  the same prompt, ``max_tokens`` with ``ignore_eos`` so every request generates exactly that
  many tokens (a random or real model stopping early would make requests/s meaningless).
  perf_analyzer is not used: it cannot time a stream's first and later responses per token.
* **The levels** double from ``c = 1`` while a level is within the SLO, until two levels in a
  row grew requests/s by less than 5% (:data:`~tritonkit.perf.search.PLATEAU`; one such level
  is often a noisy window on a shared host); after the first level over the
  SLO, the midpoint between it and the last good one is bisected (while the budget lasts), so
  the capacity is not off by up to 2x. Any error response (the engine refusing when its queue
  is full, ``max_queue``) puts a level over the SLO. Decided by :func:`next_level` (pure).
* **TTFT and TPOT are measured client side**, per request: TTFT from send to the first streamed
  piece, TPOT per output token after it (:attr:`~tritonkit.serve.llm_client.Generation.per_token`,
  the engine's own definition). Not from the engine's histograms, because (1) their buckets are
  coarse (a p99 jumps between bucket bounds, e.g. 250 → 500 ms for TTFT), and (2) the client
  sees everything the engine does plus Triton's queue, gRPC and the response sender: a capacity
  within the SLO here is also within it for ``tritonkit check``, which judges the engine's
  histograms, up to their bucket resolution (the reverse would not hold). On a 2-core host the
  client's TPOT p50 is below the engine's (pieces arrive in bursts) and its p99s mostly above
  (the stalls between bursts, Triton, gRPC): tiny-gpt2, 8 tokens, c=2 measured TTFT p99 92 ms
  client / 9.9 ms engine, TPOT p99 27 / 9.5 ms. The client shares the host's cores with the
  server, as perf_analyzer would; its per-request work is one callback per streamed piece.
* **Given Triton's metrics URL, the engine's p99s are judged too.** Each level then also records
  the engine's TTFT/TPOT p99 over its window (histogram deltas, interpolated inside a bucket
  exactly as ``check``, the promotion gate and PromQL compute them), and a level is within the
  SLO only when both views are. Between two coarse bounds the interpolation can land far above
  the client's exact p99 (tiny-gpt2, 32 tokens, c=12: client TTFT p99 283 ms, engine 451 ms in
  the 250–500 ms bucket): a capacity judged on the client alone would then be flagged by
  ``check`` at the very load it was planned for. A level without engine observations is judged
  on the client alone.
* **A level's numbers**: each level runs a warm-up (not counted; lets the running batch fill),
  then a window of at least ``window_s`` seconds and ``2 c`` requests (at most 5 windows). The
  requests/s is the generations that finished inside the window divided by its length;
  latencies are those of every request sent inside it (the load keeps going until they end).
  p99 is the nearest-rank percentile of the samples (:func:`tritonkit.perf.stats.percentile`).
* **The capacity** is the level with the most requests/s among those within the SLO (the
  lowest concurrency within 2% of it: :func:`choose`); it goes
  into the spec's ``capacity:`` (and, through the build, the lock) with TTFT/TPOT p99 and the
  request's size, where ``p99_ms`` is for other kinds (:class:`~tritonkit.spec.intent.Capacity`).
* **No knob search.** The engine's knobs (``scheduler.max_running``, ``kv_cache_tokens``,
  ``max_queue``) live in the version directory's ``model.json``, which the build writes and
  hashes, not in ``config.pbtxt``: a repository-API reload with a config override (how tune
  changes batching) cannot reach them, and serving other values than the built files say
  would make the repository's digest lie. Change them in the spec, rebuild, tune again.
  The model is therefore never reloaded here, and nothing needs restoring.

Example:
    >>> result = tune_llm("tiny-gpt2", ttft_p99_ms=500, tpot_p99_ms=50, url="127.0.0.1:8001")
    >>> result.capacity()["rps"]
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tritonkit.errors import TuneError, UsageError
from tritonkit.events import Event, Progress, emit
from tritonkit.perf.search import IMPROVEMENT, PLATEAU
from tritonkit.perf.stats import percentile
from tritonkit.perf.tune import measured_on  # the hardware record every kind's capacity carries
from tritonkit.serve.llm_client import Generation, LlmStream, check_llm
from tritonkit.serve.metrics import Histogram, ModelCounters, model_counters, scrape
from tritonkit.slo.llm import LlmSlo, engine_within, level_within
from tritonkit.spec.intent import MeasuredOn

METER = "llm_client"
"""How capacity.measured_on names this meter: tritonkit's streaming gRPC client (serve/llm_client.py)."""
DEFAULT_PROMPT = "Tell me a short story about a robot who learns to paint."


@dataclass(frozen=True)
class LlmPoint:
    """One closed-loop level: what ``concurrency`` streams sustained and how fast tokens came."""

    concurrency: int
    window_s: float
    completed: int  # generations that ended inside the window
    errors: int  # error responses among the requests of the window
    rps: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    tpot_p99_ms: float
    samples: int  # requests sent inside the window (the latency samples)
    within_slo: bool
    first_error: str = ""
    engine_ttft_p99_ms: float = math.nan  # the engine's histograms over the window (NaN: not read)
    engine_tpot_p99_ms: float = math.nan
    engine_tokens_per_s: float = math.nan  # prompt + generated tokens the engine processed per second

    @property
    def offered(self) -> str:
        return f"c={self.concurrency}"


@dataclass
class LlmTuneResult:
    """Every level measured and the capacity found (``best``)."""

    model: str
    slo: LlmSlo
    prompt: str
    max_tokens: int
    points: list[LlmPoint] = field(default_factory=list)
    best: LlmPoint | None = None
    stopped: str = ""
    elapsed_s: float = 0.0
    measured_on: MeasuredOn = field(default_factory=MeasuredOn)

    def capacity(self) -> dict[str, Any] | None:
        """What one replica sustained within the SLO, for the spec's ``capacity:`` (or None)."""
        best = self.best
        if best is None:
            return None
        doc: dict[str, Any] = {"rps": round(best.rps, 2), "concurrency": best.concurrency}
        if self.slo.ttft_p99_ms is not None:
            doc["ttft_p99_ms"] = round(best.ttft_p99_ms, 3)
        if self.slo.tpot_p99_ms is not None:
            doc["tpot_p99_ms"] = round(best.tpot_p99_ms, 3)
        doc["prompt_chars"] = len(self.prompt)
        doc["output_tokens"] = self.max_tokens
        if best.engine_tokens_per_s > 0:  # what an llm is planned in (needs the engine's counters)
            doc["tokens_per_s"] = round(best.engine_tokens_per_s, 1)
        doc["measured_on"] = replace(self.measured_on, meter=METER).as_dict()
        return doc


# --------------------------------------------------------------------------- pure decisions


def next_level(points: Sequence[LlmPoint], max_concurrency: int) -> tuple[int, str]:
    """The next level to measure after ``points`` (in the order measured), or ``(0, why)``.

    Doubles from the highest good level until two levels in a row gain less than 5% requests/s
    (one such level is often noise on a shared host: a slow window); after a level over the SLO,
    bisects between the highest good level below it and the lowest bad one above, to within an
    eighth of the good one (16 → 18 is as fine as one window's noise on a shared host resolves).
    """
    good = [p for p in points if p.within_slo]
    if not good:
        return 0, "concurrency 1 is over the SLO"
    top = max(good, key=lambda p: p.concurrency)
    bad_above = [p.concurrency for p in points if not p.within_slo and p.concurrency > top.concurrency]
    if bad_above:
        low, high = top.concurrency, min(bad_above)
        if high - low <= max(1, low // 8):  # an eighth: finer than one window's noise resolves
            return 0, f"c={low} is within the SLO and c={high} is not"
        return (low + high) // 2, ""
    ordered = sorted(good, key=lambda p: p.concurrency)

    def stalled(level: LlmPoint) -> bool:  # no 5% over every good level below it
        below = [p.rps for p in ordered if p.concurrency < level.concurrency]
        return bool(below) and level.rps < max(below) * PLATEAU

    if len(ordered) >= 2 and stalled(ordered[-1]) and stalled(ordered[-2]):
        return 0, f"requests/s stopped growing at c={ordered[-2].concurrency} and c={top.concurrency} (saturated)"
    if top.concurrency >= max_concurrency:
        return 0, f"reached the maximum concurrency of {max_concurrency}"
    return min(max_concurrency, top.concurrency * 2), ""


def summarize(generations: Sequence[Generation], start: float, end: float, concurrency: int, slo: LlmSlo) -> LlmPoint:
    """One level's :class:`LlmPoint` from its generations (see the module docstring)."""
    window = [g for g in generations if start <= g.sent_at < end]
    finished = [g for g in generations if g.done_at is not None and start <= g.done_at < end and g.error is None]
    ended = [g for g in generations if g.done_at is not None and start <= g.done_at < end]
    failed = [g for g in generations if g.error is not None and (g in window or g in ended)]
    ttft = [1000 * g.ttft for g in window if g.error is None and g.ttft is not None]
    tpot = [1000 * gap for g in window if g.error is None for gap in g.per_token]
    width = end - start
    values = {
        "ttft_p99_ms": percentile(ttft, 99),
        "tpot_p99_ms": percentile(tpot, 99),
    }
    return LlmPoint(
        concurrency=concurrency,
        window_s=width,
        completed=len(finished),
        errors=len(failed),
        rps=len(finished) / width,
        tokens_per_s=sum(g.output_tokens for g in finished) / width,
        ttft_p50_ms=percentile(ttft, 50),
        tpot_p50_ms=percentile(tpot, 50),
        samples=len(window),
        within_slo=level_within(slo, errors=len(failed), completed=len(finished), **values),
        first_error=failed[0].error or "" if failed else "",
        **values,
    )


def worst(point: LlmPoint) -> tuple[float, float]:
    """The TTFT and TPOT p99 a level was judged on: the higher of the client's and the engine's."""

    def higher(client: float, engine: float) -> float:
        return client if math.isnan(engine) else max(client, engine)

    return higher(point.ttft_p99_ms, point.engine_ttft_p99_ms), higher(point.tpot_p99_ms, point.engine_tpot_p99_ms)


def unmet_hint(point: LlmPoint, slo: LlmSlo) -> str:
    """What budget the model can meet, from its concurrency-1 point (with 20% to spare)."""
    if point.errors:
        return f"the model answered with errors ({point.first_error}); check it with 'tritonkit generate'"
    asks = []
    for name, measured, budget in zip(("ttft_p99_ms", "tpot_p99_ms"), worst(point), (slo.ttft_p99_ms, slo.tpot_p99_ms)):
        if budget is not None and not measured <= budget:
            asks.append(f"{name} ≥ {math.ceil(measured * 1.2)}")
    return f"ask for {' and '.join(asks)}, or fewer output tokens per request (max_tokens)"


# --------------------------------------------------------------------------- effects


class _Load:
    """``concurrency`` threads, each streaming one generation after another until stopped."""

    def __init__(self, url: str, model: str, concurrency: int, prompt: str, params: dict[str, Any]) -> None:
        self.url, self.model, self.prompt, self.params = url, model, prompt, params
        self.stop_sending = threading.Event()
        self.generations: list[Generation] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_sending.set()
        for thread in self._threads:
            thread.join()

    def finished_since(self, start: float) -> int:
        with self._lock:
            return sum(1 for g in self.generations if g.done_at is not None and g.done_at >= start)

    def _run(self) -> None:
        try:
            with LlmStream(self.url, self.model) as stream:
                while not self.stop_sending.is_set():
                    generation = stream.send(self.prompt, self.params)
                    with self._lock:
                        self.generations.append(generation)
                    stream.wait(timeout=300)
        except Exception as exc:  # a dead stream: reported as the level's error, never hangs the search
            with self._lock:
                self.failures.append(str(exc))


def measure_level(
    url: str,
    model: str,
    concurrency: int,
    *,
    prompt: str,
    max_tokens: int,
    slo: LlmSlo,
    window_s: float,
    metrics_url: str | None = None,
) -> LlmPoint:
    """One closed-loop level: warm up, then a window of ≥ ``window_s`` and ≥ ``2 × concurrency``
    finished requests (at most ``5 × window_s``); the load runs until the window's requests end."""
    params = {"max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    with _Load(url, model, concurrency, prompt, params) as load:
        time.sleep(max(0.5, window_s / 2))  # warm-up: the running batch fills
        before = _engine(metrics_url, model)
        start = time.perf_counter()
        deadline = start + 5 * window_s
        while True:
            time.sleep(0.05)
            now = time.perf_counter()
            if now >= deadline or (now - start >= window_s and load.finished_since(start) >= 2 * concurrency):
                break
        end = time.perf_counter()
        after = _engine(metrics_url, model)
    point = summarize(load.generations, start, end, concurrency, slo)
    if before is not None and after is not None:
        ttft, tpot = (_p99_ms(a, b) for a, b in ((after.ttft, before.ttft), (after.tpot, before.tpot)))
        within = point.within_slo and engine_within(slo, ttft, tpot)
        tokens = (after.tokens - before.tokens) / max(end - start, 1e-9)
        point = replace(
            point, engine_ttft_p99_ms=ttft, engine_tpot_p99_ms=tpot, engine_tokens_per_s=tokens, within_slo=within
        )
    if load.failures:
        first = point.first_error or load.failures[0]
        return replace(point, errors=point.errors + len(load.failures), within_slo=False, first_error=first)
    return point


def _engine(metrics_url: str | None, model: str) -> ModelCounters | None:
    return model_counters(scrape(metrics_url), model) if metrics_url else None


def _p99_ms(after: Histogram | None, before: Histogram | None) -> float:
    return 1000 * after.minus(before).quantile(0.99) if after is not None else math.nan


def tune_llm(
    model: str,
    *,
    ttft_p99_ms: float | None,
    tpot_p99_ms: float | None,
    url: str,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = 16,
    budget_s: float = 300.0,
    max_points: int = 12,
    max_concurrency: int = 64,
    window_s: float = 2.0,
    metrics_url: str | None = None,
    progress: Progress | None = None,
) -> LlmTuneResult:
    """Measure ``model``'s capacity within its TTFT/TPOT SLO on a running Triton (gRPC ``url``;
    ``metrics_url``, when given, judges each level on the engine's own p99s too).

    Raises:
        UsageError: neither objective given, a non-positive one, or ``max_tokens`` < 2 (TPOT
            needs a second token).
        ServerError: unreachable server, unknown or unloaded model, not a text-generation model.
        TuneError: concurrency 1 is already over the SLO.
    """
    slo = LlmSlo(ttft_p99_ms, tpot_p99_ms)
    if ttft_p99_ms is None and tpot_p99_ms is None:
        raise UsageError(
            f"no TTFT or TPOT budget for llm model '{model}'",
            hint="set slo: {ttft_p99_ms: …, tpot_p99_ms: …} for it in the spec, or give the budgets as arguments",
        )
    if any(v is not None and not v > 0 for v in (ttft_p99_ms, tpot_p99_ms)):
        raise UsageError(f"the TTFT/TPOT budgets must be positive, got {slo}", hint="e.g. 500 and 50 ms")
    if max_tokens < 2:
        raise UsageError(f"max_tokens must be at least 2, got {max_tokens}", hint="TPOT needs a second token")
    check_llm(url, model)
    result = LlmTuneResult(model, slo, prompt, max_tokens, measured_on=measured_on(url, "grpc", model))
    started = time.monotonic()

    def event(message: str) -> None:
        elapsed = time.monotonic() - started
        emit(progress, Event("tune", model, message, done=elapsed, total=budget_s, unit="s",
                             data={"points": len(result.points)}))  # fmt: skip

    concurrency, why = 1, ""
    while concurrency:
        event(f"measuring c={concurrency}")
        point = measure_level(
            url, model, concurrency, prompt=prompt, max_tokens=max_tokens, slo=slo, window_s=window_s,
            metrics_url=metrics_url,
        )  # fmt: skip
        result.points.append(point)
        event(
            f"c={concurrency}: {point.rps:.2f} req/s, TTFT p99 {point.ttft_p99_ms:.0f} ms, "
            f"TPOT p99 {point.tpot_p99_ms:.1f} ms" + ("" if point.within_slo else " (over the SLO)")
        )
        concurrency, why = next_level(result.points, max_concurrency)
        last = max(p.window_s for p in result.points) * 1.5 + window_s  # the next level: warm-up + window
        if concurrency and len(result.points) >= max_points:
            concurrency, why = 0, f"measured the maximum of {max_points} levels"
        elif concurrency and time.monotonic() - started + last > budget_s:
            concurrency, why = 0, f"time budget of {budget_s:.0f}s spent"
    result.stopped = why
    result.elapsed_s = time.monotonic() - started
    good = [p for p in result.points if p.within_slo]
    if not good:
        first = result.points[0]
        raise TuneError(
            f"{first.offered}: TTFT p99 {worst(first)[0]:.1f} ms, TPOT p99 {worst(first)[1]:.1f} ms"
            + (f", {first.errors} errors" if first.errors else "")
            + f" — even one request at a time is over the SLO ({slo.describe()})",
            hint=unmet_hint(first, slo),
        )
    result.best = choose(good)
    return result


def choose(good: Sequence[LlmPoint]) -> LlmPoint:
    """The capacity among levels within the SLO: the lowest concurrency whose requests/s is within
    2% (:data:`~tritonkit.perf.search.IMPROVEMENT`) of the highest. A saturated engine gives the
    same requests/s at twice the concurrency with worse latency, and the plan's autoscaling target
    and the admission queue are sized from this concurrency: the lower one leaves headroom."""
    top = max(p.rps for p in good)
    return min((p for p in good if p.rps * IMPROVEMENT >= top), key=lambda p: p.concurrency)


__all__ = [
    "LlmPoint",
    "LlmTuneResult",
    "choose",
    "measure_level",
    "next_level",
    "summarize",
    "tune_llm",
]
