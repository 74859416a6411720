"""`pip install tritonkit` with no extras, in a new venv: build and verify ONNX and Python models;
every command that needs an extra refuses at once with exit 6 and the exact pip install.

Slow (a venv and a wheel build, about a minute from the local package mirror); it installs the
worktree the way a user installs the published package.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, copy_example, write_add_model
from tritonkit.errors import DependencyError

CORE_SPEC = """
name: core
models:
  - name: add
    kind: onnx
    file: add.onnx
    max_batch_size: 8
  - name: postprocess
    kind: python
    path: postprocess
    max_batch_size: 32
    inputs:
      - {name: logits, dtype: FP32, dims: [3]}
    outputs:
      - {name: probabilities, dtype: FP32, dims: [3]}
      - {name: label, dtype: BYTES, dims: [1]}
"""


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a new venv holding tritonkit and its core dependencies only.

    The wheel is built with this venv's setuptools (no isolated build environment to set up: the
    same wheel, byte for byte), and the new venv gets no pip of its own: this venv's pip installs
    into it (``pip --python``), which skips ensurepip. What the test installs is unchanged."""
    base = tmp_path_factory.mktemp("core")
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")], check=True, timeout=120)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=600,
    )
    pip = [sys.executable, "-m", "pip", "--python", str(base / "venv" / "bin" / "python")]
    wheel = next(wheels.glob("tritonkit-*.whl"))
    constraints = str(ROOT / "constraints.txt")
    subprocess.run(
        [*pip, "install", "-q", "--no-compile", "--disable-pip-version-check", "-c", constraints, str(wheel)],
        check=True,
        timeout=900,
    )
    return base / "venv" / "bin"


def _run(core: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(core / "tritonkit"), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_wheel_carries_license_and_types(core: Path) -> None:
    wheel = next((core.parent.parent / "wheels").glob("tritonkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "tritonkit/py.typed" in names
    assert any(name.endswith("licenses/LICENSE") for name in names), names
    assert "tritonkit/python_backends/llm/engine.py" in names
    assert {"tritonkit/manifests/crds/inferenceservices.json.gz", "tritonkit/manifests/crds/README.md"} <= set(names)


def test_core_builds_and_verifies_onnx_and_python_models(core: Path, tmp_path: Path) -> None:
    write_add_model(tmp_path / "add.onnx")
    shutil.copytree(ROOT / "model_repository" / "models" / "postprocess", tmp_path / "postprocess")
    (tmp_path / "tritonkit.yaml").write_text(CORE_SPEC)
    for module in ("torch", "pytriton", "matplotlib", "kubernetes", "transformers"):
        found = subprocess.run([str(core / "python"), "-c", f"import {module}"], capture_output=True, check=False)
        assert found.returncode != 0, f"{module} is installed in the core venv"

    built = _run(core, "build", "--json", cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    doc = json.loads(built.stdout)
    assert [(m["name"], m["source"]) for m in doc["models"]] == [("add", "built"), ("postprocess", "built")]
    checked = _run(core, "verify", "--json", "dist/core", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["findings"] == []


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["serve", "dist/core"], "serve"),
        (["verify", "dist/core", "--load"], "serve"),
        (["bench", "add", "-c", "1", "--report", "r"], "report"),
        (["tune", "add", "--p99-ms", "5"], "report,serve"),
        (["deploy", "v1", "--env", "prod"], "k8s"),
        (["build", "-f", "example/tritonkit.yaml"], "torch"),  # the demo exports from PyTorch
    ],
)
def test_each_other_command_names_its_extra_at_once(core: Path, tmp_path: Path, args: list[str], extra: str) -> None:
    copy_example(tmp_path / "example")
    done = _run(core, *args, cwd=tmp_path)
    assert done.returncode == DependencyError.exit_code, done.stdout + done.stderr
    assert f"hint: pip install 'tritonkit[{extra}]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r").exists() and not (tmp_path / "dist").exists()
