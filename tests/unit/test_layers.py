"""The import-layering check (tools/check_layers.py, run by 'make lint') catches what it should."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_layers", ROOT / "tools" / "check_layers.py")
assert _spec and _spec.loader
check_layers = importlib.util.module_from_spec(_spec)
sys.modules["check_layers"] = check_layers
_spec.loader.exec_module(check_layers)


def _tree(root: Path, files: dict[str, str]) -> Path:
    package = root / "tritonkit"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_downward_imports_pass(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "spec/__init__.py": "",
            "spec/schema.py": "from tritonkit.errors import x\n",
            "build/__init__.py": "",
            "build/pipeline.py": "from tritonkit.spec.schema import y\nfrom tritonkit.spec import schema\n",
            "cli/__init__.py": "def f():\n    from tritonkit.build.pipeline import z\n",
        },
    )
    assert check_layers.check(package) == []


def test_upward_import_is_reported_even_inside_a_function(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "spec/__init__.py": "",
            "spec/update.py": "def f():\n    from tritonkit.perf.tune import TuneSettings\n",
            "perf/__init__.py": "",
            "perf/tune.py": "",
        },
    )
    assert check_layers.check(package) == ["upward import: tritonkit.spec.update (spec) imports tritonkit.perf.tune"]


def test_type_checking_imports_do_not_count(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "spec/__init__.py": "",
            "spec/update.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tritonkit.perf.tune import T\n"
            ),
            "perf/__init__.py": "",
            "perf/tune.py": "",
        },
    )
    assert check_layers.check(package) == []


def test_cycle_within_a_stage_is_reported(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "build/__init__.py": "",
            "build/builders/__init__.py": "from .tensorrt import TensorRTBuilder\n",
            "build/builders/tensorrt.py": "def f():\n    from . import builder_for\n",
        },
    )
    assert check_layers.check(package) == [
        "import cycle: tritonkit.build.builders -> tritonkit.build.builders.tensorrt -> tritonkit.build.builders"
    ]


def test_python_backends_may_not_import_tritonkit(tmp_path: Path) -> None:
    package = _tree(tmp_path, {"__init__.py": ""})
    backends = tmp_path / "python_backends"
    backends.mkdir()
    (backends / "model.py").write_text("import numpy\nfrom tritonkit.spec import dtypes\n")
    assert check_layers.check(package, backends) == [f"python backend imports tritonkit: {backends / 'model.py'}"]


def test_every_stage_package_ships_in_the_wheel() -> None:
    """pyproject lists the packages explicitly: a new stage missing there imports in an editable
    checkout and fails in every installed wheel."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    package = root / "toolkit" / "tritonkit"
    found = {".".join(("tritonkit", *p.parent.relative_to(package).parts)) for p in package.rglob("__init__.py")}
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"


def test_a_long_module_states_its_reason(tmp_path: Path) -> None:
    """Issue 23: no module over 450 lines without a stated reason."""
    body = "x = 1\n" * check_layers.MAX_LINES
    package = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "spec/__init__.py": "",
            "spec/short.py": body[: 6 * 100],
            "spec/long.py": '"""A module."""\n' + body,
            "spec/said.py": '"""A module.\n\nLength: one table of every field.\n"""\n' + body,
        },
    )
    problems = check_layers.check(package)
    assert len(problems) == 1 and "long module without a stated reason" in problems[0] and "long.py" in problems[0]
