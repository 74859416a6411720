"""``tritonkit tune``: search dynamic-batching and instance settings on a running Triton.

Every candidate is applied with ``POST v2/repository/models/<m>/load`` and a config override
(never a restart), measured with :func:`tritonkit.bench.bench`, and the model's original
config is loaded back when the search ends, fails or is interrupted.

The search is a hill climb steered by what the server reports for the best point so far
(:func:`propose`, pure): batches stuck at a preferred size or ``max_batch_size`` ask for a
bigger limit; small batches while several requests are in flight ask for a longer delay or a
preferred size; queue time that is only batching delay asks for a shorter one; compute-bound
points ask for one more instance. For the
max-throughput objective each candidate gets a closed-loop concurrency search that jumps
towards the p99 budget by Little's law (:func:`next_concurrency`) and stops as soon as no
further point can win: a plateau, a point over budget, or — going down — a point already
slower than the best found (throughput only falls with concurrency). With ``rate`` the
objective is the lowest p99 at that open-loop Poisson rate.

Example:
    >>> result = tune("classifier", p99_ms=10, url="127.0.0.1:8001", budget_s=300)
    >>> result.best.settings, result.best.throughput
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .bench import BenchPoint, bench
from .client import connect, default_address, model_info
from .errors import ServerError, SpecError, TuneError

IMPROVEMENT = 1.02
"""A candidate must beat the best so far by 2% to take its place (measurement noise)."""
PLATEAU = 1.05
"""Raising concurrency that gains less than 5% throughput means the settings are saturated."""


@dataclass(frozen=True, order=True)
class TuneSettings:
    """The knobs tune turns, named as in Triton's model config."""

    instances: int
    max_batch_size: int
    max_queue_delay_microseconds: int
    preferred_batch_size: tuple[int, ...] = ()

    def batch_limit(self, mean_batch: float) -> int:
        """The batch size that stops batches of about ``mean_batch`` from growing.

        Triton sends a batch as soon as it reaches a preferred size, so batches pile up at the
        smallest preferred size at or above what the queue holds; without one, at max_batch_size.
        """
        reachable = [b for b in self.preferred_batch_size if b >= 0.9 * mean_batch]
        return min(reachable, default=self.max_batch_size)

    def label(self) -> str:
        preferred = f" pref {','.join(map(str, self.preferred_batch_size))}" if self.preferred_batch_size else ""
        return f"{self.instances}x mbs {self.max_batch_size} delay {self.max_queue_delay_microseconds}µs{preferred}"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TuneSettings:
        """Read the settings out of a model config in Triton's JSON form."""
        batching = config.get("dynamic_batching") or {}
        groups = config.get("instance_group") or [{}]
        max_batch_size = int(config.get("max_batch_size", 0))
        preferred = tuple(int(b) for b in batching.get("preferred_batch_size", []))
        if preferred == (max_batch_size,):
            preferred = ()  # Triton fills in [max_batch_size] when none is given: the same thing
        return cls(
            instances=int(groups[0].get("count", 1)),
            max_batch_size=max_batch_size,
            max_queue_delay_microseconds=int(batching.get("max_queue_delay_microseconds", 0)),
            preferred_batch_size=preferred,
        )

    def apply(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` (Triton JSON) with these settings; everything else untouched."""
        new = json.loads(json.dumps(config))
        new["max_batch_size"] = self.max_batch_size
        batching = dict(new.get("dynamic_batching") or {})
        batching["max_queue_delay_microseconds"] = self.max_queue_delay_microseconds
        batching["preferred_batch_size"] = list(self.preferred_batch_size)
        new["dynamic_batching"] = batching
        groups = new.get("instance_group") or [{"kind": "KIND_CPU"}]
        new["instance_group"] = [dict(groups[0], count=self.instances)]
        return new


@dataclass(frozen=True)
class Bounds:
    """The search space: instances ``1..max_instances``, batch sizes ``min_batch..max_batch``."""

    max_instances: int = 4
    min_batch: int = 1
    max_batch: int = 128
    max_delay_us: int = 20_000
    max_concurrency: int = 256


@dataclass(frozen=True)
class TunePoint:
    """One measurement: the settings loaded and what bench saw."""

    settings: TuneSettings
    bench: BenchPoint
    within_slo: bool

    @property
    def throughput(self) -> float:
        return self.bench.result.throughput

    @property
    def p99_ms(self) -> float:
        return self.bench.result.p99_ms

    @property
    def load(self) -> str:
        return f"c={self.bench.level:g}" if self.bench.mode == "concurrency" else f"{self.bench.level:g}/s"


@dataclass
class TuneResult:
    """Every point measured, the original settings' best and the winner."""

    model: str
    p99_ms: float
    rate: float | None
    original: TuneSettings
    points: list[TunePoint] = field(default_factory=list)
    baseline: TunePoint | None = None
    best: TunePoint | None = None
    stopped: str = ""
    elapsed_s: float = 0.0

    @property
    def configs_tried(self) -> int:
        return len({p.settings for p in self.points})


@dataclass(frozen=True)
class TuneEvent:
    """Progress: what is being measured, how many points so far, and the time used."""

    message: str
    points: int
    elapsed_s: float
    budget_s: float


# --------------------------------------------------------------------------- pure decisions


def better(candidate: TunePoint | None, best: TunePoint | None, *, rate: float | None) -> bool:
    """Whether ``candidate`` beats ``best`` by the improvement margin (under the SLO only)."""
    if candidate is None or not candidate.within_slo:
        return False
    if best is None:
        return True
    if rate is None:
        return candidate.throughput > best.throughput * IMPROVEMENT
    return candidate.p99_ms * IMPROVEMENT < best.p99_ms


def next_concurrency(concurrency: int, p99_ms: float, slo_ms: float, bounds: Bounds) -> int:
    """The next closed-loop concurrency to try after a point within budget.

    Far below the budget, double. Near it, a saturated server's latency grows in proportion
    to concurrency (Little's law), so ``c * slo / p99`` lands on the budget: aim at 90% of
    that, moving at least 10% so the search always advances.
    """
    factor = 2.0 if p99_ms < 0.5 * slo_ms else min(2.0, max(1.1, 0.9 * slo_ms / max(p99_ms, 1e-3)))
    return min(bounds.max_concurrency, max(concurrency + 1, round(concurrency * factor)))


def propose(best: TunePoint, bounds: Bounds, slo_ms: float) -> list[TuneSettings]:
    """Neighbours of ``best.settings`` worth measuring, most promising first.

    Reads the server's breakdown of the best point — mean executed batch against the size
    that stops it growing, queue time against compute time — and proposes:

    * batches stuck at a preferred size or max_batch_size: lift that limit;
    * small batches although several requests are in flight: wait longer for company
      (delay x4, up to a quarter of the budget), or, when already waiting, dispatch as soon
      as a typical batch is there (a preferred size);
    * requests that queue only for the delay, with nothing to batch: a shorter delay;
    * a model busier than its queue: one more instance; and, less likely, one fewer.
    """
    s, srv = best.settings, best.bench.server
    compute_us = srv.compute_input_us + srv.compute_infer_us + srv.compute_output_us
    queue_us = srv.queue_us if not math.isnan(srv.queue_us) else 0.0
    mean_batch = srv.mean_batch_size if not math.isnan(srv.mean_batch_size) else 1.0
    fill = mean_batch / max(s.batch_limit(mean_batch), 1)
    delay = s.max_queue_delay_microseconds
    delay_budget = min(bounds.max_delay_us, int(slo_ms * 1000 / 4))
    company = mean_batch >= 1.5  # more than one request at a time reaches the scheduler
    ranked: list[tuple[int, TuneSettings]] = []

    def add(priority: int, candidate: TuneSettings) -> None:
        ok = (
            1 <= candidate.instances <= bounds.max_instances
            and bounds.min_batch <= candidate.max_batch_size <= bounds.max_batch
            and 0 <= candidate.max_queue_delay_microseconds <= delay_budget
            and all(b <= candidate.max_batch_size for b in candidate.preferred_batch_size)
        )
        if ok and candidate != s:
            ranked.append((priority, candidate))

    if fill >= 0.7:  # batches stop at a limit: lift it
        if s.preferred_batch_size:
            add(0, replace(s, preferred_batch_size=()))
        add(1, replace(s, max_batch_size=s.max_batch_size * 2, preferred_batch_size=()))
    if fill < 0.5 and company:
        add(1, replace(s, max_queue_delay_microseconds=min(delay_budget, max(250, delay * 4))))
        typical = 1 << int(math.log2(mean_batch))
        if delay > 0 and not s.preferred_batch_size and typical >= 2:
            add(1, replace(s, preferred_batch_size=(typical,)))
    if delay > 0 and queue_us > 2 * compute_us:  # requests wait on the delay rather than the model
        add(0 if not company else 2, replace(s, max_queue_delay_microseconds=delay // 4 // 50 * 50))
    if compute_us >= queue_us:  # the model is busy: more copies may run in parallel
        add(2, replace(s, instances=s.instances + 1))
    if s.instances > 1:  # copies compete for the same cores on small hosts
        add(3, replace(s, instances=s.instances - 1))
    if delay > 0:
        add(4, replace(s, max_queue_delay_microseconds=0))
    if fill < 0.25 and s.max_batch_size > 1:
        add(5, replace(s, max_batch_size=s.max_batch_size // 2, preferred_batch_size=()))
    seen: set[TuneSettings] = set()
    ordered = []
    for _, candidate in sorted(ranked, key=lambda item: item[0]):
        if candidate not in seen:
            seen.add(candidate)
            ordered.append(candidate)
    return ordered


def parse_duration(text: str) -> float:
    """``"90s"``, ``"5m"``, ``"1h"`` or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip().lower()
    number, unit = (value[:-1], units[value[-1]]) if value and value[-1] in units else (value, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = -1
    if not seconds > 0:
        raise SpecError(f"budget '{text}' is not a duration", hint="use e.g. 90s, 5m or 1h")
    return seconds


# --------------------------------------------------------------------------- effects


class _Session:
    """One tuning run: owns the control client, the clock and the list of points."""

    def __init__(
        self,
        model: str,
        address: str,
        protocol: str,
        result: TuneResult,
        bounds: Bounds,
        budget_s: float,
        max_points: int,
        window_s: float,
        progress: Callable[[TuneEvent], None],
    ) -> None:
        self.model, self.address, self.protocol = model, address, protocol
        self.result, self.bounds = result, bounds
        self.budget_s, self.max_points, self.window_s = budget_s, max_points, window_s
        self.progress = progress
        self.started = time.monotonic()
        self.loaded: TuneSettings | None = result.original  # what the server runs; None when unsure
        self.client = connect(address, protocol)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def exhausted(self) -> str:
        if len(self.result.points) >= self.max_points:
            return f"measured the maximum of {self.max_points} points"
        if self.elapsed() + self.window_s * 4 + 2 > self.budget_s:
            return f"time budget of {self.budget_s:.0f}s spent"
        return ""

    def load(self, config: Mapping[str, Any]) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            self.client.load_model(self.model, config=json.dumps(config))
        except InferenceServerException as exc:
            raise ServerError(
                f"model '{self.model}' failed to load with a tuning config: {exc.message()}",
                hint="the server keeps serving the previous config; check Triton's log",
            ) from exc

    def measure(self, settings: TuneSettings, original: Mapping[str, Any], *, concurrency: int = 0) -> TunePoint:
        if settings != self.loaded:
            self.event(f"loading {settings.label()}")
            self.loaded = None
            self.load(settings.apply(original))
            self.loaded = settings
        load = f"c={concurrency}" if concurrency else f"{self.result.rate:g}/s"
        self.event(f"measuring {settings.label()} at {load}")
        point = bench(
            self.model,
            url=self.address,
            protocol=self.protocol,
            concurrency=[concurrency] if concurrency else [],
            rate=[] if concurrency else [self.result.rate or 0.0],
            window_s=self.window_s,
            max_windows=6,
            warmup_s=max(0.5, self.window_s / 2),
        )[0]
        r = point.result
        within = not point.client_limited and r.errors == 0 and r.completed > 0 and r.p99_ms <= self.result.p99_ms
        tuned = TunePoint(settings, point, within)
        self.result.points.append(tuned)
        self.event(f"{settings.label()} at {load}: {r.throughput:.0f}/s p99 {r.p99_ms:.2f} ms")
        return tuned

    def event(self, message: str) -> None:
        self.progress(TuneEvent(message, len(self.result.points), self.elapsed(), self.budget_s))


def tune(
    model: str,
    *,
    p99_ms: float,
    url: str | None = None,
    protocol: str = "grpc",
    rate: float | None = None,
    budget_s: float = 300.0,
    max_points: int = 30,
    bounds: Bounds | None = None,
    window_s: float = 1.0,
    progress: Callable[[TuneEvent], None] | None = None,
) -> TuneResult:
    """Find the settings with the most throughput under ``p99_ms`` (or the lowest p99 at ``rate``).

    The model's original config is loaded back before returning, on error and on Ctrl-C.

    Raises:
        ServerError: unreachable server, unknown or unloaded model, a reload Triton refused.
        SpecError: a non-batching model (``max_batch_size: 0``) or a non-positive budget.
        TuneError: no setting meets the p99 budget even at concurrency 1.
    """
    if p99_ms <= 0:
        raise SpecError(f"--p99-ms must be positive, got {p99_ms:g}", hint="e.g. --p99-ms 10")
    address = url or default_address(protocol)
    probe = connect(address, protocol)
    try:
        info = model_info(probe, model, address, protocol)
    finally:
        probe.close()
    original = info.config
    start = TuneSettings.from_config(original)
    if start.max_batch_size == 0:
        raise SpecError(
            f"model '{model}' has max_batch_size 0: there is no batching to tune",
            hint="give the model a batch dimension (max_batch_size > 0) in tritonkit.yaml and rebuild",
        )
    warmup = max((int(w.get("batch_size", 1)) for w in original.get("model_warmup", [])), default=1)
    limits = bounds or Bounds(max_instances=max(4, os.cpu_count() or 1))
    limits = replace(limits, min_batch=max(limits.min_batch, warmup))
    result = TuneResult(model=model, p99_ms=p99_ms, rate=rate, original=start)
    session = _Session(
        model, address, protocol, result, limits, budget_s, max_points, window_s, progress or (lambda event: None)
    )
    try:
        _search(session, original, start)
    finally:
        result.elapsed_s = session.elapsed()
        try:
            if session.loaded != start:
                session.event("restoring the original config")
                session.load(original)
        finally:
            session.client.close()
    return result


def _search(session: _Session, original: Mapping[str, Any], start: TuneSettings) -> None:
    result, slo = session.result, session.result.p99_ms
    best = result.baseline = _evaluate(session, original, start, concurrency=1, to_beat=None)
    if best is None:  # maybe the batching delay alone breaks the budget
        fastest = replace(start, max_queue_delay_microseconds=0, preferred_batch_size=())
        best = _evaluate(session, original, fastest, concurrency=1, to_beat=None) if fastest != start else None
    if best is None:
        shown = session.result.points[-1]
        raise TuneError(
            f"p99 is {shown.p99_ms:.2f} ms at {shown.load} even with no batching delay; --p99-ms {slo:g} cannot be met",
            hint=f"ask for at least --p99-ms {math.ceil(shown.p99_ms * 1.2)}"
            + (", or a lower --rate" if result.rate else ""),
        )
    tried = {p.settings for p in result.points}
    frontier = propose(best, session.bounds, slo)
    while frontier:
        why = session.exhausted()
        if why:
            result.stopped = why
            break
        candidate = frontier.pop(0)
        if candidate in tried:
            continue
        tried.add(candidate)
        try:
            found = _evaluate(session, original, candidate, concurrency=int(best.bench.level), to_beat=best)
        except ServerError as exc:  # Triton refused these settings; the previous config still serves
            session.event(f"skipped {candidate.label()}: {exc.message}")
            continue
        if found is not None and better(found, best, rate=result.rate):
            best = found
            frontier = [c for c in propose(best, session.bounds, slo) if c not in tried]
    else:
        result.stopped = "no neighbour of the best settings improved on it by 2%"
    result.best = best


def _evaluate(
    session: _Session,
    original: Mapping[str, Any],
    settings: TuneSettings,
    *,
    concurrency: int,
    to_beat: TunePoint | None,
) -> TunePoint | None:
    """The best point of ``settings`` under the budget, or None when it has none."""
    if session.result.rate is not None:
        return session.measure(settings, original)
    slo, bounds = session.result.p99_ms, session.bounds
    best: TunePoint | None = None
    seen: set[int] = set()
    direction = ""
    c = max(1, concurrency)
    while c not in seen and not (seen and session.exhausted()):  # the first point is always measured
        seen.add(c)
        point = session.measure(settings, original, concurrency=c)
        if point.within_slo:
            if best is not None and point.throughput < best.throughput * PLATEAU:
                best = point if point.throughput > best.throughput else best
                break  # saturated
            best = point
            if direction == "down":
                break  # the highest concurrency under budget, coming from above
            direction = "up"
            c = next_concurrency(c, point.p99_ms, slo, bounds)
        else:
            if direction == "up" or c == 1:
                break
            if to_beat is not None and point.throughput <= to_beat.throughput:
                break  # lower concurrency only lowers throughput: this settings cannot win
            direction = "down"
            c = max(1, c // 2)
    return best
