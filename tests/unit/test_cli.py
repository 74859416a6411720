"""CLI behaviour that needs no server: init, and errors rendered as error/hint lines."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from tritonkit import Spec
from tritonkit.cli import main
from tritonkit.errors import SpecError, UsageError
from tritonkit.spec.starter import STARTER_SPEC


def test_init_writes_a_valid_starter_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "tritonkit.yaml"
    runner = CliRunner()
    assert runner.invoke(main, ["init", str(target)]).exit_code == 0
    assert target.read_text() == STARTER_SPEC
    Spec.model_validate(yaml.safe_load(target.read_text()))

    target.write_text("mine")
    result = runner.invoke(main, ["init", str(target)])
    assert result.exit_code == UsageError.exit_code
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert target.read_text() == "mine"


def test_build_without_spec_points_at_init(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "-f", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "out")])
    assert result.exit_code == SpecError.exit_code
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'missing.yaml'}: file not found",
        "hint: run 'tritonkit init' to write a starter spec, or pass -f PATH",
    ]
    assert not (tmp_path / "out").exists()


def test_infer_rejects_malformed_input_flag() -> None:
    result = CliRunner().invoke(main, ["infer", "m", "--input", "features"])
    assert result.exit_code == UsageError.exit_code
    assert "is not NAME=FILE.npy" in result.stderr
