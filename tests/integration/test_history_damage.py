"""A damaged ``history.jsonl`` (a torn line, an edited one, an unknown key) is named in one line
with its own exit code — never a traceback, never an empty ``--json`` — and ``repair`` sets the
damaged lines aside (issue "a root of trust", row 2). No Triton is needed: every command refuses
before it would reach one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import tiny_project
from tritonkit.cli import main
from tritonkit.deploy.environment import DAMAGED, HISTORY
from tritonkit.errors import ServerError, VerifyError
from tritonkit.serve.endpoints import free_port

GOOD = {
    "env": "local", "action": "promote", "from_release": None, "to_release": "v1", "from_digest": None,
    "to_digest": "sha256:" + "0" * 64, "user": "ci", "at": "2026-12-06T10:00:00Z", "outcome": "ok", "step": "a",
}  # fmt: skip


@pytest.fixture()
def spec(tmp_path: Path) -> Path:
    path = tiny_project(tmp_path / "project")
    runner = CliRunner()
    assert runner.invoke(main, ["build", "-f", str(path)]).exit_code == 0
    assert runner.invoke(main, ["release", "-f", str(path)]).exit_code == 0
    return path


@pytest.mark.parametrize(
    "damage",
    [
        b'{"env": "local", "action": "prom',  # torn: the process died mid-write
        json.dumps({**GOOD, "approved_by": "mallory"}).encode(),  # an unknown key
        b"[1, 2]",  # valid JSON, not an entry
        b"\xff\xfe not even text",
    ],
    ids=["torn", "unknown-key", "not-an-object", "binary"],
)
def test_a_damaged_history_is_one_line_and_its_own_exit_code_then_repair_sets_it_aside(
    spec: Path, damage: bytes
) -> None:
    env = spec.parent / "releases" / "envs" / "local"
    env.mkdir(parents=True)
    (env / HISTORY).write_bytes(json.dumps(GOOD).encode() + b"\n" + damage + b"\n")
    url = f"127.0.0.1:{free_port()}"  # nothing listens: no command may get as far as Triton
    runner = CliRunner()
    for args in (["status"], ["promote", "v1"], ["rollback"]):
        result = runner.invoke(main, [*args, "--env", "local", "--url", url, "-f", str(spec), "--json"])
        assert result.exit_code == VerifyError.exit_code, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
        document = json.loads(result.stdout)
        assert f"{HISTORY}: line 2 is damaged" in document["error"], document
        assert "tritonkit repair --env local" in document["hint"]

    repaired = runner.invoke(main, ["repair", "--env", "local", "--url", url, "-f", str(spec)])
    # The record is mended first; then repair says it cannot reach Triton (exit 5), as it would.
    assert repaired.exit_code == ServerError.exit_code and "cannot reach" in repaired.output, repaired.output
    assert (env / DAMAGED).read_bytes() == damage + b"\n"  # kept for a person to read
    assert [json.loads(line) for line in (env / HISTORY).read_text().splitlines()] == [GOOD]
    status = runner.invoke(main, ["status", "--env", "local", "--url", url, "-f", str(spec), "--json"])
    assert status.exit_code != VerifyError.exit_code, status.output
    assert json.loads(status.stdout)["history"][0]["to_release"] == "v1"


def test_a_second_serve_of_the_same_live_repository_is_refused_naming_the_first(spec: Path) -> None:
    """Two ``serve --env local`` on one live/ would each load half of every promotion (issue
    "a root of trust", row 9): the second is refused before it starts a Triton."""
    from tests.helpers import port_flags
    from tritonkit.deploy.local import LocalEnvironment
    from tritonkit.release.store import ReleaseStore
    from tritonkit.serve.endpoints import Endpoints

    first = LocalEnvironment(ReleaseStore(spec.parent / "releases"), url="127.0.0.1:18000")
    first.claim_serving()  # what the first serve holds while it runs
    result = CliRunner().invoke(main, ["serve", "--env", "local", "-f", str(spec), *port_flags(Endpoints.allocate())])
    assert result.exit_code == 10, result.output
    assert f"local is already served (pid {__import__('os').getpid()} at 127.0.0.1:18000 (metrics " in result.output
    first.release_serving()  # as when the first serve ends
    again = LocalEnvironment(ReleaseStore(spec.parent / "releases"))
    again.claim_serving()
    again.release_serving()
