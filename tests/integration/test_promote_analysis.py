"""Promotion gated on evidence: a release that breaks its SLO under real traffic is rolled back
automatically, and the history records why."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from click.testing import CliRunner

from tests.helpers import Background
from tests.integration.promotion import ECHO_MODEL, unproved
from tritonkit import Endpoints, TritonServer, build_repository, load_spec
from tritonkit.cli import main
from tritonkit.deploy.local import LocalEnvironment
from tritonkit.errors import PromoteError
from tritonkit.release.store import ReleaseStore

SPEC = """
name: gated
models:
  - name: echo
    kind: python
    path: echo
    max_batch_size: 4
    inputs: [{{name: x, dtype: FP32, dims: [1]}}]
    outputs: [{{name: y, dtype: FP32, dims: [1]}}]
    dynamic_batching: {{max_queue_delay_microseconds: 0}}
    slo: {{p99_ms: {budget}}}
"""


def _release(project: Path, store: ReleaseStore, *, delay: float, budget: float) -> int:
    (project / "echo").mkdir(parents=True, exist_ok=True)
    (project / "echo" / "model.py").write_text(ECHO_MODEL.format(delay=delay))
    (project / "tritonkit.yaml").write_text(SPEC.format(budget=budget))
    built = build_repository(load_spec(project / "tritonkit.yaml"), project / "dist", cache_dir=project / "cache")
    return store.create(built.path)[0].number


class _Traffic(Background):
    def __init__(self, url: str) -> None:
        super().__init__(threads=1)
        self.url, self.sent, self.failed = url, 0, 0

    def run(self) -> None:
        client = grpcclient.InferenceServerClient(self.url)
        tensor = grpcclient.InferInput("x", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
        while not self.stop.is_set():
            try:
                client.infer("echo", [tensor])
            except Exception:
                self.failed += 1
            self.sent += 1
        client.close()


def test_a_release_that_breaks_its_slo_is_rolled_back_with_the_evidence(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path / "releases")
    fast = _release(tmp_path / "p", store, delay=0.0, budget=200)
    slow = _release(tmp_path / "p", store, delay=0.12, budget=60)  # every batch takes 120 ms: p99 > 60
    env = LocalEnvironment(store)
    endpoints = Endpoints.allocate()
    with TritonServer(env.prepare(), endpoints=endpoints, models=[]) as server:
        env.url = server.endpoints.http_url.removeprefix("http://")
        env.metrics_url = server.endpoints.metrics_url
        with unproved(env):  # the starting point; the releases under analysis are proved
            env.promote(fast)
        with _Traffic(server.endpoints.grpc_url) as traffic:
            time.sleep(0.5)
            with pytest.raises(PromoteError, match=f"v{slow} broke its SLO under traffic") as caught:
                env.promote(slow, analysis_s=3)
            again = _release(tmp_path / "p", store, delay=0.001, budget=200)
            where = ["--store", str(store.root), "--url", env.url, "--metrics-url", env.metrics_url]
            args = ["promote", f"v{again}", "--env", "local", *where, "--analysis", "2s", "--json"]
            stays = CliRunner().invoke(main, args)  # meets its SLO and keeps up with v{fast}: stays
        assert stays.exit_code == 0, stays.output
        (step,) = json.loads(stays.stdout)["analysis"]["steps"]  # a whole switch: one step, all the traffic
        assert step["percent"] == 100 and step["ok"], step
        assert "baseline_p99_ms" in step["verdicts"][0]["numbers"]  # null when Triton's 60 s summary just reset
        assert traffic.sent > 50 and traffic.failed == 0, (traffic.sent, traffic.failed)
    assert "p99" in caught.value.message and f"v{fast}" in caught.value.hint
    history = env.history()
    rolled = [p for p in history if p.action.startswith(f"rollback (analysis of v{slow}")]
    assert rolled and rolled[0].ok and rolled[0].to_release == f"v{fast}" and "p99" in rolled[0].action
    assert "x the previous release's" in rolled[0].action  # behind v{fast}'s numbers read before the switch too
    assert env.current() is not None and env.current().number == again  # type: ignore[union-attr]
