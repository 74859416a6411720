"""``tritonkit tune``: search dynamic-batching and instance settings on a running Triton.

Every candidate is applied with ``POST v2/repository/models/<m>/load`` and a config override
(never a restart), measured with :func:`tritonkit.perf.bench.bench`, and the model's original
config is loaded back when the search ends, fails or is interrupted.

The search is a hill climb steered by what the server reports for the best point so far
(:func:`~tritonkit.perf.search.propose`, pure, in :mod:`tritonkit.perf.search`): batches stuck
at a preferred size or ``max_batch_size`` ask for a bigger limit; small batches while several
requests are in flight ask for a longer delay or a preferred size; queue time that is only
batching delay asks for a shorter one; compute-bound points ask for one more instance. For the
max-throughput objective each candidate gets a closed-loop concurrency search that jumps
towards the p99 budget by Little's law (:func:`next_concurrency`) and stops as soon as no
further point can win: a plateau, a point over budget, one slower than the best at the same
concurrency with no lower p99, or — going down, again by Little's law — a point already slower
than the best found (throughput only falls with concurrency). The winner and the
original settings are then re-measured in interleaved pairs that also *settle* them: a side over
the p99 budget steps its concurrency down and is measured again (:func:`_confirm`), so the
capacity tune records is the median of three measurements the server sustained, and an
improvement is claimed only when every pair agrees. With ``rate`` the objective is the lowest p99
at that open-loop Poisson rate.

Example:
    >>> result = tune("classifier", p99_ms=10, url="127.0.0.1:8001", budget_s=300)
    >>> result.best.settings, result.best.throughput

Length: about 670 lines: the search session on a running server (apply a candidate,
measure, settle, confirm in interleaved pairs, restore the served config on every exit) shares
one session object; the search's decisions are pure in ``search.py`` and the variants' search
is ``variants.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from tritonkit.errors import ServerError, TuneError, UsageError
from tritonkit.events import Event, Progress, emit
from tritonkit.perf.analyzer import Windows
from tritonkit.perf.bench import bench
from tritonkit.perf.search import (
    IMPROVEMENT,
    PLATEAU,
    Bounds,
    Confirmation,
    TunePoint,
    TuneResult,
    TuneSettings,
    better,
    next_concurrency,
    propose,
)
from tritonkit.serve.client import connect, default_address, model_info
from tritonkit.serve.repository_api import load_model
from tritonkit.spec.intent import MeasuredOn

__all__ = [
    "Bounds",
    "TunePoint",
    "TuneResult",
    "TuneSettings",
    "better",
    "capacity_at",
    "measured_on",
    "with_files_tag",
    "next_concurrency",
    "parse_duration",
    "propose",
    "tune",
]


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
        raise UsageError(f"budget '{text}' is not a duration", hint="use e.g. 90s, 5m or 1h")
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
        progress: Progress | None,
    ) -> None:
        self.model, self.address, self.protocol = model, address, protocol
        self.reserve_points = 0.0  # measurements' worth of budget kept back to settle and confirm
        self.measured = (0, 0.0)  # measurements taken, seconds they took
        self.input_data: Path | None = None
        self.shapes: Mapping[str, list[int]] | None = None
        self.result, self.bounds = result, bounds
        self.budget_s, self.max_points, self.window_s = budget_s, max_points, window_s
        self.progress = progress
        self.started = time.monotonic()
        self.serving: TuneSettings | None = result.original  # what the server runs; None when unsure
        self.files: Mapping[str, bytes] | None = None  # the model's files, when not the repository's
        self.client = connect(address, protocol)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def point_s(self) -> float:
        """What one measurement has cost so far (reloads, windows, perf_analyzer's retries)."""
        count, seconds = self.measured
        return seconds / count if count else self.window_s * 4 + 2

    @property
    def reserve_s(self) -> float:
        """Budget kept back to settle and confirm the winner, from what measurements really cost."""
        return min(self.budget_s / 3, self.reserve_points * self.point_s())

    def exhausted(self) -> str:
        if len(self.result.points) >= self.max_points:
            return f"measured the maximum of {self.max_points} points"
        if self.elapsed() + self.point_s() + self.reserve_s > self.budget_s:
            return f"time budget of {self.budget_s:.0f}s spent" + (
                f" ({self.reserve_s:.0f}s of it kept to settle and confirm the winner)" if self.reserve_s else ""
            )
        return ""

    def affords(self, measurements: float) -> bool:
        """Whether ``measurements`` more fit in the budget."""
        return self.elapsed() + measurements * self.point_s() <= self.budget_s

    def apply(self, config: Mapping[str, Any]) -> None:
        """Reload the model with ``config`` (the one repository-API load), and with :attr:`files`
        in place of the repository's when given (the config then carries their digest as the
        parameter :data:`FILES_TAG`, so Triton never mistakes it for an earlier load)."""
        if self.files:
            config = with_files_tag(config, self.files)
        load_model(
            self.client,
            self.model,
            config,
            files=self.files,
            context="with a tuning config",
            hint="the server keeps serving the previous config; check Triton's log",
        )

    def restore(self, served: Mapping[str, Any], original: Mapping[str, Any]) -> None:
        """Load the served config (and the repository's files) back when anything else was loaded."""
        if self.serving != TuneSettings.from_config(original) or original != served or self.files:
            self.event("restoring the original config")
            load_model(
                self.client,
                self.model,
                served,
                context="with its served config",
                hint="load it by hand: curl -X POST <http>/v2/repository/models/<model>/load",
            )

    def measure(
        self,
        settings: TuneSettings,
        original: Mapping[str, Any],
        *,
        concurrency: int = 0,
        record: bool = True,
        window_s: float | None = None,
    ) -> TunePoint:
        started = time.monotonic()
        if settings != self.serving:
            self.event(f"loading {settings.label()}")
            self.serving = None
            self.apply(settings.apply(original))
            self.serving = settings
        offered = f"c={concurrency}" if concurrency else f"{self.result.rate:g}/s"
        self.event(f"measuring {settings.label()} at {offered}")
        point = bench(
            self.model,
            url=self.address,
            protocol=self.protocol,
            concurrency=[concurrency] if concurrency else [],
            rate=[] if concurrency else [self.result.rate or 0.0],
            window_s=window_s or self.window_s,
            input_data=self.input_data,
            shapes=self.shapes,
            windows=Windows.THREE,
        )[0]
        count, seconds = self.measured  # counted at the search's window length
        scale = self.window_s / (window_s or self.window_s)
        self.measured = (count + 1, seconds + (time.monotonic() - started) * scale)
        r = point.result
        within = not point.client_limited and r.completed > 0 and r.p99_ms <= self.result.p99_ms
        tuned = TunePoint(settings, point, within)
        if record:
            self.result.points.append(tuned)
        self.event(f"{settings.label()} at {offered}: {r.throughput:.0f}/s p99 {r.p99_ms:.2f} ms")
        return tuned

    def event(self, message: str) -> None:
        emit(
            self.progress,
            Event(
                "tune",
                self.model,
                message,
                done=self.elapsed(),
                total=self.budget_s,
                unit="s",
                data={"points": len(self.result.points)},
            ),
        )


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
    confirm_pairs: int = 3,
    input_data: Path | None = None,
    shapes: Mapping[str, list[int]] | None = None,
    files: Mapping[str, bytes] | None = None,
    start: TuneSettings | None = None,
    climbed: TuneResult | None = None,
    progress: Progress | None = None,
) -> TuneResult:
    """Find the settings with the most throughput under ``p99_ms`` (or the lowest p99 at ``rate``).

    The model's original config is loaded back before returning, on error and on Ctrl-C.

    Args:
        input_data, shapes: what the load sends (see :func:`tritonkit.perf.bench.bench`).
            Each point is exactly three windows of ``window_s`` (:attr:`Windows.THREE`): on a
            shared 2-core host p99 rarely holds perf_analyzer's 10% bar in 1 s windows, and
            waiting for it (up to six, then three more) cost 7.3-11 s a point for a three-window
            result all the same.
        files: the model's files to serve instead of the repository's while tuning (a variant's
            ``{"file:1/model.onnx": bytes}``, :mod:`tritonkit.perf.variants`); the repository's
            are loaded back at the end.
        start: the settings to search from and confirm against (default: the served ones).
        climbed: a :func:`capacity_at` result for the same model, files and start settings on
            this server, just measured (the variant search's screening of the original): its
            climb is the search's first step instead of being measured again.
        confirm_pairs: after the search, the winner and the original settings are re-measured
            in this many interleaved pairs (:class:`~tritonkit.perf.search.Confirmation`); when
            the ratios' spread crosses 1.0 the original settings are kept. 0 skips it.

    Raises:
        ServerError: unreachable server, unknown or unloaded model, a reload Triton refused.
        UsageError: a non-batching model (``max_batch_size: 0``) or a non-positive budget.
        TuneError: no setting meets the p99 budget even at concurrency 1.
    """
    session, original, served, start = _open(
        model, p99_ms=p99_ms, url=url, protocol=protocol, rate=rate, budget_s=budget_s, max_points=max_points,
        bounds=bounds, window_s=window_s, input_data=input_data, shapes=shapes, files=files, start=start,
        progress=progress,
    )  # fmt: skip
    result = session.result
    # a confirmation point costs about what a search point does, plus about one step down each side
    session.reserve_points = confirm_pairs * 2 + 2 if confirm_pairs > 0 else 2 * SETTLE_WINDOWS
    if climbed is not None and climbed.best is not None and rate is None:
        result.points.extend(climbed.points)
        result.baseline = climbed.best
        session.measured = (len(climbed.points), climbed.elapsed_s)
    try:
        _search(session, original, start)
        if result.best is not None and not (confirm_pairs > 0 and _confirm(session, original, confirm_pairs)):
            result.best = _settle(session, original, result.best)
        result.withdraw_unheld()  # never a winner that its own re-measurement put over the budget
    finally:
        result.elapsed_s = session.elapsed()
        try:
            session.restore(served, original)
        finally:
            session.client.close()
    return result


