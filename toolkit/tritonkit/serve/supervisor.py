"""Keep a served Triton up: restart a crashed ``tritonserver`` on the same ports, bounded.

Triton 2.51 (the embedded server) aborts on some requests it should refuse — an HTTP/JSON input
whose shape claims 2^32 rows allocates before it checks the data (``std::bad_alloc``, SIGABRT);
upstream fixed that after 2.51 (triton-inference-server/server#8676 checks JSON input sizes
before allocating, #8182 element-count overflows, #8432 oversized JSON). Until the server in use
has those fixes, :func:`supervise` watches the process and, when it dies without being asked to,
reports the crash (exit status and Triton's last error line), keeps the crash log beside the new
one, runs ``before_restart`` (``serve --env local`` finishes an interrupted promotion there) and
starts the server again on the same ports with its models loaded. More than ``max_restarts``
crashes within ``window`` seconds stop supervision with a :class:`~tritonkit.errors.ServerError`:
a server that crashes at start or on every request is not restarted forever.

Events (stage ``serve``, subject ``tritonserver``) carry ``data={"exit": code, "downtime_s": s}``;
downtime runs from the moment the crash is seen to the restarted server being ready.

Example:
    >>> stop = threading.Event()
    >>> supervise(server, stop, progress=print)   # returns when stop is set
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tritonkit.errors import ServerError
from tritonkit.events import Event, Progress, emit
from tritonkit.serve.server import Crashed, TritonServer, crash_line, describe_exit, exit_reason


def supervise(
    server: TritonServer,
    stop: threading.Event,
    *,
    max_restarts: int = 5,
    window: float = 600.0,
    before_restart: Callable[[], None] | None = None,
    progress: Progress | None = None,
    poll: float = 0.2,
    crashes: list[float] | None = None,
) -> int:
    """Watch ``server`` until ``stop`` is set, restarting it when it dies; returns the restart count.

    Args:
        server: a started server.
        stop: set to end supervision (the caller then stops the server).
        max_restarts: crashes tolerated within ``window`` seconds; 0 never restarts.
        window: seconds over which crashes are counted.
        before_restart: called after the crashed process is reaped, before the new one starts.
        progress: receives one event per crash and one per restart.
        poll: seconds between checks of the process.
        crashes: crash times (monotonic) already counted, e.g. while the first start loaded models.

    Raises:
        ServerError: too many crashes in the window, or the restart itself failed (the server is
            stopped).
    """
    crashes = list(crashes or [])
    restarts = 0
    while not stop.wait(poll):
        code = server.exit_code()
        if code is None:
            continue
        seen = time.monotonic()
        reason = _crash_reason(server.log_file) or exit_reason(server.log_text())
        crash_log = _keep_log(server.log_file, len(crashes) + 1)
        server.stop(timeout=2.0)  # reaps it and kills what is left of its session (the stubs)
        crashes = [t for t in crashes if seen - t < window] + [seen]
        if len(crashes) > max_restarts:
            raise ServerError(
                f"tritonserver {describe_exit(code)} ({reason}); "
                f"{len(crashes)} crashes in {window:.0f}s, not restarting",
                hint=f"crash log: {crash_log}",
            )
        emit(
            progress,
            Event(
                "serve",
                "tritonserver",
                f"tritonserver {describe_exit(code)} ({reason}); restarting ({len(crashes)}/{max_restarts}), "
                f"crash log: {crash_log}",
                data={"exit": code},
            ),
        )
        crashes = start_supervised(
            server, crashes, max_restarts=max_restarts, window=window, before=before_restart, progress=progress
        )
        restarts += 1
        downtime = time.monotonic() - seen
        emit(
            progress,
            Event(
                "serve",
                "tritonserver",
                f"restarted (pid {server.pid}) in {downtime:.1f}s",
                data={"exit": code, "downtime_s": downtime},
            ),
        )
    return restarts


def start_supervised(
    server: TritonServer,
    crashes: list[float],
    *,
    max_restarts: int,
    window: float = 600.0,
    before: Callable[[], None] | None = None,
    progress: Progress | None = None,
) -> list[float]:
    """Start ``server`` (with the watchdog), and start it again when it crashes while its models
    load — a crash like any other, counted with ``crashes`` (monotonic times) in ``window``.

    Returns:
        The crash times, the new ones included.

    Raises:
        ServerError: the start failed for another reason (a model that does not load, a port), or
            more than ``max_restarts`` crashes in the window (the server is stopped).
    """
    while True:
        if before is not None:
            before()
        try:
            with Watchdog(server):
                server.start()  # same endpoints; stops the process itself when it cannot start
            return crashes
        except Crashed as exc:
            seen = time.monotonic()
            crashes = [t for t in crashes if seen - t < window] + [seen]
            kept = _keep_log(server.log_file, len(crashes))
            if len(crashes) > max_restarts:
                raise ServerError(
                    f"{exc.message}; {len(crashes)} crashes in {window:.0f}s, not restarting",
                    hint=f"crash log: {kept}",
                ) from exc
            emit(progress, Event("serve", "tritonserver", f"{exc.message}; restarting ({len(crashes)}/{max_restarts}), "
                                 f"crash log: {kept}", data={"exit": exc.exit}))  # fmt: skip


class Watchdog:
    """While active, kill the rest of a dead tritonserver's session (its Python stubs) at once.

    The stubs are forked from tritonserver and inherit its sockets, so a client waiting on a
    request the server was handling when it died (a model load during start, say) sees no EOF
    until the stubs exit too: it would wait its whole network timeout (300 s for loads). Killing
    the session when the server dies turns that wait into an immediate connection error.
    """

    def __init__(self, server: TritonServer, poll: float = 0.2) -> None:
        self.server, self.poll = server, poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tritonserver-watchdog", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            pid = self.server.pid
            if pid is not None and self.server.exit_code() is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # the session outlives its leader; its id is the pid
                return

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _crash_reason(log_file: Path | None) -> str:
    """The abort line of a crashed Triton's log file (:func:`~tritonkit.serve.server.crash_line`)."""
    if log_file is None or not log_file.exists():
        return ""
    return crash_line(log_file.read_text(errors="replace"))


def _keep_log(log_file: Path | None, number: int) -> Path | None:
    """Move the crashed server's log aside (the restart would truncate it)."""
    if log_file is None or not log_file.exists():
        return log_file
    kept = log_file.with_name(f"{log_file.stem}.crash-{number}{log_file.suffix}")
    log_file.replace(kept)
    return kept
