"""Chaos run of the local environment: promotions, kills and a malicious request under steady load.

Builds the example project into three releases (v1, v2 = another batching delay, v3 = v2 plus a
python model that fails in ``initialize``), starts ``tritonkit serve --env local`` as an operator
would, keeps two client threads sending unpinned requests to ``classifier``, and repeats, seeded:

* ``promote``   promote or roll back (v1, v2 or the broken v3) with the CLI: exit 0, 8 or 10;
* ``kill-promote``  the same, SIGKILLed after a random delay; then ``tritonkit status`` (which
  finishes or undoes the step) is timed as the recovery;
* ``kill-serve``  SIGKILL ``tritonkit serve`` (and the tritonserver it leaves behind, issue 17
  item 6), start it again: an announced restart, timed until a request is answered again;
* ``malicious``  the request that aborts Triton 2.51 (shape [4294967296, 4]): the supervisor
  restarts it — an announced restart, timed the same way;
* ``malicious-twice``  the aborting request, then another while the restarted server still loads
  its models: a crash like any other, so serve must restart again, not exit;
* ``sigterm``  SIGTERM to ``serve`` under load (it drains: requests in flight are answered, new
  ones refused), then start it again: requests in flight at the SIGTERM must not be cut;
* ``kill-publish``  (when Debian's docker-registry is installed) ``tritonkit publish`` SIGKILLed
  at a random moment, then run again to completion.

After every step it checks that what Triton serves (repository index: ``classifier``'s ready
version) equals what ``status`` says, and that ``status`` finds no difference. A request fails
"outside an announced restart" when it fails at any time other than between a kill-serve or
malicious step and the first answer after it. Prints: requests sent, failed, refused during
announced restarts, answered by a failed release (v3), cut by a SIGTERM (in flight when it came,
not answered), serve exits within the restart budget, inconsistent states, recovery time p50/max.

    .venv/bin/python benchmarks/chaos.py [--iterations 50] [--seed 17] [--minutes 40]
    .venv/bin/python benchmarks/chaos.py --steps sigterm,malicious-twice --iterations 10
    .venv/bin/python benchmarks/chaos.py --tamper   # the attacks on the store (benchmarks/tamper.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers: the example project copy the tests use

BROKEN = "class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('broken release')\n"
BROKEN_SPEC = """
  - name: validator
    kind: python
    path: models/validator
    max_batch_size: 8
    inputs:
      - {name: x, dtype: FP32, dims: [1]}
    outputs:
      - {name: y, dtype: FP32, dims: [1]}