def capacity_at(
    model: str,
    *,
    p99_ms: float,
    url: str | None = None,
    protocol: str = "grpc",
    files: Mapping[str, bytes] | None = None,
    settings: TuneSettings | None = None,
    concurrency: int = 1,
    budget_s: float = 60.0,
    window_s: float = 1.0,
    input_data: Path | None = None,
    shapes: Mapping[str, list[int]] | None = None,
    progress: Progress | None = None,
) -> TuneResult:
    """The most throughput ``settings`` (default: the served ones) sustain within ``p99_ms``, and nothing else: the
    first step of :func:`tune`'s search (a concurrency climb by Little's law from ``concurrency``,
    down when that is over the budget), with ``files`` (a variant's model) in place of the
    repository's. The served config and files are loaded back.

    ``best`` (and ``baseline``) is that point, or None when even one request at a time breaks the
    budget; ``points`` holds every measurement.
    """
    session, original, served, start = _open(
        model, p99_ms=p99_ms, url=url, protocol=protocol, rate=None, budget_s=budget_s, max_points=64,
        bounds=None, window_s=window_s, input_data=input_data, shapes=shapes, files=files, start=settings,
        progress=progress,
    )  # fmt: skip
    try:
        session.result.baseline = session.result.best = _evaluate(
            session, original, start, concurrency=concurrency, to_beat=None
        )
    finally:
        session.result.elapsed_s = session.elapsed()
        try:
            session.restore(served, original)
        finally:
            session.client.close()
    return session.result


