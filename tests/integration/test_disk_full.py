"""A really full disk (a 600 KiB tmpfs, model 1.2 MB): build, release and export say so in one
line naming where the write failed, exit 14, and keep nothing half-written (issue "a root of
trust", row 7). Copies through shutil.copytree raised shutil.Error, whose causes are strings:
that was a traceback and exit 1. Needs root to mount the tmpfs; skipped with the reason otherwise."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from tests.helpers import tiny_project
from tritonkit.cli import main
from tritonkit.errors import StorageError


@pytest.fixture()
def full(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that really fills) needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture()
def spec(tmp_path: Path) -> Path:
    """A tiny project whose model is 1.2 MB (an initializer the graph uses: y = x + w[:4])."""
    path = tiny_project(tmp_path / "project")
    graph = onnx.load(path.parent / "model.onnx").graph
    weights = numpy_helper.from_array(np.random.default_rng(0).random(300_000, dtype=np.float32), "w")
    nodes = [
        helper.make_node("Slice", ["w", "starts", "ends"], ["w4"]),
        helper.make_node("Add", ["x", "w4"], ["y"]),
    ]
    bounds = [numpy_helper.from_array(np.array([v], dtype=np.int64), n) for n, v in (("starts", 0), ("ends", 4))]
    new = helper.make_graph(nodes, "big", list(graph.input), list(graph.output), [weights, *bounds])
    model = helper.make_model(new, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path.parent / "model.onnx")
    return path


def _refused(result: object, under: Path) -> None:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == StorageError.exit_code, output  # type: ignore[attr-defined]
    assert f"error: no space left on the device: {under}" in output and "Traceback" not in output, output


def test_build_release_and_export_onto_a_full_disk_say_so_and_keep_nothing(full: Path, spec: Path) -> None:
    runner = CliRunner()
    work = spec.parent
    build = ["build", "-f", str(spec)]
    _refused(runner.invoke(main, [*build, "-o", str(full / "dist"), "--cache-dir", str(work / "cache")]), full)
    _refused(runner.invoke(main, [*build, "-o", str(work / "dist"), "--cache-dir", str(full / "cache")]), full)
    # nothing half-copied is kept: the same cache on a disk with room builds and verifies
    done = runner.invoke(main, [*build, "-o", str(work / "dist"), "--cache-dir", str(work / "cache")])
    assert done.exit_code == 0, done.output
    _refused(runner.invoke(main, ["release", "-f", str(spec), "--store", str(full / "releases")]), full)
    assert runner.invoke(main, ["release", "-f", str(spec)]).exit_code == 0
    _refused(runner.invoke(main, ["export", "v1", str(full / "exported"), "-f", str(spec)]), full)
    left = sorted(p.relative_to(full).as_posix() for p in full.rglob("*") if p.is_file())
    assert all(name.endswith((".lock", ".hash-memo.json")) for name in left), left
