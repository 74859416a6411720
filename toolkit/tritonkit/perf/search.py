"""The pure core of ``tritonkit tune``: settings, measured points, and every search decision.

Nothing here does I/O, so each decision is unit-tested on made-up points: :func:`propose`
(the next settings to try, steered by the server's own breakdown of the best point),
:func:`next_concurrency` (a Little's-law jump towards the p99 budget) and :func:`better`
(whether a point beats the best by the improvement margin). :mod:`tritonkit.perf.tune` runs
them against a live server.

Example:
    >>> start = TuneSettings(instances=1, max_batch_size=8, max_queue_delay_microseconds=100)
    >>> [s.label() for s in propose(best_point, Bounds(), slo_ms=10)]
    ['1× mbs 16, delay 100 µs', '2× mbs 8, delay 100 µs']
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tritonkit.perf.stats import BenchPoint
from tritonkit.spec.intent import MeasuredOn
from tritonkit.spec.schema import GpuAccelerator

THREADS = "intra_op_thread_count"
"""The config parameter both onnxruntime backends read for a session's threads (Triton's native
one and the Python-based one here): tune searches it for onnxruntime models."""
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
    threads: int = 0  # parameters.intra_op_thread_count of an onnxruntime model; 0: not set (its default)
    # onnxruntime's GPU execution provider (GpuAccelerator.key: tensorrt, tensorrt-fp16, cuda), rendered
    # as optimization.execution_accelerators.gpu_execution_accelerator; "": none (the backend's default)
    accelerator: str = ""

    def batch_limit(self, mean_batch: float) -> int:
        """The batch size that stops batches of about ``mean_batch`` from growing.

        Triton sends a batch as soon as it reaches a preferred size, so batches pile up at the
        smallest preferred size at or above what the queue holds; without one, at max_batch_size.
        """
        reachable = [b for b in self.preferred_batch_size if b >= 0.9 * mean_batch]
        return min(reachable, default=self.max_batch_size)

    def label(self) -> str:
        preferred = f" pref {','.join(map(str, self.preferred_batch_size))}" if self.preferred_batch_size else ""
        threads = f" thr {self.threads}" if self.threads else ""
        accelerator = f" on {self.accelerator}" if self.accelerator else ""
        delay = self.max_queue_delay_microseconds
        return f"{self.instances}x mbs {self.max_batch_size} delay {delay}µs{preferred}{threads}{accelerator}"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TuneSettings:
        """Read the settings out of a model config in Triton's JSON form."""
        batching = config.get("dynamic_batching") or {}
        groups = config.get("instance_group") or [{}]
        max_batch_size = int(config.get("max_batch_size", 0))
        preferred = tuple(int(b) for b in batching.get("preferred_batch_size", []))
        if preferred == (max_batch_size,):
            preferred = ()  # Triton fills in [max_batch_size] when none is given: the same thing
        threads = (config.get("parameters") or {}).get(THREADS, {}).get("string_value", "")
        return cls(
            instances=int(groups[0].get("count", 1)),
            max_batch_size=max_batch_size,
            max_queue_delay_microseconds=int(batching.get("max_queue_delay_microseconds", 0)),
            preferred_batch_size=preferred,
            threads=int(threads) if str(threads).isdigit() else 0,
            accelerator=_accelerator(config),
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
        if self.threads:
            new["parameters"] = {**(new.get("parameters") or {}), THREADS: {"string_value": str(self.threads)}}
        if self.accelerator != _accelerator(new):  # the same one stays as written (its workspace, cache path)
            accelerators = new.setdefault("optimization", {}).setdefault("execution_accelerators", {})
            accelerators.pop("gpu_execution_accelerator", None)
            if self.accelerator:
                chosen = GpuAccelerator.from_key(self.accelerator)
                parameters = {"precision_mode": chosen.precision_mode} if chosen.name == "tensorrt" else {}
                accelerators["gpu_execution_accelerator"] = [{"name": chosen.name, "parameters": parameters}]
        return new


def _accelerator(config: Mapping[str, Any]) -> str:
    """The key of a config's first GPU execution accelerator ("" for none, or one tune does not know)."""
    optimization = config.get("optimization") or {}
    found = (optimization.get("execution_accelerators") or {}).get("gpu_execution_accelerator") or []
    if not found:
        return ""
    parameters = found[0].get("parameters") or {}
    try:
        written = {"name": found[0].get("name"), "precision_mode": parameters.get("precision_mode", "FP32")}
        return GpuAccelerator.model_validate(written).key
    except ValueError:
        return ""


@dataclass(frozen=True)
class Bounds:
    """The search space: instances ``1..max_instances``, batch sizes ``min_batch..max_batch``."""

    max_instances: int = 4
    min_batch: int = 1
    max_batch: int = 128
    max_delay_us: int = 20_000
    max_concurrency: int = 256
    cores: int = 0  # threads per instance are searched up to cores // instances; 0: not searched


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
    def offered(self) -> str:
        """The offered load it was measured at: ``c=8`` (closed loop) or ``50/s`` (open loop)."""
        return f"c={self.bench.level:g}" if self.bench.mode == "concurrency" else f"{self.bench.level:g}/s"


@dataclass(frozen=True)
class Confirmation:
    """The winner against the original settings, re-measured in interleaved pairs.

    Each ratio is winner / original for one pair (throughput; for a rate objective, original
    p99 / winner p99), so > 1 means the winner is better. An improvement is claimed only when
    every pair agrees (the spread does not cross 1.0).
    """

    ratios: tuple[float, ...]

    @property
    def median(self) -> float:
        ordered = sorted(self.ratios)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    @property
    def low(self) -> float:
        return min(self.ratios)

    @property
    def high(self) -> float:
        return max(self.ratios)

    @property
    def confirmed(self) -> bool:
        return bool(self.ratios) and self.low > 1.0

    def describe(self) -> str:
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f} over {len(self.ratios)} interleaved pairs)"


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
    confirmation: Confirmation | None = None
    unconfirmed: TunePoint | None = None  # the search's winner when re-measuring did not confirm it
    not_confirmed: str = ""  # why no winner is claimed although points were measured ("" when one is)
    measured_on: MeasuredOn = field(default_factory=MeasuredOn)  # host, cores, gpu, versions, date

    def capacity(self) -> dict[str, Any] | None:
        """What one replica sustained within the budget, for the spec's ``capacity:`` (or None)."""
        best = self.best
        if best is None or best.bench.mode != "concurrency" or not best.within_slo:
            return None  # an open-loop objective measures latency at a rate, not capacity
        return {
            "rps": round(best.throughput, 1),
            "concurrency": int(best.bench.level),
            "p99_ms": round(best.p99_ms, 3),
            "measured_on": replace(self.measured_on, meter=best.bench.meter).as_dict(),
        }

    def withdraw_unheld(self) -> None:
        """Claim no winner whose last re-measurement broke the budget (a busy host can push a
        point measured within it over it): ``best`` becomes None, the point is kept in
        ``unconfirmed`` and ``not_confirmed`` says why, with the figures."""
        best = self.best
        if best is None or best.within_slo:
            return
        budget = f"the {self.p99_ms:g} ms p99 budget" + (f" at {self.rate:g}/s" if self.rate else "")
        self.not_confirmed = (
            f"{best.settings.label()} re-measured p99 {best.p99_ms:.2f} ms at {best.offered}, over {budget}"
        )
        self.unconfirmed = self.unconfirmed or best
        self.best = None

    @property
    def configs_tried(self) -> int:
        return len({p.settings for p in self.points})


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


