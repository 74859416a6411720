"""Promotion as a transaction (issue 17, items 1 and 2): kill -9 at several points, two promotes at
once, a release that fails in ``initialize`` under load, and status compared with what Triton serves."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from click.testing import CliRunner

from tests.integration.promotion import UnpinnedLoad, served_local, three_releases, unproved
from tritonkit import TritonServer
from tritonkit.cli import main
from tritonkit.deploy.live import live_config
from tritonkit.deploy.local import LocalEnvironment
from tritonkit.release.store import ReleaseStore
from tritonkit.serve.models import repository_models

# Sorts after classifier and postprocess: before the proof on a scratch server, classifier and
# postprocess were already switched to v3 (and answering) when this model failed.
VALIDATOR = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("this model never loads")
"""

VALIDATOR_SPEC = """
  - name: validator
    kind: python
    path: models/validator
    max_batch_size: 8
    inputs:
      - {name: x, dtype: FP32, dims: [1]}
    outputs:
      - {name: y, dtype: FP32, dims: [1]}
"""

# Runs one promotion in its own process and SIGKILLs itself when a progress message starts with
# the given text: a kill at an exact point, without hooks in the library.
DRIVER = """
import os, signal, sys
from pathlib import Path
from tritonkit.deploy.live import live_config
from tritonkit.deploy.local import LocalEnvironment
from tritonkit.release.store import ReleaseStore
store, url, number, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def progress(event):
    print(event.message, flush=True)
    if kill_at and event.message.startswith(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
env = LocalEnvironment(ReleaseStore(Path(store)), url=url)
entry = env.promote(number, progress=progress)
print("done", entry.to_release, flush=True)
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ReleaseStore:
    """v1 = the example, v2 = another batching delay, v3 = v2 plus 'validator'."""
    return three_releases(tmp_path_factory.mktemp("transaction") / "project", "validator", VALIDATOR, VALIDATOR_SPEC)


@pytest.fixture(scope="module")
def local(store: ReleaseStore) -> Iterator[tuple[LocalEnvironment, TritonServer]]:
    with served_local(store) as served:
        yield served


def _served_versions(url: str) -> dict[str, set[str]]:
    client = httpclient.InferenceServerClient(url)
    served: dict[str, set[str]] = {}
    for item in client.get_model_repository_index():
        if item.get("state") == "READY":
            served.setdefault(item["name"], set()).add(item["version"])
    client.close()
    return served


def _drive(env: LocalEnvironment, number: int, kill_at: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, str(env.store.root), env.url, str(number), kill_at],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _ensure(env: LocalEnvironment, number: int) -> None:
    """Serve ``vN`` before a test (unproved: the step under test comes after)."""
    current = env.current()
    if current is None or current.number != number:
        with unproved(env):
            env.promote(number)


def test_a_release_failing_in_initialize_answers_no_request(local: tuple[LocalEnvironment, TritonServer]) -> None:
    env, _ = local
    _ensure(env, 1)
    _ensure(env, 2)
    spec = env.store.root.parent / "tritonkit.yaml"
    with UnpinnedLoad(env.url) as load:
        time.sleep(0.5)
        result = CliRunner().invoke(main, ["promote", "v3", "--env", "local", "--url", env.url, "-f", str(spec)])
        time.sleep(0.5)
    assert result.exit_code == 8, result.output
    assert load.failures == [], load.failures[:3]
    assert set(load.versions) == {"2"}, load.versions  # not one request answered by v3
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "RuntimeError: this model never loads" in error[0], result.output
    assert "Traceback" not in result.output and "At:" not in result.output and "model.py(" not in result.output
    state = env.status()
    assert state.current is not None and state.current.name == "v2" and state.differences == []
    assert env.history()[-1].outcome.startswith("failed:")


@pytest.mark.parametrize(
    ("kill_at", "outcome"),
    [
        ("journal written", "undone"),  # before any change
        ("proving", "undone"),  # while the scratch Triton starts: it must not be left behind
        ("loaded classifier", "undone"),  # after the first model switched, the rest not
        ("settling", "finished"),  # after the outcome was recorded, before live/ was tidied
    ],
)
def test_a_killed_promotion_is_finished_or_undone_by_the_next_command(
    local: tuple[LocalEnvironment, TritonServer], kill_at: str, outcome: str
) -> None:
    env, _ = local
    _ensure(env, 1)
    killed = _drive(env, 2, kill_at)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert env.journal.read() is not None  # left behind on purpose
    state = env.status()  # the next command: recovers first, then compares
    expected = "v1" if outcome == "undone" else "v2"
    assert state.current is not None and state.current.name == expected
    assert state.differences == [], state.differences
    assert env.journal.read() is None
    last = env.history()[-1]
    assert last.to_release == "v2" and (last.ok if outcome == "finished" else "interrupted" in last.outcome)
    served = _served_versions(env.url)
    assert served["classifier"] == {expected[1:]} and served["classify"] == {expected[1:]}
    assert not _scratch_servers(env.root / "scratch"), "the killed promotion's scratch Triton still runs"
    assert not (env.root / "scratch").exists(), "the killed promotion's scratch repository is left behind"
    assert sorted(p.name for p in (env.live / "classifier").iterdir()) == [expected[1:], "config.pbtxt"]


def test_a_killed_promotion_is_undone_on_disk_before_serve_starts(local: tuple[LocalEnvironment, TritonServer]) -> None:
    """The issue's restart case: classifier loaded v2's files with v1's config after a kill."""
    env, server = local
    _ensure(env, 1)
    killed = _drive(env, 2, "loaded postprocess")
    assert killed.returncode == -9
    server.stop()
    try:
        env.recover()  # what 'serve --env local' does before Triton starts
        for model in repository_models(env.live):
            versions = sorted(p.name for p in (env.live / model).iterdir() if p.is_dir())
            assert versions == ["1"], (model, versions)
            release_config = live_config(env.store.path(1), model, 1, [1])  # v1's, pinned to version 1
            assert (env.live / model / "config.pbtxt").read_bytes() == release_config
    finally:
        server.models = repository_models(env.live)
        server.start()
        server.models = []
    state = env.status()
    assert state.current.name == "v1" and state.differences == []  # type: ignore[union-attr]


