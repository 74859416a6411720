"""verify catches each way a built repository can be tampered with."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonkit import BuildResult, VerifyError
from tritonkit.artifact.hashing import LOCK_FILE
from tritonkit.artifact.lock import read_lock, write_lock
from tritonkit.build.verify import verify
from tritonkit.cli import main


def _append(root: Path) -> None:
    with (root / "postprocess" / "1" / "model.py").open("a") as handle:
        handle.write("\n# sneaky\n")


def _add(root: Path) -> None:
    (root / "classifier" / "1" / "extra.bin").write_bytes(b"\0")


def _remove(root: Path) -> None:
    (root / "classifier" / "1" / "model.onnx").unlink()


def _break_config(root: Path) -> None:
    path = root / "classifier" / "config.pbtxt"
    path.write_text(path.read_text().replace("max_batch_size: 32", "max_batch_size: 32\nmax_batch: {"))


def _rename_version(root: Path) -> None:
    (root / "postprocess" / "1").rename(root / "postprocess" / "v1")


def _wrong_dtype(root: Path) -> None:
    path = root / "classifier" / "config.pbtxt"
    path.write_text(path.read_text().replace("TYPE_FP32", "TYPE_INT64", 1))


def _rename_model(root: Path) -> None:
    path = root / "postprocess" / "config.pbtxt"
    path.write_text(path.read_text().replace('name: "postprocess"', 'name: "other"'))


def _edit_lock(root: Path) -> None:
    path = root / LOCK_FILE
    lock = json.loads(path.read_text())
    lock["files"]["postprocess/1/model.py"]["sha256"] = "0" * 64
    path.write_text(json.dumps(lock))


def _loosen_slo(root: Path) -> None:
    """A laxer SLO written into the lock: the gates and plans would act on it, so the digest covers it."""
    path = root / LOCK_FILE
    lock = json.loads(path.read_text())
    lock["models"]["classifier"]["slo"] = {"p99_ms": 1000}
    path.write_text(json.dumps(lock))


TAMPERING: dict[str, tuple[Callable[[Path], None], set[str], str]] = {
    "changed": (_append, {"changed"}, "postprocess/1/model.py"),
    "added": (_add, {"added"}, "classifier/1/extra.bin"),
    "missing": (_remove, {"missing", "artifact"}, "classifier/1/model.onnx"),
    "bad_config": (_break_config, {"changed", "config"}, "classifier/config.pbtxt:3:"),
    "version_dir": (_rename_version, {"added", "missing", "layout"}, "postprocess/v1"),
    "artifact_mismatch": (_wrong_dtype, {"changed", "artifact"}, "classifier/1/model.onnx"),
    "name_mismatch": (_rename_model, {"changed", "config"}, "postprocess/config.pbtxt"),
    "lock_edited": (_edit_lock, {"changed", "lock"}, "tritonkit.lock.json"),
    "slo_edited": (_loosen_slo, {"lock"}, "tritonkit.lock.json"),
}


def test_clean_build_verifies(demo_build: BuildResult) -> None:
    report = verify(demo_build.path)
    assert report.ok, report.findings
    assert report.digest == demo_build.digest
    result = CliRunner().invoke(main, ["verify", str(demo_build.alias)])
    assert result.exit_code == 0 and "ok" in result.output
    doc = json.loads(CliRunner().invoke(main, ["verify", "--json", str(demo_build.alias)]).stdout)
    assert doc["ok"] and doc["findings"] == [] and doc["digest"] == demo_build.digest and doc["files"] == report.files


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_is_caught(case: str, writable_copy: Path) -> None:
    tamper, kinds, where = TAMPERING[case]
    tamper(writable_copy)
    report = verify(writable_copy)
    assert not report.ok
    assert {f.kind for f in report.findings} >= kinds, report.findings
    assert any(f.path.startswith(where) for f in report.findings), report.findings
    result = CliRunner().invoke(main, ["verify", str(writable_copy)])
    assert result.exit_code == VerifyError.exit_code
    assert "error:" in result.stderr and "hint:" in result.stderr
    doc = json.loads(CliRunner().invoke(main, ["verify", "--json", str(writable_copy)]).stdout)
    assert (doc["schema"], doc["ok"], doc["exit_code"]) == ("tritonkit/verify/v1", False, VerifyError.exit_code)
    assert {f["kind"] for f in doc["findings"]} >= kinds and doc["error"] and doc["hint"]


def test_verify_without_lock_is_a_clear_error(tmp_path: Path, writable_copy: Path) -> None:
    (writable_copy / LOCK_FILE).unlink()
    with pytest.raises(VerifyError, match="not a tritonkit repository"):
        verify(writable_copy)
    shutil.rmtree(writable_copy / "classifier")
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "nope")])
    assert result.exit_code == VerifyError.exit_code
    assert "no such repository directory" in result.stderr


def test_a_miswired_ensemble_is_caught_even_with_a_consistent_lock(writable_copy: Path) -> None:
    config = writable_copy / "classify" / "config.pbtxt"
    config.write_text(
        config.read_text().replace(
            'key: "logits"\n      value: "logits"\n    }\n  }\n  step',
            'key: "logits"\n      value: "scores"\n    }\n  }\n  step',
            1,
        )
    )
    lock = read_lock(writable_copy)
    (writable_copy / LOCK_FILE).unlink()
    write_lock(writable_copy, lock.repository, lock.models)  # as if built that way: only the wiring is wrong
    findings = [f for f in verify(writable_copy).findings]
    assert findings and {f.kind for f in findings} == {"ensemble"}, findings
    assert "step 2 (postprocess): tensor(s) logits are never produced" in findings[0].message
    assert CliRunner().invoke(main, ["verify", str(writable_copy)]).exit_code == 4
