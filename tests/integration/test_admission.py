"""Admission from intent on the real Triton: under overload, the derived queue policy refuses
the excess at once (UNAVAILABLE) instead of queueing every request past its budget."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonkit import Endpoints, TritonServer, build_repository, load_spec
from tritonkit.build import pbtxt
from tritonkit.serve.server import free_port

SLOW_MODEL = """
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.025)  # one batch (up to 4 requests) costs 25 ms: ~160 requests/s per instance
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
            for r in requests
        ]
"""

SPEC = """
name: admission
models:
  - name: slow
    kind: python
    path: slow
    max_batch_size: 4
    inputs: [{name: x, dtype: FP32, dims: [1]}]
    outputs: [{name: y, dtype: FP32, dims: [1]}]
    dynamic_batching: {max_queue_delay_microseconds: 0}
    instance_group: [{count: 1, kind: KIND_CPU}]
"""
INTENT = """    slo: {p99_ms: 60, max_queue_ms: 20}
    capacity: {rps: 150, concurrency: 4, p99_ms: 30}
"""


def _overload(url: str, threads: int = 24, seconds: float = 3.0) -> tuple[list[float], list[float], list[str]]:
    accepted: list[float] = []
    rejected: list[float] = []
    reasons: list[str] = []
    lock, stop = threading.Lock(), time.monotonic() + seconds

    def loop() -> None:
        client = grpcclient.InferenceServerClient(url)
        tensor = grpcclient.InferInput("x", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
        while time.monotonic() < stop:
            t0 = time.monotonic()
            try:
                client.infer("slow", [tensor])
                with lock:
                    accepted.append(time.monotonic() - t0)
            except InferenceServerException as exc:
                with lock:
                    rejected.append(time.monotonic() - t0)
                    reasons.append(exc.message())
        client.close()

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return accepted, rejected, reasons


@pytest.mark.parametrize("with_intent", [True, False])
def test_overload_is_refused_at_once_with_the_derived_policy(tmp_path: Path, with_intent: bool) -> None:
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "model.py").write_text(SLOW_MODEL)
    (tmp_path / "tritonkit.yaml").write_text(SPEC + (INTENT if with_intent else ""))
    built = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "dist", cache_dir=tmp_path / "cache")
    config = pbtxt.parse((built.path / "slow" / "config.pbtxt").read_text())
    policy = config.dynamic_batching.default_queue_policy
    assert (policy.default_timeout_microseconds, policy.max_queue_size) == ((106_667, 8) if with_intent else (0, 0))
    endpoints = Endpoints("127.0.0.1", free_port(), free_port(), free_port())
    with TritonServer(built.path, endpoints=endpoints) as server:
        accepted, rejected, reasons = _overload(server.endpoints.grpc_url)
    assert accepted, "nothing was served"
    if not with_intent:
        assert rejected == []  # without a policy every request queues, however long it waits
        return
    assert len(rejected) > len(accepted) * 0.1, (len(accepted), len(rejected))
    kinds = {reason.split("] ")[-1] for reason in reasons}
    # refused because the queue was full (at once), or because a request waited max_queue_ms (timed out)
    assert kinds <= {"Exceeds maximum queue size", "Request timeout expired"}, kinds
    assert "Exceeds maximum queue size" in kinds
    # refused at once: a rejection costs far less than being served
    assert statistics.median(rejected) < statistics.median(accepted)