"""
GOOD = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
BAD = {"inputs": [{"name": "features", "shape": [4294967296, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _post(url: str, body: dict[str, object], timeout: float = 10.0) -> tuple[int, dict[str, object] | str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")[:200]
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        return 0, str(exc)[:200]


class Load:
    """Steady unpinned traffic; each request is logged with its send and end times."""

    def __init__(self, url: str, threads: int = 2) -> None:
        self.url, self.stop = url, threading.Event()
        self.log: list[tuple[float, float, int, str]] = []  # start, end, status, version or error
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            status, body = _post(self.url, GOOD)
            answer = str(body.get("model_version")) if isinstance(body, dict) else str(body)
            with self.lock:
                self.log.append((start, time.monotonic(), status, answer))
            if status != 200:
                time.sleep(0.05)  # a down server answers instantly; do not spin

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


class Chaos:
    def __init__(self, project: Path, seed: int) -> None:
        self.project, self.spec = project, project / "tritonkit.yaml"
        self.random = random.Random(seed)
        self.ports = [self._port() for _ in range(3)]
        self.url = f"127.0.0.1:{self.ports[0]}"
        self.infer = f"http://{self.url}/v2/models/classifier/infer"
        self.serve: subprocess.Popen[bytes] | None = None
        self.serve_log = project / "serve.log"
        self.windows: list[list[float]] = []  # announced restarts: [start, end]
        self.recoveries: list[tuple[str, float]] = []
        self.first_answer: list[float] = []
        self.inconsistent: list[str] = []
        self.actions: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.registry: subprocess.Popen[bytes] | None = None
        self.registry_url = ""
        self.sigterms: list[float] = []  # when serve got SIGTERM (requests in flight then must finish)
        self.serve_exits: list[str] = []  # serve ending on its own within the restart budget

    @staticmethod
    def _port() -> int:
        from tritonkit.serve.endpoints import free_port

        return free_port()

    def cli(self, *args: str, timeout: float = 600) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "tritonkit", *args]
        return subprocess.Popen(command, cwd=self.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run_cli(self, *args: str) -> tuple[int, str]:
        process = self.cli(*args)
        out, err = process.communicate(timeout=900)
        return process.returncode, out + err

    # ---------------------------------------------------------------- serve

    def start_serve(self) -> None:
        ports = ["--http-port", str(self.ports[0]), "--grpc-port", str(self.ports[1])]
        ports += ["--metrics-port", str(self.ports[2])]
        with self.serve_log.open("ab") as log:
            self.serve = subprocess.Popen(
                [sys.executable, "-m", "tritonkit", "serve", "--env", "local", *ports],
                cwd=self.project,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 300
        while urllib_status(f"http://{self.url}/v2/health/ready") != 200:
            if self.serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start: see {self.serve_log}")
            time.sleep(0.2)

    def wait_answering(self, since: float, limit: float = 300) -> float:
        while _post(self.infer, GOOD, timeout=2)[0] != 200:
            if time.monotonic() - since > limit:
                raise SystemExit(f"not answering {limit:.0f}s after a restart: see {self.serve_log}")
            time.sleep(0.05)
        return time.monotonic() - since

    def wait_serving_record(self, since: float, limit: float = 300) -> float:
        """Seconds from ``since`` until Triton serves every model of the record again (a restart
        loads them one by one; the first answer comes before the last model is back)."""
        from tritonkit.deploy.local import LocalEnvironment
        from tritonkit.release.store import ReleaseStore

        env = LocalEnvironment(ReleaseStore(self.project / "releases"), url=self.url)
        while env.status().differences:
            if time.monotonic() - since > limit:
                break  # check() records it as an inconsistent state
            time.sleep(0.2)
        return time.monotonic() - since

    def tritonservers(self) -> list[int]:
        mark = f"--http-port={self.ports[0]}".encode()
        return [pid for pid, args in _processes() if mark in args]

    # ---------------------------------------------------------------- steps

    def step_promote(self, kill: bool) -> None:
        target = self.random.choice(["v1", "v2", "v3"])
        args: tuple[str, ...] = ("promote", target, "--env", "local", "--url", self.url)
        if self.random.random() < 0.25:
            args = ("rollback", "--env", "local", "--url", self.url)
            target = ""
        process = self.cli(*args)
        if kill:
            try:
                process.wait(timeout=self.random.uniform(0.5, 12.0))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
            process.wait()
            label = f"{args[0]} {target}".strip()
            self.outcomes[f"{label} killed" if process.returncode == -9 else f"{label} rc {process.returncode}"] += 1
            started = time.monotonic()
            code, output = self.run_cli("status", "--env", "local", "--url", self.url)
            self.recoveries.append(("kill-promote", time.monotonic() - started))
            if code != 0:  # 8: it found Triton differing from the record after recovering
                self.inconsistent.append(f"status after a killed promote exited {code}: {output[-300:]}")
            return
        out, err = process.communicate(timeout=900)
        self.outcomes[f"{args[0]} {target}".strip() + f" rc {process.returncode}"] += 1
        print(f"    {' '.join(args[:2])}: rc {process.returncode} {err.strip().splitlines()[0] if err.strip() else ''}")
        if process.returncode not in (0, 8, 10) or "Traceback" in err:
            self.inconsistent.append(f"{' '.join(args)} exited {process.returncode}: {err[-300:]}")

    def step_kill_serve(self) -> None:
        assert self.serve is not None
        children = self.tritonservers()
        started = time.monotonic()
        window = [started, float("inf")]
        self.windows.append(window)
        self.serve.send_signal(signal.SIGKILL)
        self.serve.wait()
        for pid in children:  # orphaned tritonserver (issue 17 item 6, another engineer's change)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        _wait_gone(children)
        self.start_serve()
        window[1] = started + self.wait_answering(started)
        self.first_answer.append(window[1] - started)
        self.recoveries.append(("kill-serve", self.wait_serving_record(started)))

    def step_malicious(self) -> None:
        started = time.monotonic()
        window = [started, float("inf")]
        self.windows.append(window)
        status, _ = _post(self.infer, BAD)
        self.outcomes[f"malicious http {status}"] += 1
        if status == 200:
            self.inconsistent.append("the malicious request was answered 200")
        window[1] = started + self.wait_answering(started)
        self.first_answer.append(window[1] - started)
        self.recoveries.append(("malicious", self.wait_serving_record(started)))

    def step_malicious_twice(self) -> None:
        """An aborting request, then another while the restarted server still loads its models:
        a crash like any other, restarted within the budget (serve must not exit)."""
        started = time.monotonic()
        window = [started, float("inf")]
        self.windows.append(window)
        first, _ = _post(self.infer, BAD)
        while _post(self.infer, GOOD, timeout=2)[0] != 200:  # classifier back: the rest still loading
            if self.serve is not None and self.serve.poll() is not None:
                break
            time.sleep(0.05)
        second, _ = _post(self.infer, BAD)
        self.outcomes[f"malicious-twice http {first}/{second}"] += 1
        window[1] = started + self.wait_answering(started)
        self.first_answer.append(window[1] - started)
        self.recoveries.append(("malicious-twice", self.wait_serving_record(started)))
        if self.serve is not None and self.serve.poll() is not None:
            self.serve_exits.append(f"serve exited {self.serve.returncode} after a crash while loading")
            self.start_serve()

    def step_sigterm(self) -> None:
        """SIGTERM under load: requests in flight then must be answered (drained), not cut."""
        assert self.serve is not None
        sigterm = time.monotonic()
        window = [sigterm, float("inf")]
        self.windows.append(window)
        self.sigterms.append(sigterm)
        self.serve.send_signal(signal.SIGTERM)
        code = self.serve.wait(timeout=120)
        self.outcomes[f"sigterm: serve exit {code}"] += 1
        self.start_serve()
        window[1] = sigterm + self.wait_answering(sigterm)
        self.recoveries.append(("sigterm", self.wait_serving_record(sigterm)))

    def step_kill_publish(self) -> None:
        number = self.random.choice([1, 2])
        target = f"oci://{self.registry_url}/demo:v{number}"
        process = self.cli("publish", f"v{number}", target)
        try:
            process.wait(timeout=self.random.uniform(0.2, 4.0))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        process.wait()
        started = time.monotonic()
        code, output = self.run_cli("publish", f"v{number}", target)
        self.recoveries.append(("kill-publish", time.monotonic() - started))
        self.outcomes[f"publish rerun rc {code}"] += 1
        if code != 0:
            self.inconsistent.append(f"publish after a kill exited {code}: {output[-300:]}")

    def check(self, after: str) -> None:
        """What Triton serves equals what status says, and status sees no difference."""
        from tritonkit.deploy.local import LocalEnvironment
        from tritonkit.release.store import ReleaseStore

        env = LocalEnvironment(ReleaseStore(self.project / "releases"), url=self.url)
        state = env.status()
        served = _ready_versions(self.url).get("classifier", set())
        expected = {str(state.current.number)} if state.current else set()
        if state.differences or served != expected:
            self.inconsistent.append(f"after {after}: Triton {served} vs status {expected}: {state.differences}")

    def start_registry(self) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            return
        port = self._port()
        config = self.project / "registry.yml"
        config.write_text(
            f"version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {self.project / 'oci'}}}}}\n"
            f"http: {{addr: '127.0.0.1:{port}'}}\n"
        )
        # its log shows every HEAD of a blob not uploaded yet as an error: normal for a push, noise here
        self.registry = subprocess.Popen(
            [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.registry_url = f"127.0.0.1:{port}"
        while urllib_status(f"http://{self.registry_url}/v2/") != 200:
            time.sleep(0.1)


def urllib_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


def _ready_versions(url: str) -> dict[str, set[str]]:
    request = urllib.request.Request(f"http://{url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        index = json.loads(response.read())
    served: dict[str, set[str]] = {}
    for item in index:
        if item.get("state") == "READY":
            served.setdefault(item["name"], set()).add(str(item.get("version")))
    return served


def _processes() -> list[tuple[int, list[bytes]]]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                found.append((int(proc.name), (proc / "cmdline").read_bytes().split(b"\0")))
    return found


def _wait_gone(pids: list[int], limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def prepare(base: Path) -> Path:
    """The example project with releases v1, v2 and the broken v3."""
    from tests.helpers import copy_example

    from tritonkit import build_repository, load_spec
    from tritonkit.release.store import ReleaseStore

    project = copy_example(base / "project")
    spec, cache = project / "tritonkit.yaml", base / "cache"
    store = ReleaseStore(project / "releases")

    def release() -> None:
        store.create(build_repository(load_spec(spec), project / "dist", cache_dir=cache).path)

    release()
    spec.write_text(spec.read_text().replace("max_queue_delay_microseconds: 2000", "max_queue_delay_microseconds: 700"))
    release()
    (project / "models" / "validator").mkdir()
    (project / "models" / "validator" / "model.py").write_text(BROKEN)
    spec.write_text(spec.read_text() + BROKEN_SPEC)
    release()
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--minutes", type=float, default=40.0, help="stop starting new iterations after this")
    parser.add_argument(
        "--steps", default="", help="only these actions, comma-separated (e.g. sigterm,malicious-twice)"
    )
    parser.add_argument(
        "--tamper", action="store_true", help="run the tamper attacks instead (benchmarks/tamper.py) and report them"
    )
    args = parser.parse_args()
    if args.tamper:
        from benchmarks.tamper import run

        run()
        return
    with tempfile.TemporaryDirectory(prefix="tritonkit-chaos-") as scratch:
        print("building v1, v2 and the broken v3 …", flush=True)
        chaos = Chaos(prepare(Path(scratch)), args.seed)
        chaos.start_registry()
        chaos.start_serve()
        code, output = chaos.run_cli("promote", "v1", "--env", "local", "--url", chaos.url)
        if code != 0:
            raise SystemExit(output)
        load = Load(chaos.infer)
        load.start()
        steps = ["promote", "kill-promote", "kill-serve", "malicious", "malicious-twice", "sigterm"]
        weights = [4, 3, 1, 1, 1, 1]
        if chaos.registry:
            steps, weights = [*steps, "kill-publish"], [*weights, 1]
        if args.steps:
            chosen = [step.strip() for step in args.steps.split(",")]
            unknown = sorted(set(chosen) - set(steps))
            if unknown:
                raise SystemExit(f"unknown steps {unknown}; known: {', '.join(steps)}")
            weights = [w for step, w in zip(steps, weights, strict=True) if step in chosen]
            steps = [step for step in steps if step in chosen]
        began = time.monotonic()
        done = 0
        try:
            for i in range(args.iterations):
                if time.monotonic() - began > args.minutes * 60:
                    break
                action = chaos.random.choices(steps, weights)[0]
                chaos.actions[action] += 1
                print(f"[{i + 1}/{args.iterations}] {action}", flush=True)
                if action in ("promote", "kill-promote"):
                    chaos.step_promote(kill=action == "kill-promote")
                elif action == "kill-serve":
                    chaos.step_kill_serve()
                elif action == "malicious":
                    chaos.step_malicious()
                elif action == "malicious-twice":
                    chaos.step_malicious_twice()
                elif action == "sigterm":
                    chaos.step_sigterm()
                else:
                    chaos.step_kill_publish()
                chaos.check(action)
                done += 1
        finally:
            load.finish()
            if chaos.serve is not None and chaos.serve.poll() is None:
                chaos.serve.send_signal(signal.SIGTERM)
                chaos.serve.wait(timeout=60)
            if chaos.registry is not None:
                chaos.registry.terminate()
                chaos.registry.wait(timeout=10)
        report(chaos, load, done, args, time.monotonic() - began)


def report(chaos: Chaos, load: Load, done: int, args: argparse.Namespace, elapsed: float) -> None:
    def announced(start: float, end: float) -> bool:
        return any(start <= w[1] + 0.5 and end >= w[0] - 0.5 for w in chaos.windows)

    failed = [entry for entry in load.log if entry[2] != 200 and not announced(entry[0], entry[1])]
    refused = [entry for entry in load.log if entry[2] != 200 and announced(entry[0], entry[1])]
    by_failed_release = [entry for entry in load.log if entry[2] == 200 and entry[3] == "3"]
    cut = [e for e in load.log if e[2] != 200 and any(e[0] < t < e[1] for t in chaos.sigterms)]
    times = [seconds for _, seconds in chaos.recoveries]
    print()
    print(f"chaos: {done} iterations (seed {args.seed}) in {elapsed / 60:.1f} min; actions {dict(chaos.actions)}")
    print(f"outcomes: {dict(sorted(chaos.outcomes.items()))}")
    print(f"requests sent:                         {len(load.log)}")
    print(f"requests failed (outside restarts):    {len(failed)}")
    print(f"requests refused in announced restarts: {len(refused)} ({len(chaos.windows)} restarts)")
    print(f"answered by a failed release (v3):     {len(by_failed_release)}")
    print(f"requests cut by SIGTERM:               {len(cut)} ({len(chaos.sigterms)} SIGTERMs under load)")
    print(f"serve exits within the restart budget: {len(chaos.serve_exits)}")
    print(f"inconsistent states found:             {len(chaos.inconsistent)}")
    if times:
        print(f"recovery time p50 / max:               {statistics.median(times):.2f} s / {max(times):.2f} s")
        for kind in sorted({k for k, _ in chaos.recoveries}):
            mine = [s for k, s in chaos.recoveries if k == kind]
            print(f"  {kind:<14} n={len(mine):<3} p50 {statistics.median(mine):.2f} s  max {max(mine):.2f} s")
    if chaos.first_answer:
        first = chaos.first_answer
        print(f"  first answer after a restart: p50 {statistics.median(first):.2f} s  max {max(first):.2f} s")
    for line in chaos.inconsistent[:10]:
        print(f"  inconsistent: {line}")
    for entry in failed[:5]:
        print(f"  failed request: http {entry[2]} {entry[3]}")


if __name__ == "__main__":
    main()
