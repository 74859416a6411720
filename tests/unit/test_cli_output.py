"""The CLI's output contract without a server: --json documents, exit codes, full-width tables,
missing extras refused before any work, and tune's write-back that needs a confirmation."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.table import Table

from tests.helpers import copy_example
from tritonkit.cli import _output, main
from tritonkit.cli._common import configure_consoles, console
from tritonkit.errors import DependencyError, NotConfirmed, SpecError, UsageError, VerifyError


def _json(result: object) -> dict:
    """The one JSON document on stdout (json.loads fails on anything else there)."""
    return json.loads(result.stdout)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["build", "--no-such-flag"], 2),  # click's own usage error
        (["verify"], 2),  # a missing argument
        (["build", "-f", "{tmp}/missing.yaml", "-o", "{tmp}/out"], SpecError.exit_code),
        (["init", "{tmp}/exists.yaml"], UsageError.exit_code),
        (["verify", "{tmp}"], VerifyError.exit_code),  # a directory without a lock
        (["diff", "{tmp}", "{tmp}"], VerifyError.exit_code),
    ],
)
def test_exit_codes_and_json_errors(tmp_path: Path, args: list[str], code: int) -> None:
    (tmp_path / "exists.yaml").write_text("mine")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    plain = CliRunner().invoke(main, argv)
    assert plain.exit_code == code, plain.output
    assert plain.stdout == "" or code == 2  # errors go to stderr; click prints usage there too

    as_json = CliRunner().invoke(main, [argv[0], "--json", *argv[1:]])
    assert as_json.exit_code == code, as_json.output
    doc = _json(as_json)
    assert doc["schema"] == f"tritonkit/{argv[0]}/v1"
    assert (doc["ok"], doc["exit_code"]) == (False, code)
    assert doc["error"] and "hint" in doc
    assert (tmp_path / "exists.yaml").read_text() == "mine" and not (tmp_path / "out").exists()


def test_every_reporting_command_takes_json() -> None:
    reporting = {"build", "verify", "diff", "infer", "bench", "tune", "release", "releases", "export", "publish"}
    reporting |= {"pull", "deploy", "promote", "rollback", "status", "repair", "init", "plan", "check"}
    for name in reporting:
        options = {opt for param in main.commands[name].params for opt in param.opts}
        assert "--json" in options, name


def test_jsonable_makes_strict_json() -> None:
    from tritonkit.artifact.diff import FileChange

    value = {"p": Path("/x"), "nan": math.nan, "t": (1, 2), "b": b"caf\xc3\xa9", "f": FileChange("a", "added", None, 3)}
    text = json.dumps(_output.jsonable(value), allow_nan=False)
    assert json.loads(text) == {
        "p": "/x",
        "nan": None,
        "t": [1, 2],
        "b": "café",
        "f": {"path": "a", "change": "added", "old_size": None, "new_size": 3},
    }


def test_tables_are_not_cut_when_stdout_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()  # not a terminal, like a CI log
    monkeypatch.setattr(sys, "stdout", buffer)
    monkeypatch.delenv("COLUMNS", raising=False)
    configure_consoles()
    table = Table()
    for number in range(14):
        table.add_column(f"column {number}", no_wrap=True)
    table.add_row(*[f"-0.{number:08d}" for number in range(14)])
    console.print(table)
    configure_consoles()
    text = buffer.getvalue()
    assert "…" not in text and "-0.00000013" in text and max(map(len, text.splitlines())) > 80


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["bench", "m", "-c", "1", "--report", "{tmp}/r"], "report"),
        (["tune", "m", "--p99-ms", "5", "-f", "{tmp}/missing.yaml"], "report"),
    ],
)
def test_a_missing_extra_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], extra: str
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: find_spec says None
    result = CliRunner().invoke(main, [a.replace("{tmp}", str(tmp_path)) for a in args])
    # bench would need a server (exit 5) and tune a spec (exit 9): the extra is checked first
    assert result.exit_code == DependencyError.exit_code, result.output
    assert f"pip install 'tritonkit[{extra}]'" in result.stderr
    assert not (tmp_path / "r").exists()


def _tune_result(spec: Path) -> object:
    from tritonkit.perf.bench import BenchPoint
    from tritonkit.perf.search import TunePoint, TuneResult, TuneSettings
    from tritonkit.perf.stats import ServerBreakdown, WindowStats

    window = WindowStats(0.0, 1.0, 100, 100.0, 1.0, 2.0, 3.0, 4.0, 0.1)
    bench = BenchPoint("concurrency", 4, [window], window, True, "", ServerBreakdown(100, 1, 1, 1, 1, {4: 25}))
    best = TunePoint(TuneSettings(2, 16, 500), bench, within_slo=True)
    return TuneResult("classifier", 10.0, None, TuneSettings(1, 32, 2000), [best], best, best)


def test_tune_without_a_terminal_or_yes_writes_nothing_and_exits_not_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tritonkit.cli.perf import _write_back

    spec = copy_example(tmp_path / "project") / "tritonkit.yaml"
    before = spec.read_text()
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # no terminal, as in CI
    with pytest.raises(NotConfirmed, match="not changed") as caught:
        _write_back(spec, "classifier", _tune_result(spec), yes=False)
    assert caught.value.exit_code == 13 and "--yes" in caught.value.hint
    assert spec.read_text() == before
    _write_back(spec, "classifier", _tune_result(spec), yes=True)
    assert "max_queue_delay_microseconds: 500" in spec.read_text()


def test_quiet_prints_only_errors(tmp_path: Path) -> None:
    target = tmp_path / "tritonkit.yaml"
    quiet = CliRunner().invoke(main, ["-q", "init", str(target)])
    assert quiet.exit_code == 0 and quiet.stdout == "" and target.exists()
    again = CliRunner().invoke(main, ["-q", "init", str(target)])
    assert again.exit_code == UsageError.exit_code and "already exists" in again.stderr


def test_verbose_adds_the_cause(tmp_path: Path) -> None:
    (tmp_path / "tritonkit.lock.json").write_text("{not json")
    plain = CliRunner().invoke(main, ["verify", str(tmp_path)])
    verbose = CliRunner().invoke(main, ["-v", "verify", str(tmp_path)])
    assert plain.exit_code == verbose.exit_code == VerifyError.exit_code
    assert "cause:" not in plain.stderr and "cause: JSONDecodeError" in verbose.stderr
