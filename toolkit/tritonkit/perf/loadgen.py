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
    """Sends requests and keeps their timings until shipped.

    gRPC sends one ``ModelInferRequest`` serialized once per worker, as raw bytes over one shared
    channel, and reads only the call's status: per request the client does what perf_analyzer's
    C++ client does (one RPC), not a tensor build, a protobuf encode and a numpy decode. Built per
    request with tritonclient, the client took about 190 µs of CPU per request on this 2-core
    machine against perf_analyzer's 80; raw, about 120. That CPU is taken from the server under
    test, which is why the built-in meter read 0.4-0.7x perf_analyzer's throughput before.
    HTTP keeps tritonclient's client (one per thread).
    """

    def __init__(self, job: LoadJob) -> None:
        self.job = job
        self.lock = threading.Lock()
        self.pending: list[tuple[float, float, float, bool]] = []
        self.local = threading.local()
        self.call = _raw_grpc_call(job) if job.protocol == "grpc" else None
        self.payload = infer_request_bytes(job.model, job.arrays, job.datatypes) if self.call else b""

    def request(self) -> bool:
        try:
            if self.call is not None:
                self.call(self.payload)
            else:
                self._http_request()
            return True
        except Exception:
            return False

    def _http_request(self) -> None:
        import tritonclient.http as httpclient

        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = connect(self.job.url, "http")
        tensors = []
        for name, array in self.job.arrays.items():
            tensor = httpclient.InferInput(name, list(array.shape), self.job.datatypes[name])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        client.infer(self.job.model, tensors)

    def record(self, intended: float, sent: float) -> None:
        """One request; ``intended`` is when it should have left, ``sent`` when it did."""
        ok = self.request()
        with self.lock:
            self.pending.append((intended, sent, time.monotonic(), ok))

    def take(self) -> list[tuple[float, float, float, bool]]:
        with self.lock:
            batch, self.pending[:] = list(self.pending), []
        return batch


def infer_request_bytes(model: str, arrays: dict[str, np.ndarray], datatypes: dict[str, str]) -> bytes:
    """One serialized gRPC ``ModelInferRequest`` carrying ``arrays`` (raw contents, as tritonclient
    would send them; BYTES tensors length-prefixed)."""
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import serialize_byte_tensor

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array in arrays.items():
        request.inputs.add(name=name, datatype=datatypes[name], shape=list(array.shape))
        if datatypes[name] == "BYTES":
            raw = serialize_byte_tensor(array).item() if array.size else b""
        else:
            raw = np.ascontiguousarray(array).tobytes()
        request.raw_input_contents.append(raw)
    payload: bytes = request.SerializeToString()
    return payload


def _raw_grpc_call(job: LoadJob) -> Any:
    """``ModelInfer`` on a channel to ``job.url`` that takes and returns bytes (no (de)serializing)."""
    import grpc

    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    channel = grpc.insecure_channel(job.url, options=options)
    return channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")


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