def _open(
    model: str,
    *,
    p99_ms: float,
    url: str | None,
    protocol: str,
    rate: float | None,
    budget_s: float,
    max_points: int,
    bounds: Bounds | None,
    window_s: float,
    input_data: Path | None,
    shapes: Mapping[str, list[int]] | None,
    files: Mapping[str, bytes] | None,
    start: TuneSettings | None,
    progress: Progress | None,
) -> tuple[_Session, dict[str, Any], dict[str, Any], TuneSettings]:
    """A tuning session on the served model: the session, the config measured from (the served one
    without admission control), the served config, and its settings."""
    if p99_ms <= 0:
        raise UsageError(f"the p99 budget must be positive, got {p99_ms:g} ms", hint="e.g. 10 ms")
    address = url or default_address(protocol)
    probe = connect(address, protocol)
    try:
        info = model_info(probe, model, address, protocol)
    finally:
        probe.close()
    served = info.config
    # Capacity is measured without admission control (a queue policy would refuse the very load that
    # finds the limit, and perf_analyzer stops at the first refusal); the served config, policy and
    # all, is loaded back at the end.
    original = _without_admission(served)
    start = start or TuneSettings.from_config(original)
    if start.max_batch_size == 0:
        raise UsageError(
            f"model '{model}' has max_batch_size 0: there is no batching to tune",
            hint="give the model a batch dimension (max_batch_size > 0) in tritonkit.yaml and rebuild",
        )
    warmup = max((int(w.get("batch_size", 1)) for w in original.get("model_warmup", [])), default=1)
    limits = bounds or Bounds(max_instances=max(4, os.cpu_count() or 1))
    onnxruntime = served.get("backend") == "onnxruntime" or served.get("platform") == "onnxruntime_onnx"
    cores = (limits.cores or os.cpu_count() or 1) if onnxruntime else 0  # threads mean nothing to others
    limits = replace(limits, min_batch=max(limits.min_batch, warmup), cores=cores)
    result = TuneResult(
        model=model, p99_ms=p99_ms, rate=rate, original=start, measured_on=measured_on(address, protocol, model)
    )
    session = _Session(model, address, protocol, result, limits, budget_s, max_points, window_s, progress)
    session.input_data, session.shapes = input_data, shapes
    if original != served:
        session.serving = None  # the first measurement reloads the model without its queue policy
    session.files = files
    if files or start != TuneSettings.from_config(original):
        session.serving = None  # the first measurement loads them
    return session, original, served, start


