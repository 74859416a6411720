"""Local promotion: a running Triton switches releases with zero failed requests; failures undo."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from click.testing import CliRunner

from tests.integration.promotion import UnpinnedLoad, served_local, three_releases
from tritonkit import TritonServer
from tritonkit.cli import main
from tritonkit.deploy import open_environment
from tritonkit.deploy.local import LocalEnvironment
from tritonkit.errors import PromoteError, UsageError
from tritonkit.release.store import ReleaseStore
from tritonkit.serve.endpoints import free_port

BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("this model never loads")
"""

BROKEN_SPEC = """
  - name: broken
    kind: python
    path: models/broken
    max_batch_size: 8
    inputs:
      - {name: x, dtype: FP32, dims: [1]}
    outputs:
      - {name: y, dtype: FP32, dims: [1]}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ReleaseStore:
    """v1 = the example, v2 = another batching delay, v3 = v2 plus 'broken'."""
    return three_releases(tmp_path_factory.mktemp("promote") / "project", "broken", BROKEN_MODEL, BROKEN_SPEC)


@pytest.fixture(scope="module")
def local(store: ReleaseStore) -> Iterator[tuple[LocalEnvironment, TritonServer]]:
    with served_local(store) as served:
        yield served


def _version(url: str) -> str:
    client = httpclient.InferenceServerClient(url)
    tensor = httpclient.InferInput("features", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    return str(client.infer("classifier", [tensor]).get_response()["model_version"])


def test_promotion_under_load_fails_no_request_and_a_broken_release_changes_nothing(
    local: tuple[LocalEnvironment, TritonServer],
) -> None:
    env, server = local
    url = server.endpoints.http_url.removeprefix("http://")
    pid = server.pid
    env.promote(1)
    assert _version(url) == "1" and env.current() is not None and env.current().name == "v1"  # type: ignore[union-attr]

    with UnpinnedLoad(url) as load:
        time.sleep(1.0)  # traffic before, during and after the switch
        entry = env.promote(2)
        time.sleep(1.0)
    assert entry.ok and (entry.from_release, entry.to_release) == ("v1", "v2")
    assert load.failures == [], load.failures[:3]
    assert load.versions["1"] > 10 and load.versions["2"] > 10, load.versions
    assert _version(url) == "2"
    assert sorted(p.name for p in (env.live / "classifier").iterdir()) == ["2", "config.pbtxt"]
    assert "max_queue_delay_microseconds: 700" in (env.live / "classifier" / "config.pbtxt").read_text()

    with UnpinnedLoad(url) as load, pytest.raises(PromoteError, match="v3 was not promoted to local.*broken") as caught:
        time.sleep(0.5)
        env.promote(3)
    assert "v2 still serves" in caught.value.hint
    assert load.failures == [], load.failures[:3]
    assert set(load.versions) == {"2"}, load.versions
    assert _version(url) == "2" and env.current().name == "v2"  # type: ignore[union-attr]
    assert sorted(p.name for p in env.live.iterdir()) == ["classifier", "classify", "postprocess"]
    assert sorted(p.name for p in (env.live / "classifier").iterdir()) == ["2", "config.pbtxt"]

    back = env.rollback()
    assert (back.action, back.from_release, back.to_release) == ("rollback", "v2", "v1")
    assert _version(url) == "1"
    outcomes = [(h.action, h.to_release, h.ok) for h in env.history()]
    assert outcomes == [
        ("promote", "v1", True),
        ("promote", "v2", True),
        ("promote", "v3", False),
        ("rollback", "v1", True),
    ]
    assert server.pid == pid and server.exit_code() is None


def test_status_and_bad_input(local: tuple[LocalEnvironment, TritonServer], store: ReleaseStore) -> None:
    env, server = local
    runner = CliRunner()
    url = server.endpoints.http_url.removeprefix("http://")
    # --url always: without it the CLI compares with whatever serves 127.0.0.1:8000 — nothing on a
    # quiet host (status then compares live/ only and says so), the README tour's demo server when
    # test_readme runs on the other worker (exit 8: "classifier: served config differs ...").
    spec = ["-f", str(store.root.parent / "tritonkit.yaml")]
    shown = runner.invoke(main, ["status", "--env", "local", "--url", url, *spec])
    assert shown.exit_code == 0, shown.output
    assert "local serves" in shown.output and "history" in shown.output
    assert "not reachable" not in shown.output, shown.output  # this module's Triton was compared, not only live/
    unknown = runner.invoke(main, ["promote", "v9", "--env", "local", "--url", url, *spec])
    assert unknown.exit_code == UsageError.exit_code and "no release v9" in unknown.output
    nowhere = runner.invoke(main, ["promote", "v2", "--env", "local", "--url", f"127.0.0.1:{free_port()}", *spec])
    assert nowhere.exit_code == 5 and "cannot reach the local Triton" in nowhere.output
    with pytest.raises(UsageError, match="needs the spec that declares it"):
        open_environment(store, "prod")
    prod = runner.invoke(main, ["promote", "v1", "--env", "prod", *spec])
    assert prod.exit_code == UsageError.exit_code and "no environment named 'prod'" in prod.output
    canary = runner.invoke(main, ["promote", "v1", "--env", "local", "--url", url, "--canary", "10", *spec])
    assert (
        canary.exit_code == UsageError.exit_code and "a canary needs a KServe Serverless environment" in canary.output
    )
    assert Path(env.root / "history.jsonl").is_file()


def test_promote_rollback_and_status_as_json(local: tuple[LocalEnvironment, TritonServer], store: ReleaseStore) -> None:
    _, server = local
    url = server.endpoints.http_url.removeprefix("http://")
    common = ["--env", "local", "-f", str(store.root.parent / "tritonkit.yaml"), "--json"]
    runner = CliRunner()
    promoted = runner.invoke(main, ["promote", "v2", "--url", url, *common])
    assert promoted.exit_code == 0, promoted.stderr
    doc = json.loads(promoted.stdout)
    assert doc["schema"] == "tritonkit/promote/v1" and doc["promotion"]["to_release"] == "v2"
    broken = runner.invoke(main, ["promote", "v3", "--url", url, *common])
    doc = json.loads(broken.stdout)
    assert broken.exit_code == doc["exit_code"] == PromoteError.exit_code and not doc["ok"]
    assert "v3 was not promoted" in doc["error"] and "v2 still serves" in doc["hint"]
    shown = json.loads(runner.invoke(main, ["status", "--url", url, *common]).stdout)
    assert shown["current"]["name"] == "v2" and shown["history"][-1]["outcome"].startswith("failed")
    assert (shown["differences"], shown["note"]) == ([], ""), shown  # the undone v3 left Triton serving v2 exactly
    rolled = runner.invoke(main, ["rollback", "--url", url, *common])
    back = json.loads(rolled.stdout)
    assert "promotion" in back, rolled.output
    assert (back["promotion"]["from_release"], back["promotion"]["to_release"]) == ("v2", "v1")
