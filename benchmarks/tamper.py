"""Tamper attacks on the release store, and how many requests the attacker's content answered.

Run by ``benchmarks/chaos.py --tamper`` (or alone). Each attack gets a fresh copy of one project
(the example, releases v1 and v2 signed with a key the attacker does not hold), a ``tritonkit
serve --env local`` serving v1, and an attacker with write access to the store who replaces
``postprocess``'s labels with ``b"pwned"``. Then the operator does what operators do (promote v2,
or repair), and 50 requests to ``postprocess`` count the answers labelled ``pwned``:

* ``rewrite``    v2's model.py and its lock rewritten consistently, index.json and its backup
  deleted, ``releases --repair`` run; then ``promote v2``. Without and with a trust policy.
* ``bytecode``   an unchecked-hash ``.pyc`` of the attacker's model planted in v2's
  ``postprocess/2/__pycache__/`` (Python loads it without looking at the source); ``promote v2``.
* ``in-place``   v2 promoted, then ``live/postprocess/2/model.py`` edited in place (live/ shares
  the store's inodes), the model unloaded, ``repair`` run.

The target with a policy is 0 answered by the attacker for every row.

    .venv/bin/python benchmarks/tamper.py
"""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REQUEST = {"inputs": [{"name": "logits", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.7]}]}
PWNED = 'LABELS = np.array([b"pwned", b"pwned", b"pwned"], dtype=object)'


def _cli(project: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "tritonkit", *args], cwd=project, capture_output=True, text=True, timeout=900,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).strip()


def _labels(url: str, count: int = 50) -> tuple[int, int]:
    """(answered ``pwned``, failed) over ``count`` requests to postprocess."""
    pwned = failed = 0
    for _ in range(count):
        request = urllib.request.Request(
            f"http://{url}/v2/models/postprocess/infer", data=json.dumps(REQUEST).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                outputs = {o["name"]: o["data"] for o in json.loads(response.read())["outputs"]}
            pwned += outputs["label"] == ["pwned"]
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            failed += 1
    return pwned, failed


def prepare(base: Path) -> tuple[Path, Path]:
    """The example project with v1 and v2 (a comment changed in postprocess), both signed."""
    from tests.helpers import copy_example

    project = copy_example(base / "project")
    key = base / "keys" / "release.key"
    assert _cli(project, "keygen", str(key))[0] == 0
    for _ in range(2):
        for step in (("build",), ("release", "--sign-key", str(key))):
            code, output = _cli(project, *step)
            assert code == 0, output
        with (project / "models" / "postprocess" / "model.py").open("a") as handle:
            handle.write("# v2\n")
    return project, key.with_suffix(".pub")


class Served:
    """``tritonkit serve --env local`` on fresh ports for one attack."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        from tritonkit.serve.endpoints import Endpoints

        ports = Endpoints.allocate()
        self.url = f"127.0.0.1:{ports.http_port}"
        flags = ["--http-port", str(ports.http_port), "--grpc-port", str(ports.grpc_port)]
        flags += ["--metrics-port", str(ports.metrics_port)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tritonkit", "serve", "--env", "local", *flags], cwd=project,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env},
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("serve did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def _attacker_model(project: Path) -> bytes:
    source = (project / "models" / "postprocess" / "model.py").read_text()
    return source.replace('LABELS = np.array([b"setosa", b"versicolor", b"virginica"], dtype=object)', PWNED).encode()


def rewrite(project: Path, url: str, env: dict[str, str]) -> str:
    from tritonkit.artifact.hashing import LOCK_FILE
    from tritonkit.artifact.layout import make_writable
    from tritonkit.artifact.lock import read_lock, write_lock

    release = project / "releases" / "v2"
    make_writable(release)
    (release / "postprocess" / "2" / "model.py").write_bytes(_attacker_model(project))
    lock = read_lock(release)
    (release / LOCK_FILE).unlink()
    write_lock(release, lock.repository, lock.models, {})
    for name in ("index.json", "index.json.bak"):
        (project / "releases" / name).unlink()
    repaired = _cli(project, "releases", "--repair", env=env)[0]
    promoted = _cli(project, "promote", "v2", "--env", "local", "--url", url, env=env)[0]
    return f"repair rc {repaired}, promote rc {promoted}"


def bytecode(project: Path, url: str, env: dict[str, str]) -> str:
    from tritonkit.artifact.layout import make_writable

    release = project / "releases" / "v2" / "postprocess" / "2"
    make_writable(release)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "model.py"
        source.write_bytes(_attacker_model(project))
        tag = sys.implementation.cache_tag
        (release / "__pycache__").mkdir(exist_ok=True)
        py_compile.compile(
            str(source), cfile=str(release / "__pycache__" / f"model.{tag}.pyc"),
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )  # fmt: skip
    return f"promote rc {_cli(project, 'promote', 'v2', '--env', 'local', '--url', url, env=env)[0]}"


def in_place(project: Path, url: str, env: dict[str, str]) -> str:
    promoted = _cli(project, "promote", "v2", "--env", "local", "--url", url, env=env)[0]
    served = next((project / "releases" / "envs" / "local" / "live" / "postprocess").glob("*/model.py"))
    served.chmod(0o644)
    served.write_bytes(_attacker_model(project))
    urllib.request.urlopen(
        urllib.request.Request(f"http://{url}/v2/repository/models/postprocess/unload", data=b"{}", method="POST")
    ).close()
    repaired = _cli(project, "repair", "--env", "local", "--url", url, env=env)[0]
    return f"promote rc {promoted}, repair rc {repaired}"


ATTACKS = [("rewrite", rewrite, False), ("rewrite", rewrite, True), ("bytecode", bytecode, True),
           ("in-place", in_place, True)]  # fmt: skip


def run() -> list[tuple[str, bool, str, int, int]]:
    """Every attack on a fresh copy; prints and returns (attack, policy, outcome, pwned, failed)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="tritonkit-tamper-") as scratch:
        print("building the example twice (v1, v2), signed …", flush=True)
        pristine, public = prepare(Path(scratch) / "pristine")
        for index, (name, attack, policy) in enumerate(ATTACKS):
            project = Path(scratch) / f"attack-{index}" / "project"
            shutil.copytree(pristine.parent, project.parent, symlinks=True)
            env = {"TRITONKIT_TRUSTED_KEYS": str(public)} if policy else {}
            served = Served(project, env)
            try:
                assert _cli(project, "promote", "v1", "--env", "local", "--url", served.url, env=env)[0] == 0
                outcome = attack(project, served.url, env)
                pwned, failed = _labels(served.url)
            finally:
                served.stop()
            rows.append((name, policy, outcome, pwned, failed))
            print(f"  {name:<9} policy={'yes' if policy else 'no ':<3} {outcome:<28} pwned {pwned}/50", flush=True)
    print()
    print("| attack | trust policy | what the operator's commands did | answered by the attacker (of 50) | failed |")
    print("|---|---|---|---|---|")
    for name, policy, outcome, pwned, failed in rows:
        print(f"| {name} | {'yes' if policy else 'no'} | {outcome} | **{pwned}** | {failed} |")
    return rows


if __name__ == "__main__":
    run()
