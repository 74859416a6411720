"""Run a real Triton server on a built repository: the embedded one by default.

Which binary and which backends: :mod:`.binary` (the embedded ``tritonserver`` 2.51 and
tritonkit's Python-based ONNX Runtime backend by default).

The server runs in explicit model-control mode, binds 127.0.0.1 unless told otherwise, and
loads models one by one through the repository API so a failing model is reported with
Triton's own reason. This module is the process; what it serves is :mod:`.models`
(``server.models_api``: load, ready, drain), PyTriton's ``TritonServer`` / ``ModelManager`` split.

Process hygiene: ``tritonserver`` is started with ``PR_SET_PDEATHSIG`` = SIGKILL, so it dies
with the thread that started it even when that process is killed with SIGKILL (its Python stubs
notice their parent is gone and exit too). Before starting, each of the three ports is checked
against the kernel's socket tables: a port already listened on is reported with the process
holding it (a stale ``tritonserver`` is named as one). The server and its model stubs get a
scrubbed environment: see :func:`scrubbed_environment`.

Example:
    >>> with TritonServer(Path("dist/demo")) as server:
    ...     print(server.endpoints.http_url)
    http://127.0.0.1:8000
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from tritonkit.errors import ServerError
from tritonkit.serve.binary import (
    STUB_PYCACHE_ENV,
    cache_root,
    find_triton,
    own_libpython_dir,
    prepare_backends,
    stub_pycache,
)
from tritonkit.serve.endpoints import Endpoints
from tritonkit.serve.models import ModelManager, http_status, repository_models
from tritonkit.serve.process import (
    ALLOW_ENV,
    check_ports_free,
    die_with_parent,
    remove_orphan_regions,
    scrubbed_environment,
    shm_regions,
)

log = logging.getLogger(__name__)


AS_WRITTEN = "--disable-auto-complete-config"
"""Triton serves each config.pbtxt exactly as the build wrote it (and the lock hashed it).

