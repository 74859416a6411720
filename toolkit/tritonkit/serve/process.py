"""What a child server process gets and checks before it starts: a scrubbed environment, free
ports (or the name of whoever holds them), and death with its parent.

A ``tritonserver`` outliving a ``kill -9`` of its parent kept the ports, so the next start failed
with only "exited with code 1"; the embedded server also inherited registry credentials into
every model stub. :class:`~tritonkit.serve.server.TritonServer` uses all three.

Example:
    >>> env, dropped = scrubbed_environment({"HF_TOKEN": "x", "PATH": "/bin"})
    >>> dropped
    ['HF_TOKEN']
    >>> check_ports_free(Endpoints())  # ServerError naming pid and command when 8000-8002 are taken
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tritonkit.errors import ServerError

if TYPE_CHECKING:
    from tritonkit.serve.endpoints import Endpoints


# Names of variables that carry credentials: never handed to tritonserver or its model stubs
# (a model's code has no business with the registry or cluster credentials of whoever serves it).
_CREDENTIAL_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|CREDENTIAL|(^|_)(TOKEN|AUTH|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|SESSION_?KEY|SIGNING_?KEY)(_|$)"
)
_CREDENTIAL_FILES = frozenset({"TRITONKIT_REGISTRY_USERNAME", "DOCKER_CONFIG", "DOCKER_AUTH_CONFIG", "KUBECONFIG"})


ALLOW_ENV = "TRITONKIT_SERVER_ENV"
# What a server needs whatever the allow-list says (tritonkit sets PATH and LD_LIBRARY_PATH itself).
_ALWAYS = ("PATH", "LD_LIBRARY_PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def scrubbed_environment(environ: Mapping[str, str], allow: str | None = None) -> tuple[dict[str, str], list[str]]:
    """``environ`` for a child server, in one of two modes.

    The scrub works on variable **names** only: a secret in a variable with an ordinary name
    (``MY_CONFIG=…password…``) is not recognised. Where that matters, the allow-list mode
    (``allow``, from ``$TRITONKIT_SERVER_ENV``: names or shell patterns separated by commas, e.g.
    ``OMP_*,CUDA_VISIBLE_DEVICES``) passes only the variables it names, plus PATH,
    LD_LIBRARY_PATH, HOME, LANG, LC_ALL, TMPDIR and TZ — and still never a credential name.

    Default mode: ``environ`` without credentials: names containing PASSWORD, PASSWD, SECRET or CREDENTIAL;
    names with a TOKEN, AUTH, API_KEY, ACCESS_KEY, PRIVATE_KEY, SESSION_KEY or SIGNING_KEY part (``HF_TOKEN``,
    ``AWS_ACCESS_KEY_ID``, not ``TOKENIZERS_PARALLELISM``); and the registry user and the files
    that hold credentials (``TRITONKIT_REGISTRY_USERNAME``, ``DOCKER_CONFIG``,
    ``DOCKER_AUTH_CONFIG``, ``KUBECONFIG``).

    Returns:
        The kept variables and the sorted names dropped (names only, never values).
    """
    patterns = [p.strip() for p in (allow or "").split(",") if p.strip()]

    def kept(name: str) -> bool:
        if name.upper() in _CREDENTIAL_FILES or _CREDENTIAL_NAME.search(name.upper()):
            return False
        return not patterns or name in _ALWAYS or any(fnmatch.fnmatchcase(name, p) for p in patterns)

    dropped = sorted(n for n in environ if not kept(n))
    return {k: v for k, v in environ.items() if k not in dropped}, dropped


def port_owner(port: int) -> tuple[int, str] | None:
    """``(pid, command line)`` of the process listening on TCP ``port`` (any address), from
    ``/proc/net/tcp{,6}`` and ``/proc/*/fd``; ``(0, "")`` when a listener exists but its process
    is not visible to us; None when nothing listens (or there is no /proc).
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local_address is HEXIP:HEXPORT; state 0A is LISTEN
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    sockets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in sockets:
                        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                        return int(proc.name), command.strip()
    return 0, ""


def check_ports_free(endpoints: Endpoints) -> None:
    """Refuse to start on a port something already listens on, naming the port and its holder.

    Raises:
        ServerError: the first busy port, with the pid and command holding it when visible.
    """
    for label, port in (
        ("HTTP", endpoints.http_port),
        ("gRPC", endpoints.grpc_port),
        ("metrics", endpoints.metrics_port),
    ):
        owner = port_owner(port)
        if owner is None:
            continue
        pid, command = owner
        if not pid:
            raise ServerError(
                f"{label} port {port} is already in use (by a process this user cannot see)",
                hint="stop that process or choose other ports",
            )
        triton = "tritonserver" in command.split(" ", 1)[0]
        raise ServerError(
            f"{label} port {port} is already in use by {'a tritonserver' if triton else 'another process'}: "
            f"pid {pid} ({command[:160]})",
            hint=("a server left from an earlier run, or another one serving: " if triton else "")
            + f"stop it ('kill {pid}') or choose other ports",
        )


SHM_DIR = Path("/dev/shm")
_SHM_REGION = re.compile(r"^triton_\w+_shm_region_")


def shm_regions() -> set[str]:
    """Names of the Python backend stubs' shared-memory regions now in ``/dev/shm``
    (``triton_<backend>_backend_shm_region_<uuid>``, 1 MB and more each)."""
    with contextlib.suppress(OSError):
        return {p.name for p in SHM_DIR.iterdir() if _SHM_REGION.match(p.name)}
    return set()


def remove_orphan_regions(names: set[str], *, session: int | None = None, settle_s: float = 2.0) -> list[str]:
    """Remove those of ``names`` that no live process maps any more; returns what was removed.

    A Triton that exits cleanly removes its stubs' regions; one that crashed or was killed
    leaves them in ``/dev/shm`` (about 1 MB per stub, every time). ``names`` are the regions that
    appeared while one server ran. A region a process of another session maps (a server started
    beside it) is kept at once; a region is removed only when no process maps it in two looks
    0.2 s apart (one just created by another server is mapped by then); one still mapped by the
    stopped server's own ``session`` (its killed stubs, dying) is waited for, up to ``settle_s``.
    """
    removed: list[str] = []
    deadline = time.monotonic() + settle_s
    pending, unmapped_before = set(names), set[str]()
    while pending:
        mapped = _mapped_regions()
        unmapped: set[str] = set()
        for name in sorted(pending):
            sessions = mapped.get(name, set())
            if sessions - {session}:
                pending.discard(name)  # another server's: not ours to remove
            elif not sessions:
                unmapped.add(name)
        for name in sorted(unmapped & unmapped_before):  # unmapped in two passes 0.2 s apart
            with contextlib.suppress(OSError):
                (SHM_DIR / name).unlink()
                removed.append(name)
            pending.discard(name)
        unmapped_before = unmapped
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    return removed


def _mapped_regions() -> dict[str, set[int]]:
    """The shared-memory regions live processes map, each with the sessions of those processes
    (from ``/proc/*/maps`` and ``/proc/*/stat``)."""
    mapped: dict[str, set[int]] = {}
    prefix = f"{SHM_DIR}/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            names = {
                line[line.find(prefix) + len(prefix) :].split(" ", 1)[0]
                for line in (proc / "maps").read_text(errors="replace").splitlines()
                if prefix in line
            }
            if names:
                session = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3])
                for name in names:
                    mapped.setdefault(name, set()).add(session)
    return mapped


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for a child of this thread: the kernel SIGKILLs the child when the thread
    that forked it exits (``PR_SET_PDEATHSIG``), and a child whose parent is already gone exits at
    once. Start servers from a thread that lives as long as they should (the main thread)."""
    parent = os.getpid()

    def preexec() -> None:  # between fork and exec: no allocation-heavy work, no locks
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


_PR_SET_PDEATHSIG = 1
try:  # loaded once, before any fork (Linux only; elsewhere the server just outlives a killed parent)
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _LIBC = None
