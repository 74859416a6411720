"""``tritonkit bench``: closed-loop (concurrency) and open-loop (request rate) load tests.

Load comes from worker *processes* (spawned, each with its own clients and threads) so the
Python client is not the bottleneck on one core; each point runs in windows after a warm-up,
until the last three windows agree within 10% on throughput and p99 (or ``max_windows``).
Open-loop arrivals are Poisson (or constant) and every latency is measured from the request's
intended send time. Without ``processes`` the worker count starts small and doubles (up to
the core count) while a worker saturates its core. A point is flagged ``client_limited`` when
the generator could not keep up — open-loop send lag p99 over 5 ms or under 95% of the asked rate, or a worker process
that used over 90% of a core — and the CLI refuses to present its numbers as the server's.

Example:
    >>> points = bench("classifier", concurrency=[1, 8], url="127.0.0.1:8001")
    >>> points[1].result.throughput, points[1].server.mean_batch_size
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.errors import ServerError, UsageError
from tritonkit.events import Event, Progress, emit
from tritonkit.perf.analyzer import measure_point, select
from tritonkit.perf.inputs import batch, to_analyzer_json, workload_for
from tritonkit.perf.loadgen import LoadJob, run_worker
from tritonkit.perf.stats import (
    BenchPoint,
    Sample,
    WindowStats,
    is_stable,
    server_delta,
    split_windows,
    summarize,
)
from tritonkit.serve.client import default_address, model_statistics

_BUSY = 0.9
"""A worker process using more than this fraction of a core is the bottleneck."""

"""``(point label, windows done, max windows)``."""


def bench(
    model: str,
    *,
    url: str | None = None,
    protocol: str = "grpc",
    concurrency: Sequence[int] = (),
    rate: Sequence[float] = (),
    poisson: bool = True,
    batch_size: int = 1,
    window_s: float = 2.0,
    max_windows: int = 10,
    warmup_s: float = 1.0,
    processes: int | None = None,
    progress: Progress | None = None,
    engine: str = "auto",
    input_data: Path | None = None,
    shapes: Mapping[str, list[int]] | None = None,
) -> list[BenchPoint]:
    """Measure ``model`` at each concurrency (closed loop) or rate (open loop).

    Args:
        input_data: real inputs (a ``.npy`` file, a directory, or perf_analyzer JSON; see
            :mod:`tritonkit.perf.inputs`); random data when ``None``.
        shapes: fixed sizes for variable dims of random data, ``{"x": [3, 224, 224]}``.
        engine: ``perf_analyzer`` (NVIDIA's meter, :mod:`tritonkit.perf.analyzer`), ``builtin``
            (the Python worker processes of :mod:`tritonkit.perf.loadgen`), or ``auto``:
            perf_analyzer where it is installed, else the built-in one.

    Raises:
        ServerError: unreachable server, unknown or unready model.
        UsageError: neither or both of ``concurrency`` and ``rate``, or an unknown engine.
        DependencyError: ``engine="perf_analyzer"`` where it is not installed.
    """
    if bool(concurrency) == bool(rate):
        raise UsageError(
            "give either concurrency levels or request rates",
            hint="closed loop: concurrency levels such as 1 and 8; open loop: request rates such as 50 and 200",
        )
    address = url or default_address(protocol)
    workload = workload_for(model, address, protocol, input_data, shapes or {})

    def report(label: str, done: int, total: int) -> None:
        emit(progress, Event("bench", label, f"window {done}/{total}", done=done, total=total, unit="windows"))

    levels = [("concurrency", float(c)) for c in concurrency] + [("rate", float(r)) for r in rate]
    analyzer = select(engine)
    if analyzer is not None:
        with tempfile.TemporaryDirectory(prefix="tritonkit-bench-") as scratch:
            data = to_analyzer_json(workload.sample, Path(scratch) / "input.json")  # both engines send the same data
            return [
                measure_point(
                    analyzer,
                    model,
                    address,
                    protocol,
                    mode,
                    level,
                    workload=workload,
                    input_data=data,
                    poisson=poisson,
                    batch_size=batch_size,
                    window_s=window_s,
                    max_windows=max_windows,
                    report=report,
                )  # fmt: skip
                for mode, level in levels
            ]
    arrays = batch(workload.sample, batch_size, batching=workload.batching)
    request = (arrays, workload.datatypes)
    options = {"poisson": poisson, "window_s": window_s, "max_windows": max_windows, "warmup_s": warmup_s}
    return [_builtin_point(model, address, protocol, request, mode, level, processes, report, **options)
            for mode, level in levels]  # fmt: skip


def _builtin_point(
    model: str,
    address: str,
    protocol: str,
    request: tuple[dict[str, np.ndarray], dict[str, str]],
    mode: str,
    level: float,
    processes: int | None,
    report: Callable[[str, int, int], None],
    **options: Any,
) -> BenchPoint:
    """One point from the built-in generator; without ``processes``, the worker count doubles (up
    to the cores) while a worker saturates its core, and the point is measured again."""
    workers = processes or _default_processes(mode, level)
    cores = os.cpu_count() or 1
    while True:
        point = _measure(model, address, protocol, request, mode, level, workers, options["poisson"],
                         options["window_s"], options["max_windows"], options["warmup_s"], report)  # fmt: skip
        busy = point.client_cpu > _BUSY
        if processes or not busy or workers >= min(cores, max(1, int(level))):
            return point
        workers = min(cores, workers * 2)  # the generator was the bottleneck: spread it out and re-measure


def _default_processes(mode: str, level: float) -> int:
    cores = os.cpu_count() or 1
    if mode == "concurrency":
        return int(max(1, min(cores, level // 16 + 1)))  # a raw-gRPC worker keeps ~16 in flight on one core
    return int(max(1, min(cores, level // 400 + 1)))


def _measure(
    model: str,
    address: str,
    protocol: str,
    request: tuple[dict[str, np.ndarray], dict[str, str]],
    mode: str,
    level: float,
    workers: int,
    poisson: bool,
    window_s: float,
    max_windows: int,
    warmup_s: float,
    report: Callable[[str, int, int], None],
) -> BenchPoint:
    label = f"{mode} {level:g}"
    shares = _split(level, workers, integer=(mode == "concurrency"))
    arrays, datatypes = request
    jobs = [
        LoadJob(mode, share, address, protocol, model, arrays, datatypes, seed, poisson)
        for seed, share in enumerate(shares)
    ]
    procs, samples_q, stop, go = _start_workers([job for job in jobs if job.level > 0])
    samples: list[Sample] = []
    cpu: list[float] = []
    go.set()
    measure_from = time.monotonic() + warmup_s
    stats_before: dict[str, Any] | None = None
    windows: list[WindowStats] = []
    deadline = measure_from + window_s * (max_windows + 2) + 30
    next_split = measure_from + window_s  # splitting every sample again is the parent's main cost: twice a window
    try:
        while time.monotonic() < deadline:
            _drain(samples_q, samples, cpu, timeout=0.2)
            now = time.monotonic()
            if stats_before is None and now >= measure_from:
                stats_before = model_statistics(model, address, protocol)
            if now < next_split:
                continue
            next_split = now + window_s / 2
            windows = split_windows([s for s in samples if s.done >= measure_from], measure_from, window_s)
            windows = [w for w in windows if w.start + w.width <= now]
            report(label, len(windows), max_windows)
            if is_stable(windows) or len(windows) >= max_windows:
                break
            if not any(p.is_alive() for p in procs):
                raise ServerError(
                    "every load worker exited early", hint="check the server and model with 'tritonkit infer'"
                )
        stats_after = model_statistics(model, address, protocol)
    finally:
        _stop_workers(procs, samples_q, stop, samples, cpu)
    tail = windows[-3:]
    if tail:
        result = summarize([s for s in samples if s.done >= measure_from], tail[0].start, sum(w.width for w in tail))
    else:
        result = summarize([], measure_from, window_s)
    limited = _limited(mode, level, result, max(cpu, default=0.0))
    return BenchPoint(
        mode=mode,
        level=level,
        windows=windows,
        result=result,
        stable=is_stable(windows),
        client_limited=limited,
        client_cpu=max(cpu, default=0.0),
        processes=len(procs),
        server=server_delta(stats_before or {}, stats_after),
    )


def _start_workers(jobs: list[LoadJob]) -> tuple[list[Any], Any, Any, Any]:
    """Spawn one worker process per job and wait (up to 60 s) until each has imported and said ready.

    Returns:
        The processes, the samples queue, and the ``stop`` and ``go`` events.
    """
    context = mp.get_context("spawn")
    samples_q: Any = context.Queue()
    stop, go = context.Event(), context.Event()
    procs = [context.Process(target=run_worker, args=(job, samples_q, stop, go), daemon=True) for job in jobs]
    for proc in procs:
        proc.start()
    ready = 0
    deadline = time.monotonic() + 60
    while ready < len(procs) and time.monotonic() < deadline:  # spawned workers import first
        try:
            kind, _ = samples_q.get(timeout=0.5)
            ready += kind == "ready"
        except queue.Empty:
            pass
    return procs, samples_q, stop, go


def _stop_workers(procs: list[Any], samples_q: Any, stop: Any, samples: list[Sample], cpu: list[float]) -> None:
    """Stop the workers, keep what they still ship (10 s at most), and kill any that hang."""
    stop.set()
    end = time.monotonic() + 10
    while any(p.is_alive() for p in procs) and time.monotonic() < end:
        _drain(samples_q, samples, cpu, timeout=0.1)
    for proc in procs:
        proc.join(timeout=1)
        if proc.is_alive():
            proc.kill()


def _limited(mode: str, level: float, result: WindowStats, cpu: float) -> str:
    if cpu > _BUSY:
        return f"a load worker used {cpu:.0%} of a core; add load processes"
    if mode == "rate":
        if result.lag_p99_ms > 5.0:
            return f"requests left up to {result.lag_p99_ms:.1f} ms late (p99)"
        if result.throughput + result.errors / max(result.width, 1e-9) < 0.95 * level:
            return f"only {result.throughput:.0f}/s of {level:g}/s were completed"
    return ""


def _split(level: float, parts: int, *, integer: bool) -> list[float]:
    if integer:
        base, extra = divmod(int(level), parts)
        return [float(base + (1 if i < extra else 0)) for i in range(parts)]
    return [level / parts] * parts


def _drain(samples_q: Any, samples: list[Sample], cpu: list[float], timeout: float) -> None:
    try:
        item = samples_q.get(timeout=timeout)
    except queue.Empty:
        return
    while True:
        kind, payload = item
        if kind == "samples":
            samples.extend(Sample(*row) for row in payload)
        elif kind == "cpu":
            cpu.append(payload)
        try:
            item = samples_q.get_nowait()
        except queue.Empty:
            return


# --------------------------------------------------------------------------- server side
