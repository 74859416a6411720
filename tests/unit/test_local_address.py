"""Which Triton the local environment's commands talk to when no --url is given: the one the
running ``tritonkit serve --env local`` recorded in serve.lock, never a guess at port 8000 while
another server may be listening there."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from tritonkit.cli import main
from tritonkit.deploy.local import DEFAULT_URL, LocalEnvironment
from tritonkit.release.store import ReleaseStore

HOLDER = """
import sys, time
from pathlib import Path
from tritonkit.deploy.local import LocalEnvironment
from tritonkit.release.store import ReleaseStore
env = LocalEnvironment(ReleaseStore(Path(sys.argv[1])), url="127.0.0.1:18123", metrics_url="http://127.0.0.1:18125/metrics")
env.claim_serving()
print("claimed", flush=True)
time.sleep(60)
"""


def test_without_url_the_served_address_is_used_and_otherwise_the_default(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path / "releases")
    assert LocalEnvironment(store).url == DEFAULT_URL  # nothing serves it
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        env = LocalEnvironment(store)
        assert (env.url, env.metrics_url) == ("127.0.0.1:18123", "http://127.0.0.1:18125/metrics")
        assert LocalEnvironment(store, url="127.0.0.1:9").url == "127.0.0.1:9"  # --url wins
        shown = CliRunner().invoke(main, ["status", "--env", "local", "--store", str(store.root), "--json"])
        assert "127.0.0.1:18123 is not reachable" in shown.output, shown.output  # the served address, not :8000
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    deadline = time.monotonic() + 5
    while LocalEnvironment(store).url != DEFAULT_URL and time.monotonic() < deadline:  # the lock dies with it
        time.sleep(0.05)
    assert LocalEnvironment(store).url == DEFAULT_URL
