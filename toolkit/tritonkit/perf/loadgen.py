"""The load generator: worker processes that send requests to Triton and ship timed samples.

:func:`tritonkit.perf.bench.bench` starts one or more :func:`run_worker` processes per load
level (closed loop: a number of threads each with one request in flight; open loop: arrivals
at a request rate, Poisson or constant) and turns their samples into window statistics
(:mod:`tritonkit.perf.stats`). A worker runs in its own process so the GIL of one does not cap
the load; it measures its own CPU use so the parent can tell when the client is the limit.

Example:
    >>> request, types = {"features": x}, {"features": "FP32"}
    >>> job = LoadJob("concurrency", 8, "127.0.0.1:8001", "grpc", "classifier", request, types, 0, True)
    >>> multiprocessing.Process(target=run_worker, args=(job, samples_q, stop, go)).start()
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from tritonkit.serve.client import connect


@dataclass(frozen=True)
class LoadJob:
    """One worker's share of a load level."""

    mode: str
    level: float  # this worker's share: threads (closed) or requests/s (open)
    url: str
    protocol: str
    model: str
    arrays: dict[str, np.ndarray]  # one request, batch dimension included
    datatypes: dict[str, str]  # Triton datatype of each input
    seed: int
    poisson: bool


class _Sender:
    """Sends requests with thread-local clients and keeps their timings until shipped."""

    def __init__(self, job: LoadJob) -> None:
        if job.protocol == "grpc":
            import tritonclient.grpc as client_mod
        else:
            import tritonclient.http as client_mod  # type: ignore[no-redef]
        self.job, self.client_mod = job, client_mod
        self.arrays = job.arrays
        self.lock = threading.Lock()
        self.pending: list[tuple[float, float, float, bool]] = []
        self.local = threading.local()

    def request(self) -> bool:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = connect(self.job.url, self.job.protocol)
        tensors = []
        for name, array in self.arrays.items():
            tensor = self.client_mod.InferInput(name, list(array.shape), self.job.datatypes[name])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        try:
            client.infer(self.job.model, tensors)
            return True
        except Exception:
            return False

    def record(self, intended: float, sent: float) -> None:
        """One request; ``intended`` is when it should have left, ``sent`` when it did."""
        ok = self.request()
        with self.lock:
            self.pending.append((intended, sent, time.monotonic(), ok))

    def take(self) -> list[tuple[float, float, float, bool]]:
        with self.lock:
            batch, self.pending[:] = list(self.pending), []
        return batch


def _closed_loop(sender: _Sender, threads: int, stop: Any) -> list[threading.Thread]:
    """``threads`` threads, each with one request in flight until ``stop``."""

    def loop() -> None:
        while not stop.is_set():
            now = time.monotonic()
            sender.record(now, now)

    started = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for thread in started:
        thread.start()
    return started


def _open_loop(sender: _Sender, job: LoadJob, stop: Any, pool: ThreadPoolExecutor) -> list[threading.Thread]:
    """One scheduler thread: arrivals at ``job.level`` requests/s, each sent by a pool thread."""
    arrivals = random.Random(job.seed)
    next_at = time.monotonic()

    def send_at(intended: float) -> None:
        sender.record(intended, time.monotonic())  # 'sent' is when a pool thread got to it

    def schedule() -> None:
        nonlocal next_at
        while not stop.is_set():
            next_at += arrivals.expovariate(job.level) if job.poisson else 1.0 / job.level
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send_at, next_at)

    thread = threading.Thread(target=schedule, daemon=True)
    thread.start()
    return [thread]


def run_worker(job: LoadJob, samples_q: Any, stop: Any, go: Any) -> None:  # pragma: no cover - a child process
    """Send requests until ``stop``; ship samples to the parent every ~0.25 s, then its CPU share."""
    import resource
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us and restores configs
    sender = _Sender(job)
    samples_q.put(("ready", os.getpid()))
    go.wait()
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    wall_start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=64) if job.mode != "concurrency" else None
    threads = _closed_loop(sender, int(job.level), stop) if pool is None else _open_loop(sender, job, stop, pool)
    while not stop.wait(0.25):
        batch = sender.take()
        if batch:
            samples_q.put(("samples", batch))
    for thread in threads:
        thread.join(timeout=5)
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    batch = sender.take()
    if batch:
        samples_q.put(("samples", batch))
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    used = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    samples_q.put(("cpu", used / max(time.monotonic() - wall_start, 1e-9)))