def _search(session: _Session, original: Mapping[str, Any], start: TuneSettings) -> None:
    result, slo = session.result, session.result.p99_ms
    best = result.baseline = result.baseline or _evaluate(session, original, start, concurrency=1, to_beat=None)
    if best is None:  # maybe the batching delay alone breaks the budget
        fastest = replace(start, max_queue_delay_microseconds=0, preferred_batch_size=())
        best = _evaluate(session, original, fastest, concurrency=1, to_beat=None) if fastest != start else None
    if best is None:
        shown = session.result.points[-1]
        raise TuneError(
            f"p99 is {shown.p99_ms:.2f} ms at {shown.offered} even with no batching delay; "
            f"a {slo:g} ms budget cannot be met",
            hint=f"ask for a p99 budget of at least {math.ceil(shown.p99_ms * 1.2)} ms"
            + (", or a lower request rate" if result.rate else ""),
        )
    tried = {p.settings for p in result.points}
    frontier = propose(best, session.bounds, slo, _solo(result.points, best.settings))
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
            solo = _solo(result.points, best.settings)
            frontier = [c for c in propose(best, session.bounds, slo, solo) if c not in tried]
    else:
        result.stopped = "no neighbour of the best settings improved on it by 2%"
    result.best = best


def _solo(points: list[TunePoint], settings: TuneSettings) -> TunePoint | None:
    """A measured point whose executed batches held one request (for ``propose``), of ``settings``
    when there is one: what one request costs the model alone."""
    solos = [p for p in points if p.bench.mode == "concurrency" and p.bench.server.mean_batch_size <= 1.1]
    return next((p for p in solos if p.settings == settings), solos[0] if solos else None)


def _dominated(point: TunePoint, best: TunePoint) -> bool:
    """Whether ``point`` cannot beat ``best``, measured at the same concurrency: no faster by the
    improvement margin, and no lower p99 (so more concurrency would reach the budget no later)."""
    return (
        point.bench.mode == best.bench.mode == "concurrency"
        and point.bench.level == best.bench.level
        and point.throughput <= best.throughput * IMPROVEMENT
        and point.p99_ms >= best.p99_ms
    )


