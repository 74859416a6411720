"""Suite-wide guards: a run that executes no test, or only skips, fails instead of passing."""

from __future__ import annotations

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or exitstatus != 0:
        return
    if not reporter.stats.get("passed"):
        reporter.write_line("ERROR: no test passed (none collected, or all skipped) — failing the run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
