"""tritonkit tune against the real embedded Triton: reloads only, original config restored."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import copy_example
from tritonkit import BuildResult, Endpoints, TritonServer, build_repository, load_spec
from tritonkit.artifact.lock import read_lock
from tritonkit.cli import main
from tritonkit.errors import NotConfirmed, UsageError
from tritonkit.serve.endpoints import free_port


@pytest.fixture(scope="module")
def tune_server(demo_build: BuildResult) -> Iterator[TritonServer]:
    """A server of its own (tune reloads models), with only the classifier loaded."""
    endpoints = Endpoints.allocate()
    server = TritonServer(demo_build.path, endpoints=endpoints, models=["classifier"])
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def spec_copy(tmp_path: Path) -> Path:
    copy_example(tmp_path / "project")
    return tmp_path / "project" / "tritonkit.yaml"


def _config(server: TritonServer) -> dict:
    with urllib.request.urlopen(f"{server.endpoints.http_url}/v2/models/classifier/config", timeout=5) as response:
        return json.loads(response.read())


def _tune(spec: Path, server: TritonServer, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "tritonkit", "tune", "classifier", "-f", str(spec),
        "--url", server.endpoints.grpc_url, "--window", "0.5", *args,
    ]  # fmt: skip


def test_tune_reloads_without_restart_restores_and_writes_a_spec_that_builds(
    tune_server: TritonServer, spec_copy: Path, tmp_path: Path, demo_build: BuildResult
) -> None:
    pid, before, spec_before = tune_server.pid, _config(tune_server), spec_copy.read_text()
    report = tmp_path / "report"
    command = _tune(spec_copy, tune_server, "--p99-ms", "12", "--budget", "40s", "--max-points", "4")
    done = subprocess.run(
        [*command, "--yes", "--report", str(report), "--json"], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert tune_server.pid == pid and tune_server.exit_code() is None
    assert _config(tune_server) == before  # the original config serves again
    doc = json.loads(done.stdout)  # the table and the diff went to stderr
    measured = len(doc["points"])
    assert 2 <= measured <= 4 and f"{measured} points," in done.stderr
    assert any(s in done.stderr for s in ("chosen:", "was not confirmed when re-measured", "not confirmed:"))
    assert doc["best"] is not None or doc["not_confirmed"]  # no claim only when re-measuring withdrew it
    assert doc["best"] is None or doc["best"]["within_slo"]
    assert doc["report"]["png"] == str(report / "tune.png")
    assert (report / "tune.png").stat().st_size > 10_000
    page = (report / "tune.html").read_text()
    assert page.count("<tr><td>") == measured and "data:image/png;base64," in page

    if not doc["written"]:
        assert spec_copy.read_text() == spec_before
    else:  # the winner (or only the measured capacity) was written: it must build
        assert spec_copy.read_text() != spec_before and "+++" in doc["diff"]
        rebuilt = build_repository(load_spec(spec_copy), tmp_path / "dist", cache_dir=tmp_path / "cache")
        # the measured capacity is evidence in the spec and the lock (it changes no served file)
        capacity = read_lock(rebuilt.path).models["classifier"]["capacity"]
        assert capacity["rps"] > 0 and capacity["measured_on"]["meter"] == "perf_analyzer"
        if doc["best"]["settings"] != doc["original"]:  # new settings: a new repository
            assert rebuilt.digest != demo_build.digest, done.stderr


def test_ctrl_c_restores_the_original_config(tune_server: TritonServer, spec_copy: Path) -> None:
    pid, before = tune_server.pid, _config(tune_server)
    # at a fixed rate each settings is one point, so the first candidate is loaded after one
    # measurement (a throughput search first walks the original settings up in concurrency)
    command = _tune(spec_copy, tune_server, "--p99-ms", "40", "--rate", "50", "--budget", "5m")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 150
        while _config(tune_server) == before:  # wait until tune has loaded a candidate
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "tune never reloaded the model"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    assert "original config was loaded back" in err
    assert _config(tune_server) == before
    assert tune_server.pid == pid and tune_server.exit_code() is None


def test_an_impossible_budget_is_one_clear_error(tune_server: TritonServer, spec_copy: Path) -> None:
    before = _config(tune_server)
    done = subprocess.run(
        _tune(spec_copy, tune_server, "--p99-ms", "0.05"), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 7, done.stdout + done.stderr
    assert "a 0.05 ms budget cannot be met" in done.stderr and "hint: ask for a p99 budget of at least" in done.stderr
    assert _config(tune_server) == before


def test_without_a_terminal_or_yes_nothing_is_written_and_it_exits_not_confirmed(
    tune_server: TritonServer, spec_copy: Path, tmp_path: Path
) -> None:
    before = _config(tune_server)
    slow = json.loads(json.dumps(before))  # served with a 200 ms batching delay: over any 50 ms budget
    slow["dynamic_batching"]["max_queue_delay_microseconds"] = 200_000
    tune_server.models_api.load("classifier", slow)
    spec_before = spec_copy.read_text()
    try:
        # two points suffice: the slow original over budget, then no delay within it (a change to show)
        command = _tune(spec_copy, tune_server, "--p99-ms", "50", "--budget", "40s", "--max-points", "2")
        done = subprocess.run(
            [*command, "--report", str(tmp_path / "r")],
            stdin=subprocess.DEVNULL,  # as in CI: no terminal to confirm on
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        tune_server.models_api.load("classifier", before)
    assert done.returncode == NotConfirmed.exit_code, done.stdout + done.stderr
    assert "not changed: no terminal to confirm" in done.stderr and "hint: rerun with --yes" in done.stderr
    assert spec_copy.read_text() == spec_before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["clasifier", "--p99-ms", "10"], UsageError.exit_code, "did you mean 'classifier'?"),
        (["postprocess", "--p99-ms", "10"], 5, "model 'postprocess' is in the repository but not loaded"),
        (["classifier", "--p99-ms", "0"], UsageError.exit_code, "the p99 budget must be positive"),
        (["classifier", "--p99-ms", "10", "--budget", "soon"], UsageError.exit_code, "budget 'soon' is not a duration"),
        (
            ["classifier", "--p99-ms", "10", "--rate", "50", "--max-throughput"],
            UsageError.exit_code,
            "different objectives",
        ),
    ],
)
def test_bad_input(tune_server: TritonServer, spec_copy: Path, args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(main, ["tune", *args, "-f", str(spec_copy), "--url", tune_server.endpoints.grpc_url])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "hint:" in result.output and "Traceback" not in result.output


def test_unreachable_server(spec_copy: Path) -> None:
    port = free_port()
    args = ["tune", "classifier", "-f", str(spec_copy), "--p99-ms", "10", "--url", f"127.0.0.1:{port}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 5, result.output
    assert f"cannot reach Triton at 127.0.0.1:{port}" in result.output
