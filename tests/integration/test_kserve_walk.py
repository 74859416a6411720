"""A KServe walk outlives its process (issue 25 defect 7): killed mid-walk, the next command
sends the traffic back and records it; while a walk runs, ``status`` names the walker and shows
the split. The cluster is :mod:`tests.integration.kserve_fake` (no cluster here): it is given
exactly the objects the renderer produced, and splits traffic as KServe's reconciler does.
The walk runs in a real process, killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kserve_fake import FakeCluster, install
from tritonkit import build_repository, load_spec
from tritonkit.deploy import open_environment
from tritonkit.deploy.kserve import KServeEnvironment
from tritonkit.errors import ClusterError
from tritonkit.release.store import ReleaseStore

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "ml-prod"

SPEC = """
name: echo
models:
  - name: echo
    kind: python
    path: echo
    max_batch_size: 4
    inputs: [{{name: x, dtype: FP32, dims: [1]}}]
    outputs: [{{name: y, dtype: FP32, dims: [1]}}]
    slo: {{p99_ms: 500}}
environments:
  - name: prod
    namespace: ml-prod
    mode: Serverless
    runtime_image: nvcr.io/nvidia/tritonserver@sha256:{digest}
    prometheus_url: http://127.0.0.1:9
"""

MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "x")]) for r in requests]
# release {release}
"""


@pytest.fixture
def prod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KServeEnvironment, FakeCluster, Path]]:
    """v1 serving in 'prod' on a fresh fake cluster, v2 published; the environment opened with
    the fake cluster in this process too."""
    project = tmp_path / "p"
    (project / "echo").mkdir(parents=True)
    (project / "tritonkit.yaml").write_text(SPEC.format(digest="0" * 64))
    store = ReleaseStore(project / "releases")
    for release in (1, 2):
        (project / "echo" / "model.py").write_text(MODEL.format(release=release))
        store.create(build_repository(load_spec(project / "tritonkit.yaml"), project / "dist").path)
        store.record_publication(release, f"oci://registry.invalid/echo@sha256:{str(release) * 64}")
    state = tmp_path / "cluster.json"
    monkeypatch.setattr("tritonkit.deploy.kserve.cluster", lambda env: FakeCluster(state))
    env = open_environment(store, "prod", load_spec(project / "tritonkit.yaml").spec)
    assert isinstance(env, KServeEnvironment)
    env.timeout_s = 20.0
    env.promote(1)
    yield env, FakeCluster(state), project / "tritonkit.yaml"


def _walk(env: KServeEnvironment, cluster: FakeCluster, spec: Path, steps: str) -> subprocess.Popen[bytes]:
    """``tritonkit promote v2 --analysis 60s --steps STEPS`` against the fake cluster, in a process."""
    args = ["promote", "v2", "--env", "prod", "-f", str(spec), "--store", str(env.store.root), "--analysis", "60s"]
    state = str(cluster.state)
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.integration.kserve_fake", state, *args, "--steps", steps]
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(env: KServeEnvironment, walker: subprocess.Popen[bytes], line: str) -> None:
    """Until the walk journaled ``line`` and recorded that step as done."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        journal = env.journal.read() or {}
        if line in journal.get("steps", []) and env.history()[-1].to_release == "v2":
            return
        assert walker.poll() is None, walker.communicate()[0].decode()
        time.sleep(0.1)
    raise AssertionError(f"the walk never got to '{line}'")


def test_a_walk_killed_at_10_percent_is_sent_back_by_the_next_command(
    prod: tuple[KServeEnvironment, FakeCluster, Path],
) -> None:
    env, cluster, spec = prod
    walker = _walk(env, cluster, spec, "10,50")
    try:
        _wait_for(env, walker, "shifting traffic to 10%")
        running = env.status()  # the walker holds the lock: named, not waited for, the split shown
        assert f"pid {walker.pid}" in running.note, running.note
        assert running.traffic == ["10% on echo-predictor-00002 (latest revision: v2)",
                                   "90% on echo-predictor-00001 (prev)"], running.traffic  # fmt: skip
    finally:
        walker.send_signal(signal.SIGKILL)
        walker.communicate()
    assert env.journal.read() is not None  # the walk died with its process: before, nothing knew
    assert cluster.spec(NAMESPACE, "echo")["predictor"]["canaryTrafficPercent"] == 10  # still split

    after = env.status()  # the next command
    assert "undid the interrupted walk of v2" in after.note and "at 10%" in after.note, after.note
    assert after.current is not None and after.current.name == "v1"
    assert env.journal.read() is None and after.traffic == []
    last = env.history()[-1]
    assert last.ok and last.to_release == "v1" and "interrupted walk of v2" in last.action, last
    predictor = cluster.predictor(NAMESPACE, "echo")
    assert [(t["revisionName"], t["percent"]) for t in predictor["traffic"]] == [
        ("echo-predictor-00002", 0),
        ("echo-predictor-00001", 100),
    ], predictor["traffic"]


def test_a_walk_killed_at_100_percent_is_undone_by_applying_the_previous_release(
    prod: tuple[KServeEnvironment, FakeCluster, Path],
) -> None:
    env, cluster, spec = prod
    v1_storage = json.dumps(cluster.spec(NAMESPACE, "echo")["predictor"], sort_keys=True)
    walker = _walk(env, cluster, spec, "100")
    try:
        _wait_for(env, walker, "shifting traffic to 100%")
    finally:
        walker.send_signal(signal.SIGKILL)
        walker.communicate()
    assert cluster.predictor(NAMESPACE, "echo")["latestRolledoutRevision"] == "echo-predictor-00002"
    undone = env.recover()
    assert undone is not None and "at 100%" in undone, undone
    assert env.current() is not None and env.current().name == "v1"  # type: ignore[union-attr]
    predictor = cluster.predictor(NAMESPACE, "echo")
    assert predictor["traffic"] == [{"revisionName": "echo-predictor-00003", "latestRevision": True, "percent": 100}]
    assert json.dumps(cluster.spec(NAMESPACE, "echo")["predictor"], sort_keys=True) == v1_storage  # v1's objects
    assert env.journal.read() is None


def test_a_walk_that_ends_leaves_no_journal_and_a_walk_blocked_before_traffic_moves_none(
    prod: tuple[KServeEnvironment, FakeCluster, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, cluster, spec = prod
    install(cluster.state)  # in this process: healthy reads, the fake cluster
    done = env.promote(2, analysis_s=0.1, steps=[10, 100])
    assert done.ok and done.to_release == "v2" and env.journal.read() is None
    assert cluster.predictor(NAMESPACE, "echo")["traffic"][0]["percent"] == 100

    def unreachable(env: object) -> None:
        raise ClusterError("no Kubernetes cluster for environment 'prod'")

    monkeypatch.setattr("tritonkit.deploy.kserve.cluster", unreachable)
    with pytest.raises(ClusterError):
        env.promote(1, analysis_s=0.1, steps=[10, 100])
    assert env.journal.read() is None  # no traffic moved: nothing for the next command to undo
    assert env.current() is not None and env.current().name == "v2"  # type: ignore[union-attr]
