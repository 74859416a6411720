"""The promotion transaction's parts: the environment lock, the journal, the drift comparison."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tritonkit.deploy.drift import differences
from tritonkit.deploy.live import live_config, pinned_steps, reloads, repoint, stand_in_config
from tritonkit.deploy.transaction import EnvironmentLock, Journal
from tritonkit.errors import UsageError
from tritonkit.serve.repository_api import one_line
from tritonkit.serve.supervisor import describe_exit


def test_a_second_holder_is_told_who_holds_the_lock(tmp_path: Path) -> None:
    with EnvironmentLock(tmp_path, "promote v3", user="alice"):
        with pytest.raises(UsageError) as caught:
            EnvironmentLock(tmp_path, "promote v2", timeout=0.3).acquire()
        message = caught.value.message
        assert f"pid {os.getpid()}" in message and "alice" in message and "promote v3" in message
        assert "since 20" in message and "killed holder releases" in caught.value.hint
    with EnvironmentLock(tmp_path, "promote v2", timeout=0):  # free again once released
        assert EnvironmentLock(tmp_path, "x").holder().what == "promote v2"  # type: ignore[union-attr]
    assert EnvironmentLock(tmp_path, "x").holder() is None


def test_the_journal_records_steps_and_survives_a_torn_write(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert journal.read() is None
    journal.begin({"id": "abc", "action": "promote", "target": 3, "previous": 2})
    journal.step("loaded classifier/3")
    entry = journal.read()
    assert entry is not None and entry["target"] == 3 and entry["steps"] == ["loaded classifier/3"]
    assert entry["pid"] == os.getpid()
    journal.path.write_text('{"id": "ab')  # a crash mid-write (os.replace makes it unlikely, not impossible)
    assert journal.read() == {}
    journal.clear()
    assert journal.read() is None and not journal.path.exists()


EXPECTED = {
    "classifier": {"max_batch_size": 32, "dynamic_batching": {"max_queue_delay_microseconds": "700"}},
    "classify": {"ensemble_scheduling": {"step": [{"model_name": "classifier", "model_version": "-1"}]}},
}
SERVED = {
    "classifier": {
        "max_batch_size": 32,
        "dynamic_batching": {"max_queue_delay_microseconds": 700, "preserve_ordering": False},
    },
    "classify": {"ensemble_scheduling": {"step": [{"model_name": "classifier", "model_version": -1}]}},
}


def test_drift_is_empty_when_triton_serves_the_record() -> None:
    assert differences(EXPECTED, 2, {"classifier": {2}, "classify": {2}, "old": set()}, SERVED, {}) == []


def test_drift_names_versions_configs_extras_and_live_files() -> None:
    served = {
        **SERVED,
        "classifier": {**SERVED["classifier"], "dynamic_batching": {"max_queue_delay_microseconds": 2000}},
    }
    found = differences(
        EXPECTED,
        2,
        {"classifier": {2}, "classify": {1, 2}, "broken": {3}},
        served,
        {"postprocess": "live/ also holds version 1"},
    )
    assert found == [
        "classifier: served config differs in dynamic_batching",
        "classify: Triton serves version 1, 2, the record says 2",
        "broken: served but not part of v2",
        "postprocess: live/ also holds version 1",
    ]
    assert differences(EXPECTED, 2, {}, {}, {}) == [
        "classifier: not ready, the record says version 2",
        "classify: not ready, the record says version 2",
    ]


def test_a_python_traceback_becomes_one_line() -> None:
    reason = (
        "Failed to initialize model: RuntimeError: this model never loads\n\nAt:\n"
        "  /tmp/live/broken/3/model.py(4): initialize\n"
    )
    assert one_line(reason) == "Failed to initialize model: RuntimeError: this model never loads"
    assert one_line("plain") == "plain" and one_line("") == ""


def test_exit_status_is_named() -> None:
    assert describe_exit(-6) == "killed by SIGABRT" and describe_exit(3) == "exit code 3"


ENSEMBLE = """name: "classify"
platform: "ensemble"
max_batch_size: 32
ensemble_scheduling {
  step { model_name: "classifier" model_version: -1 }
  step { model_name: "postprocess" model_version: -1 }
}
"""


def test_live_configs_pin_ensemble_steps_and_carry_the_version_policy(tmp_path: Path) -> None:
    (tmp_path / "classify").mkdir()
    (tmp_path / "classify" / "config.pbtxt").write_text(ENSEMBLE)
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "config.pbtxt").write_text('name: "classifier"\nbackend: "onnxruntime"\n')
    pinned = live_config(tmp_path, "classify", 3, [3]).decode()
    assert pinned.count("model_version: 3") == 2 and "model_version: -1" not in pinned
    assert "versions: 3" in pinned
    both = live_config(tmp_path, "classifier", 3, [2, 3]).decode()
    assert "versions: 2" in both and "versions: 3" in both and "model_version" not in both
    assert pinned_steps(tmp_path) == {"classifier": {-1}, "postprocess": {-1}}


def test_a_config_change_reloads_as_triton_decides() -> None:
    """Triton re-creates a kept version unless the configs differ only in instance_group and
    version_policy (model_config_utils.cc ConfigChangeRequiresReload, triton-inference-server/core)."""
    base = 'name: "m"\nbackend: "python"\nmax_batch_size: 8\ninstance_group { count: 1 kind: KIND_CPU }\n'
    assert not reloads(base.encode(), base.replace("count: 1", "count: 3").encode())
    assert not reloads(base.encode(), (base + "version_policy { specific { versions: 2 } }").encode())
    assert reloads(base.encode(), (base + "dynamic_batching { max_queue_delay_microseconds: 700 }").encode())
    assert reloads(base.encode(), (base + 'parameters { key: "tag" value { string_value: "2" } }').encode())
    assert reloads(None, base.encode())


def test_a_stand_in_serves_the_old_version_under_its_own_config_and_the_ensemble_runs_it() -> None:
    served = 'name: "first"\nbackend: "python"\nversion_policy { specific { versions: 1 versions: 2 } }\n'
    name, text = stand_in_config(served.encode(), "first", 1)
    assert name == "first.standin-v1" and 'name: "first.standin-v1"' in text.decode()
    assert (
        "versions: 1" in text.decode() and "versions: 2" not in text.decode() and 'backend: "python"' in text.decode()
    )
    pointed = repoint(ENSEMBLE.replace("model_version: -1", "model_version: 1").encode(), {("classifier", 1): "c.s"})
    assert 'model_name: "c.s"' in pointed.decode() and 'model_name: "postprocess"' in pointed.decode()
