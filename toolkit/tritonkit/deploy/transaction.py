"""A promotion as a transaction: one lock per environment and a journal written before any change.

Two files beside an environment's history::

    releases/envs/<name>/
      lock            flock()ed while a promotion, rollback, repair or recovery runs; holds who
                      (pid, user, since, what) so a second caller can say who it waits for
      journal.json    written (fsynced) before the first change of a promotion and removed after
                      its outcome is in the history; while it exists, a step is unfinished

The lock is an advisory ``flock`` on an open file, so the kernel drops it when its holder dies
(``kill -9`` included): a stale lock cannot outlive its process. The journal is the opposite: it
outlives a killed promotion on purpose, and the next command that opens the environment reads it
and finishes or undoes that step (:meth:`tritonkit.deploy.local.LocalEnvironment.recover`).

Example:
    >>> with EnvironmentLock(Path("releases/envs/local"), "promote v3", timeout=60):
    ...     Journal(Path("releases/envs/local")).begin({"action": "promote", "target": 3})
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tritonkit.errors import UsageError

LOCK = "lock"
JOURNAL = "journal.json"


@dataclass(frozen=True)
class Holder:
    """Who holds an environment's lock."""

    pid: int
    user: str
    since: str
    what: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.user}, since {self.since}: {self.what})"


class EnvironmentLock:
    """An exclusive, kill-safe lock on one environment (a ``flock`` on ``<root>/lock``).

    Args:
        root: the environment's directory.
        what: what the holder does ("promote v3"), shown to whoever waits.
        timeout: seconds to wait for another holder; 0 fails at once.
        user: the holder's user name, for the record.
    """

    def __init__(self, root: Path, what: str, *, timeout: float = 60.0, user: str = "") -> None:
        self.root, self.what, self.timeout, self.user = root, what, timeout, user
        self._handle: IO[str] | None = None

    def holder(self) -> Holder | None:
        """Who holds the lock right now, as they recorded it (None when unreadable or free)."""
        try:
            data = json.loads((self.root / LOCK).read_text() or "null")
            return Holder(**data) if isinstance(data, dict) else None
        except (OSError, ValueError, TypeError):
            return None

    def acquire(self) -> None:
        """Take the lock, waiting up to :attr:`timeout` seconds.

        Raises:
            UsageError: another process held it for the whole timeout (named with pid, user, since).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        # "a" rather than "w": opening must not truncate what the current holder wrote.
        handle = open(self.root / LOCK, "a+")  # noqa: SIM115 - kept open for the lock's lifetime
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    holder = self.holder()
                    who = holder.describe() if holder else "another process"
                    raise UsageError(
                        f"{self.root.name} is being changed by {who}; waited {self.timeout:.0f}s",
                        hint="wait for it to finish and try again (a killed holder releases the lock by itself)",
                    ) from None
                time.sleep(0.2)
        holder = Holder(os.getpid(), self.user, _now(), self.what)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(asdict(holder)))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Give the lock back (the holder note is cleared first)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
            handle.flush()
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()

    def __enter__(self) -> EnvironmentLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class Journal:
    """The record of an unfinished step, at ``<root>/journal.json`` (written atomically, fsynced).

    Holds what recovery needs: ``action``, ``target`` and ``previous`` (release numbers or None),
    the writer's ``pid``, ``started``, and ``steps`` (one line per change made so far, for the
    reader of a recovery report).
    """

    def __init__(self, root: Path) -> None:
        self.path = root / JOURNAL

    def read(self) -> dict[str, Any] | None:
        """The unfinished step, or None. A journal torn by a crash mid-write reads as ``{}``."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def begin(self, entry: dict[str, Any]) -> None:
        """Write the journal before the first change."""
        self._write({**entry, "pid": os.getpid(), "started": _now(), "steps": []})

    def step(self, text: str) -> None:
        """Add one done change to the journal."""
        data = self.read() or {}
        data.setdefault("steps", []).append(text)
        self._write(data)

    def clear(self) -> None:
        """The step's outcome is recorded: nothing left to recover."""
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{JOURNAL}.{os.getpid()}")
        with open(temp, "w") as handle:
            handle.write(json.dumps(data, sort_keys=True))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        _fsync_dir(self.path.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
