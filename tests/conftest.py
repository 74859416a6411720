"""Suite-wide guards: a run that executes no test, or only skips, fails instead of passing; and
Ctrl-C reaches the processes the tests start even when the run itself was started in the
background."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # A non-interactive shell starts `cmd &` with SIGINT ignored, and an ignored signal survives
    # exec: then `tritonkit serve` / `tune` started by the Ctrl-C tests would never see the
    # SIGINT they send (seen with `nohup bash .ci/run &`). A handled signal is reset to the
    # default at exec, so children get Python's KeyboardInterrupt again.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or exitstatus != 0:
        return
    if not reporter.stats.get("passed"):
        reporter.write_line("ERROR: no test passed (none collected, or all skipped) — failing the run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile`` with the measuring modules as one unit (tests/scheduling.py)."""
    if config.getoption("dist") != "loadfile":
        return None
    from tests.scheduling import ModuleScheduling

    return ModuleScheduling(config, log)  # type: ignore[arg-type]
