"""Every directory under tests/cases/ is one bad input: build must refuse it cleanly.

Each case holds a tritonkit.yaml and an expected.yaml (substrings of the error line, of the
hint line, and which ONNX file to generate). The build runs through the real CLI; the test
checks the SpecError exit code, one ``error:`` line naming the file/key, one ``hint:`` line, and that the
output directory (which already holds an earlier build) is untouched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.helpers import write_add_model
from tritonkit.artifact.hashing import hash_tree
from tritonkit.cli import main
from tritonkit.errors import SpecError

CASES = sorted(p for p in (Path(__file__).parents[1] / "cases").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_bad_spec_is_refused(case: Path, tmp_path: Path) -> None:
    expected = yaml.safe_load((case / "expected.yaml").read_text())
    work = tmp_path / case.name
    shutil.copytree(case, work)
    needs = expected.get("needs_onnx")
    if needs is True:
        write_add_model(work / "model.onnx")
    elif needs == "unbatched":
        write_add_model(work / "model.onnx", batch=False)
    elif needs == "zipmap":
        from tests.integration.model_families import zipmap_graph

        zipmap_graph(work / "model.onnx")
    elif needs == "corrupt":
        (work / "model.onnx").write_bytes(b"this is not a protobuf \x00\x01\x02")
    out = tmp_path / "dist"
    (out / "earlier-build").mkdir(parents=True)
    (out / "earlier-build" / "keep.txt").write_text("previous artifact")
    before = hash_tree(out)

    result = CliRunner().invoke(
        main, ["build", "-f", str(work / "tritonkit.yaml"), "-o", str(out), "--cache-dir", str(tmp_path / "cache")]
    )

    assert result.exit_code == SpecError.exit_code, result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: ")
    assert lines[1].startswith("hint: ")
    for part in expected["contains"]:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    assert expected.get("hint", "") in lines[1]
    assert "Traceback" not in result.output + result.stderr
    assert hash_tree(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["earlier-build"]


def test_every_case_has_expectations() -> None:
    assert len(CASES) >= 10
    for case in CASES:
        assert (case / "expected.yaml").is_file(), case
