"""tritonkit diff: models added/removed/changed, files with sizes, config.pbtxt as a unified diff."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tritonkit.artifact.diff import diff_repositories
from tritonkit.artifact.hashing import LOCK_FILE
from tritonkit.artifact.lock import write_lock
from tritonkit.cli import main


def _repository(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    write_lock(root, "demo", {})
    return root


BASE = {
    "classifier/config.pbtxt": 'name: "classifier"\nmax_batch_size: 32\n',
    "classifier/1/model.onnx": "weights",
    "postprocess/config.pbtxt": 'name: "postprocess"\n',
    "postprocess/1/model.py": "code",
    "old/config.pbtxt": 'name: "old"\n',
}


def test_models_files_and_config_text(tmp_path: Path) -> None:
    a = _repository(tmp_path / "a", BASE)
    changed = dict(BASE, **{"classifier/config.pbtxt": 'name: "classifier"\nmax_batch_size: 64\n', "new/x.txt": "n"})
    changed["classifier/1/model.onnx"] = "weights, longer"
    del changed["old/config.pbtxt"]
    b = _repository(tmp_path / "b", changed)

    result = diff_repositories(a, b)
    assert [(m.name, m.change) for m in result.models] == [
        ("classifier", "changed"),
        ("new", "added"),
        ("old", "removed"),
    ]
    assert result.unchanged == ["postprocess"] and not result.identical
    classifier = result.models[0]
    assert [(f.path, f.change, f.old_size, f.new_size) for f in classifier.files] == [
        ("classifier/1/model.onnx", "changed", 7, 15),
        ("classifier/config.pbtxt", "changed", 38, 38),
    ]
    assert "-max_batch_size: 32\n+max_batch_size: 64\n" in classifier.config_diff
    assert classifier.config_diff.startswith("--- a/classifier/config.pbtxt\n+++ b/classifier/config.pbtxt\n")

    # lock files alone: the same models and files, but no text to diff
    locks = diff_repositories(a / LOCK_FILE, b / LOCK_FILE)
    assert [(m.name, m.change) for m in locks.models] == [(m.name, m.change) for m in result.models]
    assert locks.models[0].config_diff == ""


def test_a_release_numbering_its_versions_differently_is_not_a_change(tmp_path: Path) -> None:
    a = _repository(tmp_path / "build", BASE)
    b = _repository(tmp_path / "v3", {k.replace("/1/", "/3/"): v for k, v in BASE.items()})
    result = diff_repositories(a, b)
    assert result.identical and result.unchanged == ["classifier", "old", "postprocess"]


def test_cli_text_and_json(tmp_path: Path) -> None:
    a = _repository(tmp_path / "a", BASE)
    b = _repository(tmp_path / "b", dict(BASE, **{"classifier/config.pbtxt": 'name: "classifier"\n'}))
    text = CliRunner().invoke(main, ["diff", str(a), str(b)])
    assert text.exit_code == 0, text.output
    assert "classifier" in text.stdout and "-max_batch_size: 32" in text.stdout and "unchanged: old" in text.stdout

    doc = json.loads(CliRunner().invoke(main, ["diff", "--json", str(a), str(b)]).stdout)
    assert doc["schema"] == "tritonkit/diff/v1" and doc["ok"] and not doc["identical"]
    assert doc["models"][0]["files"] == [
        {"path": "classifier/config.pbtxt", "change": "changed", "old_size": 38, "new_size": 19}
    ]
    same = json.loads(CliRunner().invoke(main, ["diff", "--json", str(a), str(a)]).stdout)
    assert same["identical"] and same["models"] == []