def _without_admission(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without a dynamic-batching queue policy (Triton JSON)."""
    plain = json.loads(json.dumps(config))
    batching = plain.get("dynamic_batching")
    if isinstance(batching, dict):
        batching.pop("default_queue_policy", None)
        batching.pop("priority_queue_policy", None)
    return plain


def measured_on(address: str, protocol: str, model: str) -> MeasuredOn:
    """Where ``model`` is measured: the server's host (and cores, when it runs on this machine),
    whether its instances are GPU instances (from the config the server serves), the tritonkit
    and Triton versions, the date (:class:`~tritonkit.spec.intent.MeasuredOn`; the meter and the
    settings digest are added where the capacity is written)."""
    import datetime
    import platform
    import socket

    from tritonkit.build.builders.base import tool_version

    host = address.rsplit(":", 1)[0].strip("[]")
    local = host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::") or host in (platform.node(), socket.getfqdn())
    client = connect(address, protocol)
    triton, gpu = "unknown", "unknown"
    try:
        server = client.get_server_metadata(as_json=True) if protocol == "grpc" else client.get_server_metadata()
        triton = str(server.get("version", "unknown"))
        config = client.get_model_config(model, as_json=True) if protocol == "grpc" else client.get_model_config(model)
        gpu = _instances_gpu(config.get("config", config))
    except Exception:  # the server answered every earlier call: this is only evidence
        pass
    finally:
        client.close()
    return MeasuredOn(
        host=platform.node() if local else host,
        cores=str(os.cpu_count() or 1) if local else "unknown",
        gpu=gpu,
        tritonkit=tool_version("tritonkit"),
        triton=triton,
        date=datetime.datetime.now(datetime.UTC).date().isoformat(),
    )


def _instances_gpu(config: Mapping[str, Any]) -> str:
    """``none`` for CPU instances, ``gpu`` (``gpu 0,1`` with the devices named) for GPU ones, as a
    served config (Triton's JSON) says."""
    groups = config.get("instance_group") or []
    kinds = {str(g.get("kind", "KIND_GPU")) for g in groups}
    if groups and kinds <= {"KIND_CPU", "KIND_MODEL"}:
        return "none"
    devices = sorted({int(d) for g in groups if str(g.get("kind")) == "KIND_GPU" for d in g.get("gpus", []) or []})
    return "gpu" + (f" {','.join(str(d) for d in devices)}" if devices else "") if groups else "unknown"


FILES_TAG = "tritonkit_files"
"""The config parameter that carries the digest of the files a tuning load brings (ignored by backends)."""


def with_files_tag(config: Mapping[str, Any], files: Mapping[str, bytes]) -> dict[str, Any]:
    """``config`` carrying the digest of ``files`` as the parameter :data:`FILES_TAG`: a load with
    other files is then never a load Triton thinks it already did (see ``load_model``'s ``files``)."""
    tag = hashlib.sha256(b"".join(k.encode() + v for k, v in sorted(files.items()))).hexdigest()[:16]
    return {**config, "parameters": {**config.get("parameters", {}), FILES_TAG: {"string_value": tag}}}


SETTLE_WINDOWS = 2.0
"""Settling without confirmation pairs measures in windows this many times the search's."""
SETTLE_TRIES = 3
"""How many times settling (or a confirmation) may step a concurrency down."""
MARGIN = 0.9
"""Settling starts from the best point whose p99 is within this share of the budget."""


def _start_level(session: _Session, point: TunePoint) -> TunePoint:
    """The point of ``point``'s settings to settle from: its best *measured* point with p99 at most
    ``MARGIN`` of the budget, or ``point`` itself when there is none.

    The search keeps the best of many short, noisy measurements, so its winner is likely one whose
    p99 was read low (the winner's curse: in ``benchmarks/tune_vs_model_analyzer.py`` tune's MiniLM
    pick, "within 50 ms at c=6" in 1 s windows, measured 56-64 ms in 3 s windows)."""
    slo = session.result.p99_ms
    same = [p for p in session.result.points if p.settings == point.settings and p.bench.mode == "concurrency"]
    safe = [p for p in same if p.within_slo and p.p99_ms <= MARGIN * slo]
    return max(safe, key=lambda p: p.throughput) if safe else point


def _step_down(concurrency: int) -> int:
    """A quarter less concurrency, at least one less, never below 1."""
    return max(1, min(concurrency - 1, round(concurrency * 0.75)))


def _settle(session: _Session, original: Mapping[str, Any], point: TunePoint) -> TunePoint:
    """The operating point of ``point``'s settings, checked in longer windows (used when there
    are no confirmation pairs to do it: the winner is the original, or ``confirm_pairs=0``).

    Starts from :func:`_start_level`, measures it again in windows ``SETTLE_WINDOWS`` times longer
    and, while p99 is over budget, at a lower concurrency (:func:`_step_down`), up to
    ``SETTLE_TRIES`` times and as long as the time budget allows. Out of tries or out of time, the
    starting point is kept as the search measured it (within budget there; a loaded host's long
    windows may not be).
    """
    if session.result.rate is not None or point.bench.mode != "concurrency":
        return point
    start = _start_level(session, point)
    c, settled = int(start.bench.level), start
    for _ in range(SETTLE_TRIES):
        if not session.affords(SETTLE_WINDOWS):
            session.event(f"no time left to settle {point.settings.label()}: keeping c={c} as measured")
            return settled
        session.event(f"settling {point.settings.label()} at c={c}")
        settled = session.measure(
            point.settings, original, concurrency=c, record=False, window_s=session.window_s * SETTLE_WINDOWS
        )
        if settled.within_slo or c == 1:
            return settled
        c = _step_down(c)
    # never within in long windows (a loaded host): keep the search's point, within as it measured it
    return settled if settled.within_slo or not start.within_slo else start


def _confirm(session: _Session, original: Mapping[str, Any], pairs: int) -> bool:
    """Re-measure the winner and the original settings ``pairs`` times each, interleaved (A B B A
    A B: each reload serves two measurements), and keep the original when the spread of the
    winner/original ratios crosses 1.0. Returns False when there was nothing to confirm (the winner
    is the original).

    The pairs also *settle* both sides, each from :func:`_start_level`: a measurement over the p99
    budget steps that side's concurrency down (:func:`_step_down`, up to ``SETTLE_TRIES`` times),
    drops what it measured at the higher concurrency and measures again, so every ratio compares
    two operating points that held the budget. A winner still over budget when out of tries counts
    0 in its pair. ``best`` and ``baseline`` become each side's median re-measured point: the
    capacity tune records is one the server sustained three times, not the search's best reading.
    """
    result = session.result
    best, base = result.best, result.baseline
    if best is None or base is None or best.settings == base.settings:
        return False
    capacity = result.rate is None
    sides = (best.settings, base.settings)
    level = {s: _level(_start_level(session, p)) if capacity else 0 for s, p in zip(sides, (best, base), strict=True)}
    tries = dict.fromkeys(sides, SETTLE_TRIES)
    kept: dict[TuneSettings, list[TunePoint]] = {s: [] for s in sides}
    schedule = [sides[(i + 1) // 2 % 2] for i in range(4 * pairs + 4 * SETTLE_TRIES)]  # A B B A A B B A ...
    for settings in schedule:
        if len(kept[settings]) >= pairs:
            continue
        session.event(f"confirming: {settings.label()}, {len(kept[settings]) + 1}/{pairs}")
        point = session.measure(settings, original, concurrency=level[settings], record=False)
        if capacity and not point.within_slo and level[settings] > 1 and tries[settings] > 0:
            tries[settings] -= 1
            level[settings] = _step_down(level[settings])
            kept[settings].clear()  # measured at a concurrency this side cannot hold
            session.event(f"{settings.label()} is over the budget: stepping down to c={level[settings]}")
            continue
        kept[settings].append(point)
        if all(len(points) >= pairs for points in kept.values()):
            break
    won, was = kept[best.settings], kept[base.settings]
    ratios = []
    for a, b in zip(won, was, strict=False):
        if capacity:
            ratios.append(a.throughput / max(b.throughput, 1e-9) if a.within_slo else 0.0)
        else:
            ratios.append(b.p99_ms / max(a.p99_ms, 1e-9) if a.within_slo else 0.0)
    result.confirmation = Confirmation(tuple(ratios))
    winner = _median_point(won, capacity) or best
    result.baseline = _median_point(was, capacity) or base
    if result.confirmation.confirmed:
        result.best = winner
    else:
        result.unconfirmed, result.best = winner, result.baseline
        session.event(f"not confirmed ({result.confirmation.describe()}): keeping the original settings")
    return True


def _median_point(points: list[TunePoint], capacity: bool) -> TunePoint | None:
    """The median of ``points`` by throughput (by p99 for a rate objective), or None."""
    if not points:
        return None
    ordered = sorted(points, key=(lambda p: p.throughput) if capacity else (lambda p: -p.p99_ms))
    return ordered[(len(ordered) - 1) // 2]


def _level(point: TunePoint) -> int:
    return int(point.bench.level) if point.bench.mode == "concurrency" else 0


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
            if to_beat is not None and best is None and _dominated(point, to_beat):
                return point  # slower than the best at the same concurrency, and no lower p99
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
            c = max(1, min(c - 1, math.floor(c * 0.9 * slo / max(point.p99_ms, 1e-3))))  # Little's law
    return best