With auto-complete on, a backend may fill in what a config leaves at its default (the onnxruntime
backend a ``max_batch_size``), and the Python backend starts one extra stub process per model, just to
ask ``model.py`` for changes, before the instance's own stub (``python_be.cc``
``ModelState::Create``: ``LaunchAutoCompleteStubProcess``). tritonkit's configs are complete, so the
extra stub only costs its imports: about 5 s of the 15 s an LLM model took to load here (torch and
transformers imported twice), and an onnxruntime import per ONNX model."""

DEFAULT_FLAGS = (
    "--allow-gpu-metrics=false",
    # request/queue latency summaries (p50…p999) for 'tritonkit check'; Triton >= 2.38 has them
    "--metrics-config=summary_latencies=true",
    "--exit-timeout-secs=10",
    "--strict-readiness=true",
    AS_WRITTEN,
)
"""What a server runs with besides its repository, model-control mode, addresses and ports."""


class TritonServer:
    """A ``tritonserver`` process on one repository, in explicit model-control mode.

    ``flags`` replace :data:`DEFAULT_FLAGS` (a simulation of a cluster's pod passes the flags the
    rendered ServingRuntime gives Triton, so it runs what the cluster would); ``extra_args`` are
    appended after everything.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        repository: Path,
        *,
        endpoints: Endpoints | None = None,
        triton_bin: str | Path | None = None,
        models: list[str] | None = None,
        log_file: Path | None = None,
        extra_args: list[str] | None = None,
        flags: Sequence[str] | None = None,
    ) -> None:
        self.repository = repository.resolve()
        self.flags = list(DEFAULT_FLAGS if flags is None else flags)
        self.endpoints = endpoints or Endpoints()
        self.binary = find_triton(triton_bin)
        self.models = models if models is not None else repository_models(self.repository)
        self.log_file = log_file
        self.extra_args = extra_args or []
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._given_log = log_file
        self._shm_before: set[str] = set()  # /dev/shm regions that existed before this server started

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def exit_code(self) -> int | None:
        """The process's exit code if it has exited on its own, else None (running or stopped)."""
        return self._process.poll() if self._process is not None else None

    def command(self) -> list[str]:
        """The exact command line (printed so a failure can be reproduced by hand)."""
        e = self.endpoints
        args = [
            str(self.binary.path),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--http-address={e.host}",
            f"--http-port={e.http_port}",
            f"--grpc-address={e.host}",
            f"--grpc-port={e.grpc_port}",
            f"--metrics-address={e.host}",
            f"--metrics-port={e.metrics_port}",
            *self.flags,
        ]
        if self.binary.embedded:
            args.append(f"--backend-directory={prepare_backends(self.binary)}")
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        """The server's (and so its model stubs') environment: ours, scrubbed of credentials."""
        env, _ = scrubbed_environment(os.environ, os.environ.get(ALLOW_ENV))
        # Honoured by tritonserver's own Python use; the Python backend stub ignores the environment
        # (sys.flags.ignore_environment == 1): the .pth hook gives it a bytecode cache of its own.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env[STUB_PYCACHE_ENV] = str(stub_pycache())
        if self.binary.embedded:
            assert self.binary.library_dir is not None
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (str(self.binary.library_dir), own_libpython_dir(), env.get("LD_LIBRARY_PATH", "")) if p
            )
            # The stub embeds the system libpython and ignores PYTHONPATH; it finds this
            # environment's packages by locating `python3` on PATH (how PyTriton does it).
            env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def start(self, timeout: float = 180.0) -> None:
        """Start the process, wait until live, load every model, wait until ready.

        On endpoints from :meth:`Endpoints.allocate`, a port another process took between the
        allocation and Triton's bind (a bind race) is retried on fresh ports, up to
        ``BIND_RETRIES`` times; endpoints a user chose are never changed.

        Raises:
            ServerError: if the process exits (with the line of Triton's output that says why),
                does not become live in time, or a model fails to load (with Triton's reason);
                the process is stopped first.
        """
        for attempt in range(BIND_RETRIES + 1):
            try:
                self._launch(timeout)
                return
            except _BindRace:
                if attempt == BIND_RETRIES:
                    raise
                log.info("a port was taken before Triton bound it: retrying on fresh ports")
                self.endpoints = Endpoints.allocate(self.endpoints.host)
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, timeout: float) -> None:
        check_ports_free(self.endpoints)
        log_file = self._given_log
        if log_file is None:  # named after the ports, which a retry changes
            runs = cache_root() / "runs"
            runs.mkdir(parents=True, exist_ok=True)
            log_file = runs / f"triton-{os.getpid()}-{self.endpoints.http_port}.log"
        self.log_file = log_file
        handle = log_file.open("wb")
        self._log_handle = handle
        log.info("starting: %s", " ".join(self.command()))
        self._shm_before = shm_regions()
        self._process = subprocess.Popen(
            self.command(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        live = False
        try:
            self._wait_live(timeout)
            live = True
            models = self.models_api
            for name in self.models:
                models.load(name)
            if not models.ready(self.models):
                raise ServerError("Triton reports not ready after loading every model", hint=f"see {self.log_file}")
        except ServerError as exc:
            died = self._process.poll() if live else None  # before stop(): did it die on its own?
            log_text = self.log_text()
            self.stop()
            if died is None:
                raise
            # Not the model's fault: the server died while it loaded (a request that aborts it,
            # an OOM kill). The load error would blame whatever model was loading then.
            reason = crash_line(log_text) or exit_reason(log_text)
            raise Crashed(
                f"tritonserver {describe_exit(died)} while loading models ({reason})",
                exit=died,
                hint=f"Triton's log: {self.log_file}",
            ) from exc
        except BaseException:
            self.stop()
            raise

    def _wait_live(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                reason = exit_reason(self.log_text())
                error = ServerError(
                    f"tritonserver exited with code {self._process.returncode}: {reason}",
                    hint=f"full log: {self.log_file}; reproduce: {' '.join(self.command())}",
                )
                if _BIND_FAILURE.search(reason) and self.endpoints.allocated:
                    raise _BindRace(error.message, hint=error.hint)  # start() retries on fresh ports
                check_ports_free(self.endpoints)  # taken meanwhile: name the holder, not just "exit 1"
                raise error
            if http_status(self.endpoints.http_url + "/v2/health/live") == 200:
                return
            time.sleep(0.1)
        raise ServerError(f"tritonserver not live after {timeout:.0f}s", hint=f"see {self.log_file}")

    @property
    def models_api(self) -> ModelManager:
        """The models of this server (load, ready, drain), at its current endpoints."""
        return ModelManager(self.endpoints, self.repository, log_hint=f"Triton's log: {self.log_file}")

    def drain(self, timeout: float = 30.0, poll: float = 0.2) -> list[str]:
        """:meth:`ModelManager.drain`, when the process is still running (else nothing to drain)."""
        if self._process is None or self._process.poll() is not None:
            return []
        return self.models_api.drain(timeout, poll)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop gracefully (SIGINT), then kill after ``timeout``. Returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # The Python stubs are in the same session; make sure none outlives the server.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        # A crashed or killed server leaves its stubs' shared memory behind: remove what appeared
        # while it ran and nothing maps any more (another server's regions are mapped: kept).
        leaked = remove_orphan_regions(shm_regions() - self._shm_before, session=process.pid)
        if leaked:
            log.info("removed %d shared-memory region(s) the stopped server left in /dev/shm", len(leaked))
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self._process = None
        return process.returncode

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_text(self) -> str:
        """What the server has written to its log so far ("" when there is none)."""
        if self.log_file is None or not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")


BIND_RETRIES = 3
"""How many times a server on allocated endpoints retries on fresh ports after losing a bind race."""

_BIND_FAILURE = re.compile(r"already in use|address in use|failed to bind|cannot bind", re.IGNORECASE)
# What Triton says when it cannot start, most telling first: a service that failed to start
# (ports), a bad flag or flag combination, then a server or model error.
_REASONS = (
    re.compile(r"failed to start \w+ service", re.IGNORECASE),
    re.compile(r"already in use|cannot listen", re.IGNORECASE),
    re.compile(r"unrecognized option|unexpected argument|invalid argument|requires an argument", re.IGNORECASE),
    re.compile(r"error: creating server|failed to load|failed to initialize", re.IGNORECASE),
)
_LOG_LINE = re.compile(r'^[EWI]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "?(.*?)"?\s*$')


class Crashed(ServerError):
    """tritonserver died on its own while it loaded models (not a model that failed to load)."""

    def __init__(self, message: str, *, exit: int, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.exit = exit


def describe_exit(code: int) -> str:
    """``-6`` -> ``"killed by SIGABRT"``; ``3`` -> ``"exit code 3"``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def crash_line(log: str) -> str:
    """The abort line of a crashed Triton's log ("terminate called after throwing … std::bad_alloc");
    the last error line before it is usually unrelated (a model's warm-up notice)."""
    marks = ("terminate called", "Signal (", "Segmentation fault", "Aborted")
    found = [line.strip() for line in log.splitlines() if line.strip().startswith(marks)]
    return found[0][:300] if found else ""


class _BindRace(ServerError):
    """Triton could not bind a port that was free when the endpoints were chosen."""


def exit_reason(log: str) -> str:
    """The line of a ``tritonserver`` log that says why it exited, without its log prefix.

    Triton prints its whole ``--help`` text (about 400 lines, many mentioning "error") before a
    bad flag combination's reason, and gRPC's own error lines before its "failed to start"
    line: the first line matching the most telling pattern wins (:data:`_REASONS`), then the
    last error line (``E…``), then the last line.
    """
    raw = [line for line in log.splitlines() if line.strip()]
    usage = next((n for n, line in enumerate(raw) if line.startswith("Usage: tritonserver")), None)
    if usage is not None:  # the help text (indented, under section headers) is no reason
        help_end = max((n for n, line in enumerate(raw) if n > usage and line[0].isspace()), default=usage)
        raw = raw[:usage] + raw[help_end + 1 :]
    lines = [line.strip() for line in raw]
    for pattern in _REASONS:
        found = [line for line in lines if pattern.search(line)]
        if found:
            return _message(found[-1])
    errors = [line for line in lines if line.startswith("E")]
    return _message((errors or lines or ["no output"])[-1])


def _message(line: str) -> str:
    match = _LOG_LINE.match(line)
    text = match.group(1) if match else line
    return text.split("tritonserver: ", 1)[-1][:300]  # a bad flag comes as "<binary path>: <why>"