def test_two_concurrent_promotions_serialize(local: tuple[LocalEnvironment, TritonServer]) -> None:
    env, _ = local
    _ensure(env, 1)
    args = [sys.executable, "-m", "tritonkit", "promote", "v2", "--env", "local", "--url", env.url]
    args += ["--store", str(env.store.root)]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    time.sleep(0.3)
    runs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [run.communicate(timeout=600) for run in runs]
    # one promotes; the other waits for the lock, then finds v2 served: exit 10, one line, no traceback
    assert sorted(run.returncode for run in runs) == [0, 10], outputs
    refused = outputs[[run.returncode for run in runs].index(10)]
    assert "already serves v2" in refused[1] and "Traceback" not in refused[1], refused
    state = env.status()
    assert state.current.name == "v2" and state.differences == [], state.differences  # type: ignore[union-attr]
    assert [p.ok for p in env.history() if p.to_release == "v2"][-1]


def test_status_reports_what_differs_and_repair_fixes_it(local: tuple[LocalEnvironment, TritonServer]) -> None:
    env, server = local
    _ensure(env, 2)
    server.models_api.load("classifier")  # behind tritonkit's back: the on-disk config without a version policy
    client = httpclient.InferenceServerClient(env.url)
    client.unload_model("postprocess")
    client.close()
    spec = env.store.root.parent / "tritonkit.yaml"
    runner = CliRunner()
    shown = runner.invoke(main, ["status", "--env", "local", "--url", env.url, "-f", str(spec)])
    assert shown.exit_code == 8 and "postprocess: not ready, the record says version 2" in shown.output, shown.output
    fixed = runner.invoke(main, ["repair", "--env", "local", "--url", env.url, "-f", str(spec)])
    assert fixed.exit_code == 0 and "fixed: postprocess" in fixed.output, fixed.output
    again = runner.invoke(main, ["status", "--env", "local", "--url", env.url, "-f", str(spec)])
    assert again.exit_code == 0 and "differs" not in again.output, again.output


def test_an_in_place_edit_of_a_served_file_is_not_reloaded_by_repair(
    local: tuple[LocalEnvironment, TritonServer],
) -> None:
    """live/ hard-links the release's files: an edit in live/ is an edit of the store's copy.
    repair used to load it (issue "a root of trust", row 4); it now re-hashes the release first."""
    env, _ = local
    _ensure(env, 2)
    served = next((env.live / "postprocess").glob("*/model.py"))
    original = served.read_bytes()
    spec = env.store.root.parent / "tritonkit.yaml"
    client = httpclient.InferenceServerClient(env.url)
    try:
        served.chmod(0o644)
        served.write_bytes(original + b"\nraise RuntimeError('attacker code')\n")
        client.unload_model("postprocess")  # so that repair wants to load it again
        fixed = CliRunner().invoke(main, ["repair", "--env", "local", "--url", env.url, "-f", str(spec)])
        assert fixed.exit_code == 4 and "failed verification" in fixed.output, fixed.output
        assert not client.is_model_ready("postprocess")  # nothing of the edit was loaded
    finally:
        served.write_bytes(original)
        served.chmod(0o444)
        client.close()
    restored = CliRunner().invoke(main, ["repair", "--env", "local", "--url", env.url, "-f", str(spec)])
    assert restored.exit_code == 0, restored.output


def _scratch_servers(repository: Path) -> list[int]:
    """tritonservers on ``repository``, and orphaned processes (a model stub) running its files."""
    root = str(repository.resolve()).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                args = (proc / "cmdline").read_bytes().split(b"\0")
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            orphan = parent == 1 and any(arg.startswith(root + b"/") for arg in args[1:])
            if b"--model-repository=" + root in args or orphan:
                found.append(int(proc.name))
    return found


def test_a_scratch_triton_that_dies_before_any_model_loads_is_started_once_more(
    local: tuple[LocalEnvironment, TritonServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen once beside a CPU hog: the scratch tritonserver aborted at start in its own gRPC event
    engine (exit -6, "epoll_wait error: Bad file descriptor"), and the promotion failed on no
    model's account. The proof starts it once more; a second failure still fails the promotion."""
    import tritonkit.deploy.local as local_module
    from tritonkit.errors import PromoteError, ServerError

    env, _ = local
    _ensure(env, 1)
    real, calls = local_module.load_check, []

    def dies_first(root: Path, **options: object):  # type: ignore[no-untyped-def]
        calls.append(root)
        if len(calls) == 1:
            raise ServerError("tritonserver exited with code -6: (event_engine) epoll_wait error: Bad file descriptor")
        return real(root, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(local_module, "load_check", dies_first)
    assert env.promote(2).ok and len(calls) == 2
    calls.clear()

    def always(root: Path, **options: object):  # type: ignore[no-untyped-def]
        calls.append(root)
        raise ServerError("tritonserver exited with code -6")

    monkeypatch.setattr(local_module, "load_check", always)
    with pytest.raises(PromoteError, match="exited with code -6"):
        env.promote(1)
    assert len(calls) == 2 and env.current().name == "v2"  # type: ignore[union-attr]
