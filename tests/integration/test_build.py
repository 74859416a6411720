"""Builds of real models: determinism, caching, immutability, and failures that leave no trace."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import write_add_model
from tritonkit import BuildError, BuildResult, build_repository, load_spec, read_lock, verify
from tritonkit.artifact.hashing import LOCK_FILE, hash_tree
from tritonkit.cli import main
from tritonkit.errors import UsageError


def test_two_clean_builds_are_byte_identical(demo_build: BuildResult, example_copy: Path, tmp_path: Path) -> None:
    # A fresh cache forces the torch -> ONNX export to run again.
    again = build_repository(load_spec(example_copy / "tritonkit.yaml"), tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not any(m.cached for m in again.models)
    assert again.digest == demo_build.digest
    assert again.path.name == demo_build.path.name
    assert hash_tree(again.path) == hash_tree(demo_build.path)
    assert (again.path / LOCK_FILE).read_bytes() == (demo_build.path / LOCK_FILE).read_bytes()


def test_lock_lists_every_file_and_no_machine_details(demo_build: BuildResult) -> None:
    lock = read_lock(demo_build.path)
    assert set(lock.files) == {
        "classifier/config.pbtxt",
        "classifier/1/model.onnx",
        "postprocess/config.pbtxt",
        "postprocess/1/model.py",
        "classify/config.pbtxt",  # an ensemble: a config and an empty version directory
    }
    assert (demo_build.path / "classify" / "1").is_dir()
    assert lock.models["classify"]["kind"] == "ensemble"
    text = (demo_build.path / LOCK_FILE).read_text()
    assert str(demo_build.path.parent) not in text
    assert lock.models["classifier"]["tools"]["torch"].startswith("2.13.0")


def test_built_files_are_read_only(example_copy: Path, tmp_path: Path) -> None:
    # A build of its own: the session's demo build is shared with the tests that serve it.
    result = build_repository(
        load_spec(example_copy / "tritonkit.yaml"), tmp_path / "out", cache_dir=tmp_path / "cache"
    )
    for path in [result.path, *result.path.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o222 == 0, f"{path} is writable ({oct(mode)})"


def test_derived_config_comes_from_the_graph(demo_build: BuildResult) -> None:
    config = (demo_build.path / "classifier" / "config.pbtxt").read_text()
    assert 'name: "features"' in config and "dims: 4" in config
    assert 'name: "logits"' in config and "dims: 3" in config
    assert 'backend: "onnxruntime"' in config


def test_unchanged_rebuild_reuses_everything(example_copy: Path, tmp_path: Path) -> None:
    loaded = load_spec(example_copy / "tritonkit.yaml")
    first = build_repository(loaded, tmp_path / "out", cache_dir=tmp_path / "cache")
    second = build_repository(loaded, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert [m.cached for m in second.models if m.kind != "ensemble"] == [True, True]
    assert not second.created and second.path == first.path
    assert (tmp_path / "out" / "demo").resolve() == first.path


def test_changing_one_model_rebuilds_only_it_and_keeps_the_old_build(tmp_path: Path, example_copy: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(example_copy, project)
    shutil.copytree(example_copy.parent / "ensembles", tmp_path / "ensembles")
    cache = tmp_path / "cache"
    first = build_repository(load_spec(project / "tritonkit.yaml"), tmp_path / "out", cache_dir=cache)
    before = hash_tree(first.path)
    model_py = project / "models" / "postprocess" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# changed\n")
    second = build_repository(load_spec(project / "tritonkit.yaml"), tmp_path / "out", cache_dir=cache)
    cached = {m.name: m.cached for m in second.models if m.kind != "ensemble"}
    assert cached == {"classifier": True, "postprocess": False}
    assert second.digest != first.digest
    assert hash_tree(first.path) == before  # the earlier build is untouched
    assert (tmp_path / "out" / "demo").resolve() == second.path


def test_tampered_cache_entry_is_rebuilt(tmp_path: Path, example_copy: Path) -> None:
    loaded = load_spec(example_copy / "tritonkit.yaml")
    first = build_repository(loaded, tmp_path / "out", cache_dir=tmp_path / "cache")
    entry = tmp_path / "cache" / first.models[1].key / "1" / "model.py"
    entry.chmod(0o644)
    entry.write_text("tampered")
    second = build_repository(loaded, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert [m.cached for m in second.models if m.kind != "ensemble"] == [True, False]
    assert second.digest == first.digest
    # the build shares hard links with the cache: the edit reached it too, and it was replaced
    assert verify(second.path).ok, verify(second.path).findings


def test_onnx_file_model_derives_io(tmp_path: Path) -> None:
    write_add_model(tmp_path / "add.onnx")
    (tmp_path / "tritonkit.yaml").write_text(
        "name: files\nmodels:\n  - {name: add, kind: onnx, file: add.onnx, max_batch_size: 8}\n"
    )
    result = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "out", cache_dir=tmp_path / "cache")
    config = (result.path / "add" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in config
    assert 'name: "x"' in config and 'name: "y"' in config and "dims: 4" in config


FACTORIES = {
    "mismatch": (
        "import torch\n"
        "class Drift(torch.nn.Module):\n"
        "    calls = 0\n"
        "    def forward(self, x):\n"
        "        Drift.calls += 1\n"
        "        return x + float(Drift.calls)  # traced as a constant, so ONNX and torch disagree\n"
        "def build():\n"
        "    return Drift()\n",
        "differs from PyTorch by up to",
    ),
    "raises": (
        "def build():\n    raise RuntimeError('no weights here')\n",
        "factory 'net.py:build' raised RuntimeError: no weights here",
    ),
    "not_a_module": ("def build():\n    return 42\n", "returned int, not a torch.nn.Module"),
}


@pytest.mark.parametrize("case", sorted(FACTORIES))
def test_failed_export_exits_3_and_writes_nothing(case: str, tmp_path: Path) -> None:
    source, message = FACTORIES[case]
    (tmp_path / "net.py").write_text(source)
    (tmp_path / "tritonkit.yaml").write_text(
        "name: bad\nmodels:\n  - name: net\n    kind: onnx\n    max_batch_size: 4\n    export:\n"
        "      factory: net.py:build\n      inputs: [{name: x, dtype: FP32, dims: [3]}]\n      outputs: [y]\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["build", "-f", str(tmp_path / "tritonkit.yaml"), "-o", str(out), "--cache-dir", str(tmp_path / "cache")]
    )
    assert result.exit_code == BuildError.exit_code, result.output + result.stderr
    assert message in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert not list(out.iterdir())


def test_output_alias_that_is_a_real_directory_is_refused_untouched(example_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "demo").mkdir(parents=True)
    (out / "demo" / "mine.txt").write_text("keep me")
    result = CliRunner().invoke(
        main, ["build", "-f", str(example_copy / "tritonkit.yaml"), "-o", str(out), "--cache-dir", str(tmp_path / "c")]
    )
    assert result.exit_code == UsageError.exit_code
    assert "is not a tritonkit alias symlink" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["demo"]
    assert (out / "demo" / "mine.txt").read_text() == "keep me"
