"""Releases: numbered, immutable copies of builds whose version directories carry the number."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from click.testing import CliRunner

from tests.helpers import copy_example
from tritonkit import Endpoints, TritonServer, UsageError, VerifyError, build_repository, load_spec
from tritonkit.artifact.layout import make_writable, remove_tree
from tritonkit.build.verify import verify
from tritonkit.cli import main
from tritonkit.release.store import ReleaseStore, parse_release


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    copy_example(tmp_path / "project")
    return tmp_path / "project"


def _build(project: Path, cache: Path) -> Path:
    return build_repository(load_spec(project / "tritonkit.yaml"), project / "dist", cache_dir=cache).path


def test_release_numbers_builds_and_never_changes_them(project: Path, tmp_path: Path) -> None:
    store = ReleaseStore(project / "releases")
    first, created = store.create(_build(project, tmp_path / "cache"))
    assert created and first.name == "v1" and first.changed == ["classifier", "classify", "postprocess"]
    again, created = store.create(_build(project, tmp_path / "cache"))
    assert not created and again == first  # an unchanged build is already v1

    spec = project / "tritonkit.yaml"
    spec.write_text(
        spec.read_text().replace("max_queue_delay_microseconds: 2000", "max_queue_delay_microseconds: 1500")
    )
    second, created = store.create(_build(project, tmp_path / "cache"))
    assert created and second.name == "v2" and second.changed == ["classifier"]
    assert [r.name for r in store.releases()] == ["v1", "v2"]

    v2 = store.path(2)
    assert sorted(p.name for p in (v2 / "classifier").iterdir()) == ["2", "config.pbtxt"]
    assert sorted(p.name for p in (v2 / "postprocess").iterdir()) == ["2", "config.pbtxt"]
    assert second.models["postprocess"] == first.models["postprocess"]  # same content, other number
    report = verify(v2)
    assert report.ok and report.digest == second.digest
    assert not os.access(v2 / "classifier" / "config.pbtxt", os.W_OK) or os.geteuid() == 0
    assert (v2 / "classifier" / "config.pbtxt").stat().st_mode & 0o222 == 0


def test_export_is_a_verified_read_only_copy(project: Path, tmp_path: Path) -> None:
    store = ReleaseStore(project / "releases")
    store.create(_build(project, tmp_path / "cache"))
    exported = store.export(1, tmp_path / "models")
    assert verify(exported).ok and verify(exported).digest == store.get(1).digest
    assert exported.stat().st_mode & 0o222 == 0
    with pytest.raises(UsageError, match="exists and is not empty"):
        store.export(1, exported)
    with pytest.raises(UsageError, match="no release v7") as caught:
        store.export(7, tmp_path / "other")
    assert caught.value.hint == "releases: v1"
    remove_tree(exported)


def test_a_tampered_build_is_not_released(project: Path, tmp_path: Path) -> None:
    built = _build(project, tmp_path / "cache")
    copy = tmp_path / "tampered"
    shutil.copytree(built, copy)
    make_writable(copy)
    (copy / "classifier" / "config.pbtxt").write_text("max_batch_size: 4\n")
    store = ReleaseStore(project / "releases")
    with pytest.raises(VerifyError, match="failed verification"):
        store.create(copy)
    assert store.releases() == [] and not (project / "releases" / "v1").exists()


def test_release_names() -> None:
    assert parse_release("v12") == 12
    for bad in ("12", "v0", "v", "latest", "v1.2"):
        with pytest.raises(UsageError, match="is not a release name"):
            parse_release(bad)


def test_cli_release_and_serve_answers_with_the_release_number(project: Path, tmp_path: Path) -> None:
    spec = str(project / "tritonkit.yaml")
    _build(project, tmp_path / "cache")
    runner = CliRunner()
    first = runner.invoke(main, ["release", "-f", spec])
    assert first.exit_code == 0 and "released v1" in first.output, first.output
    again = runner.invoke(main, ["release", "-f", spec])
    assert again.exit_code == 0 and "already release v1" in again.output
    path = project / "tritonkit.yaml"
    path.write_text(path.read_text().replace("max_queue_delay_microseconds: 2000", "max_queue_delay_microseconds: 900"))
    _build(project, tmp_path / "cache")
    second = runner.invoke(main, ["release", "-f", spec])
    assert second.exit_code == 0 and "released v2" in second.output and "changed: classifier" in second.output
    listed = runner.invoke(main, ["releases", "-f", spec])
    assert "v1" in listed.output and "v2" in listed.output

    as_json = json.loads(runner.invoke(main, ["releases", "-f", spec, "--json"]).stdout)
    assert [(r["name"], r["changed"]) for r in as_json["releases"]][1] == ("v2", ["classifier"])
    same = json.loads(runner.invoke(main, ["release", "-f", spec, "--json"]).stdout)
    assert (same["schema"], same["release"], same["new"]) == ("tritonkit/release/v1", "v2", False)
    diff = json.loads(runner.invoke(main, ["diff", "-f", spec, "v1", "v2", "--json"]).stdout)
    assert [(m["name"], m["change"]) for m in diff["models"]] == [("classifier", "changed")]
    assert "max_queue_delay_microseconds: 900" in diff["models"][0]["config_diff"]
    exported = runner.invoke(main, ["export", "v2", str(tmp_path / "exported"), "-f", spec, "--json"])
    assert json.loads(exported.stdout)["path"] == str(tmp_path / "exported")

    server = TritonServer(
        ReleaseStore(project / "releases").path(2),
        endpoints=Endpoints.allocate(),
        models=["classifier"],
    )
    with server:
        client = httpclient.InferenceServerClient(server.endpoints.http_url.removeprefix("http://"))
        tensor = httpclient.InferInput("features", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
        assert client.infer("classifier", [tensor]).get_response()["model_version"] == "2"
