"""Every source path of a spec resolves inside the project (issue 17, item 5): ``..``, absolute
paths and symlinks that lead out are spec errors, before anything is built."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import copy_example
from tritonkit.errors import SpecError
from tritonkit.spec.loader import load_spec

PYTHON_SPEC = """name: t
{extra}models:
  - name: m
    kind: python
    path: {path}
    inputs: [{{name: x, dtype: FP32, dims: [1]}}]
    outputs: [{{name: y, dtype: FP32, dims: [1]}}]
"""


def _project(tmp_path: Path, *, path: str = "models/m", extra: str = "") -> Path:
    project = tmp_path / "project"
    (project / "models" / "m").mkdir(parents=True)
    (project / "models" / "m" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    (project / "tritonkit.yaml").write_text(PYTHON_SPEC.format(path=path, extra=extra))
    return project


def test_a_symlink_to_a_host_file_inside_a_python_model_is_refused(tmp_path: Path) -> None:
    project = _project(tmp_path)
    os.symlink("/etc/passwd", project / "models" / "m" / "passwd")
    with pytest.raises(SpecError) as caught:
        load_spec(project / "tritonkit.yaml")
    assert "models[0].path" in caught.value.message
    assert "symlink passwd -> /etc/passwd that leads outside the project" in caught.value.message
    assert "\n" not in caught.value.message and caught.value.hint


def test_a_symlinked_directory_leading_out_is_refused(tmp_path: Path) -> None:
    project = _project(tmp_path)
    os.symlink("/etc", project / "models" / "m" / "etc")
    with pytest.raises(SpecError, match="symlink etc -> /etc"):
        load_spec(project / "tritonkit.yaml")


def test_the_model_folder_itself_may_not_lead_out(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    project = _project(tmp_path, path="../elsewhere")
    with pytest.raises(SpecError, match="'../elsewhere' resolves to .*elsewhere, outside the project"):
        load_spec(project / "tritonkit.yaml")
    os.symlink(outside, project / "models" / "linked")
    (project / "tritonkit.yaml").write_text(PYTHON_SPEC.format(path="models/linked", extra=""))
    with pytest.raises(SpecError, match="outside the project"):
        load_spec(project / "tritonkit.yaml")


def test_links_and_dotdot_that_stay_inside_are_fine(tmp_path: Path) -> None:
    project = _project(tmp_path, path="models/../models/m")
    (project / "shared.txt").write_text("vocabulary")
    os.symlink("../../shared.txt", project / "models" / "m" / "vocab.txt")
    assert load_spec(project / "tritonkit.yaml").spec.models[0].name == "m"


def test_project_root_widens_the_boundary_only_to_a_directory_above_the_spec(tmp_path: Path) -> None:
    outside = tmp_path / "models_elsewhere"
    (outside / "m").mkdir(parents=True)
    (outside / "m" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    project = _project(tmp_path, path="../models_elsewhere/m", extra="project_root: ..\n")
    assert load_spec(project / "tritonkit.yaml").project == tmp_path.resolve()

    (project / "tritonkit.yaml").write_text(PYTHON_SPEC.format(path="models/m", extra="project_root: models\n"))
    with pytest.raises(SpecError, match="project_root: 'models' .* is not a directory containing the spec"):
        load_spec(project / "tritonkit.yaml")


def test_export_depends_may_not_glob_outside(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "f.py").write_text("def build(): ...\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.py").write_text("KEY = 1\n")
    spec = (
        "name: t\nmodels:\n  - name: m\n    kind: onnx\n    export:\n      factory: f.py:build\n"
        "      inputs: [{name: x, dtype: FP32, dims: [4]}]\n      outputs: [y]\n      depends: [DEPENDS]\n"
    )
    (project / "tritonkit.yaml").write_text(spec.replace("DEPENDS", "'../outside/*.py'"))
    with pytest.raises(SpecError, match=r"export.depends\[0\]: '../outside/secret.py' resolves to .*, outside the"):
        load_spec(project / "tritonkit.yaml")
    (project / "tritonkit.yaml").write_text(spec.replace("DEPENDS", "'/etc/*'"))
    with pytest.raises(SpecError, match=r"pattern '/etc/\*' is absolute"):
        load_spec(project / "tritonkit.yaml")
    (project / "tritonkit.yaml").write_text(spec.replace("DEPENDS", "'../project/*.py'"))  # leaves and comes back
    assert load_spec(project / "tritonkit.yaml").spec.models[0].name == "m"


def test_the_example_project_keeps_loading(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "model_repository")
    loaded = load_spec(project / "tritonkit.yaml")
    assert loaded.project == tmp_path.resolve()  # project_root: .. (its ensembles live in ../ensembles)
    for name in ("embeddings.yaml", "llm.yaml"):
        load_spec(project / name)


def test_a_link_out_inside_a_linked_directory_is_refused(tmp_path: Path) -> None:
    """The walk did not follow a symlinked directory (inside the project), but the builders' copy
    does: a link to a host file in there was copied into the build (issue "a root of trust", row 5)."""
    project = _project(tmp_path)
    (project / "shared").mkdir()
    os.symlink("/etc/passwd", project / "shared" / "passwd")
    os.symlink("../../shared", project / "models" / "m" / "assets")
    with pytest.raises(SpecError, match=r"holds a symlink assets/passwd -> /etc/passwd that leads outside"):
        load_spec(project / "tritonkit.yaml")


def test_a_hard_link_and_a_fifo_in_a_source_are_refused(tmp_path: Path) -> None:
    project = _project(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("host data\n")
    os.link(outside, project / "models" / "m" / "data.txt")
    with pytest.raises(SpecError, match=r"holds data.txt, a hard link with 2 names: the others may be outside"):
        load_spec(project / "tritonkit.yaml")
    (project / "models" / "m" / "data.txt").unlink()
    os.mkfifo(project / "models" / "m" / "pipe")
    with pytest.raises(SpecError, match=r"holds pipe, not a regular file"):
        load_spec(project / "tritonkit.yaml")


def test_a_symlink_that_loops_back_is_refused_before_a_copy_that_would_never_end(tmp_path: Path) -> None:
    project = _project(tmp_path)
    os.symlink(".", project / "models" / "m" / "loop")
    with pytest.raises(SpecError, match=r"holds a symlink loop -> \. to a directory above it"):
        load_spec(project / "tritonkit.yaml")