def propose(best: TunePoint, bounds: Bounds, slo_ms: float, solo: TunePoint | None = None) -> list[TuneSettings]:
    """Neighbours of ``best.settings`` worth measuring, most promising first.

    Reads the server's breakdown of the best point — mean executed batch against the size
    that stops it growing, queue time against compute time — and proposes:

    * batches stuck at a preferred size or max_batch_size: lift that limit;
    * small batches although several requests are in flight: wait longer for company
      (delay x4, up to a quarter of the budget), or, when already waiting, dispatch as soon
      as a typical batch is there (a preferred size);
    * requests that queue only for the delay, with nothing to batch: a shorter delay;
    * a model busier than its queue: one more instance; and, less likely, one fewer;
    * with ``bounds.cores`` (an onnxruntime model): a busy model one more session thread per
      instance while instances × threads fit the cores, and one fewer; unset threads with several
      instances (each session would take every core) one core's share each;
    * batching that does not pay: with ``solo``, a point of the same settings whose batches held one
      request, an item costing about as much in ``best``'s batches (more than 90% of ``solo``'s) asks
      for one request per instance (``max_batch_size`` down to ``bounds.min_batch``, no delay). On a
      CPU-bound model with several instances, batches only make one copy wait for another.
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
            and (candidate.threads == s.threads or candidate.instances * candidate.threads <= bounds.cores)
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
    if solo is not None and s.instances > 1 and mean_batch >= 1.5 and s.max_batch_size > bounds.min_batch:
        solo_us = solo.bench.server.compute_infer_us
        if not math.isnan(solo_us) and srv.compute_infer_us / mean_batch > 0.9 * solo_us:
            add(2, replace(s, max_batch_size=bounds.min_batch, max_queue_delay_microseconds=0, preferred_batch_size=()))
    if bounds.cores and s.threads and compute_us >= queue_us:
        add(2, replace(s, threads=s.threads + 1))
    if bounds.cores and s.threads > 1:
        add(3, replace(s, threads=s.threads - 1))
    if bounds.cores and not s.threads and s.instances > 1:
        add(3, replace(s, threads=max(1, bounds.cores // s.instances)))
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
