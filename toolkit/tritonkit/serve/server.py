"""Run a real Triton server on a built repository: the embedded one by default.

The ``nvidia-pytriton`` wheel ships ``tritonserver`` 2.51 with only the Python backend. To serve
``backend: "onnxruntime"`` models on it, :func:`prepare_backends` lays out a backend directory
holding the Python backend (with the stub for the running Python) and ``onnxruntime/model.py``,
tritonkit's Python-based ONNX Runtime backend. A ``tritonserver`` from PATH or ``--triton-bin``
(for example in an NGC image) is run with its own backends instead.

The server runs in explicit model-control mode, binds 127.0.0.1 unless told otherwise, and
loads models one by one through the repository API so a failing model is reported with
Triton's own reason.

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
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tritonkit.artifact.hashing import sha256_bytes
from tritonkit.errors import ServerError
from tritonkit.serve.endpoints import Endpoints
from tritonkit.serve.process import (
    ALLOW_ENV,
    check_ports_free,
    die_with_parent,
    remove_orphan_regions,
    scrubbed_environment,
    shm_regions,
)
from tritonkit.serve.repository_api import load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TritonBinary:
    """A ``tritonserver`` executable and what it needs to run."""

    path: Path
    embedded: bool
    library_dir: Path | None = None
    python_backend_dir: Path | None = None
    stubs_dir: Path | None = None


def find_triton(triton_bin: str | Path | None = None) -> TritonBinary:
    """Locate ``tritonserver``: ``triton_bin``, else the embedded one, else PATH.

    Raises:
        ServerError: when none is found.
    """
    if triton_bin is not None:
        path = Path(triton_bin)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ServerError(
                f"--triton-bin {path} is not an executable file", hint="point it at a tritonserver binary"
            )
        return TritonBinary(path=path, embedded=False)
    embedded = _embedded()
    if embedded is not None:
        return embedded
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonBinary(path=Path(on_path), embedded=False)
    raise ServerError(
        "no tritonserver found (embedded nor on PATH)",
        hint="pip install 'tritonkit[serve]' for the embedded CPU server, or pass --triton-bin",
    )


def _embedded() -> TritonBinary | None:
    try:
        dist = metadata.distribution("nvidia-pytriton")
    except metadata.PackageNotFoundError:
        return None
    site = Path(str(dist.locate_file("")))
    root = site / "pytriton" / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    return TritonBinary(
        path=binary,
        embedded=True,
        library_dir=site / "nvidia_pytriton.libs",
        python_backend_dir=root / "backends" / "python",
        stubs_dir=root / "python_backend_stubs",
    )


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/tritonkit`` (default ``~/.cache/tritonkit``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tritonkit"


# The Python backend stub runs its interpreter isolated (sys.flags.ignore_environment), so
# PYTHONDONTWRITEBYTECODE never reaches it: as root it wrote __pycache__/ into served repositories,
# and it read whatever .pyc it found there (an unchecked-hash .pyc runs whatever the source says)
# — and it imports a model before anything of ours runs. It does import `site`, which runs the
# .pth files of this environment's site-packages (the stub finds them through the `python3` on
# PATH). This one line turns bytecode off, and points the bytecode cache at a directory that never
# exists, in processes started with NO_BYTECODE_ENV=1 — Triton's stubs, which environment() marks
# — and does nothing anywhere else.
NO_BYTECODE_ENV = "TRITONKIT_STUB_NO_BYTECODE"
STUB_HOOK = "tritonkit-stub-no-bytecode.pth"
_STUB_HOOK_LINE = (
    "import os, sys; (setattr(sys, 'dont_write_bytecode', True), setattr(sys, 'pycache_prefix', "
    f"'/nonexistent/tritonkit-no-bytecode')) if os.environ.get('{NO_BYTECODE_ENV}') == '1' else None\n"
)


def install_stub_hook() -> bool:
    """Write :data:`STUB_HOOK` into this environment's site-packages (once; atomically).

    Returns:
        Whether the hook is in place (False where site-packages is not writable: the stub then
        writes bytecode as before, and verify refuses any it finds in a release).
    """
    target = Path(sysconfig.get_paths()["purelib"]) / STUB_HOOK
    try:
        if target.is_file() and target.read_text() == _STUB_HOOK_LINE:
            return True
        temp = target.with_name(f".{STUB_HOOK}.{os.getpid()}")
        temp.write_text(_STUB_HOOK_LINE)
        os.replace(temp, target)
        return True
    except OSError:
        log.warning("cannot write %s: Triton's Python stubs may write bytecode into served repositories", target)
        return False


def prepare_backends(binary: TritonBinary, root: Path | None = None) -> Path:
    """Lay out (once, atomically) the backend directory for the embedded server.

    Holds ``python/`` (libtriton_python.so, the utils module, the stub for this Python) and
    ``onnxruntime/model.py``. Keyed by the wheel version, the Python version and the
    backend source, so an upgrade of any of them gets a fresh directory.

    Raises:
        ServerError: when the wheel has no stub for the running Python.
    """
    assert binary.python_backend_dir is not None and binary.stubs_dir is not None
    install_stub_hook()  # the stubs this directory runs write and read no bytecode
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = binary.stubs_dir / py / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(
            f"the embedded Triton has no Python backend stub for Python {py}",
            hint=f"use one of: {', '.join(sorted(p.name for p in binary.stubs_dir.iterdir()))}",
        )
    ort_model = resources.files("tritonkit.python_backends").joinpath("onnxruntime/model.py").read_bytes()
    key = sha256_bytes(f"{metadata.version('nvidia-pytriton')}|{py}|".encode() + ort_model)[:16]
    target = (root or cache_root() / "backends") / key
    if (target / "python" / "triton_python_backend_stub").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".backends-", dir=target.parent))
    (temp / "python").mkdir()
    (temp / "onnxruntime").mkdir()
    # a copy, not a symlink: Triton refuses backend libraries that resolve outside their directory
    shutil.copy2(binary.python_backend_dir / "libtriton_python.so", temp / "python")
    shutil.copy2(binary.python_backend_dir / "triton_python_backend_utils.py", temp / "python")
    shutil.copy2(stub, temp / "python" / "triton_python_backend_stub")
    (temp / "onnxruntime" / "model.py").write_bytes(ort_model)
    try:
        os.rename(temp, target)
    except OSError:  # another process won the race; theirs is identical
        shutil.rmtree(temp, ignore_errors=True)
    return target


def repository_models(repository: Path) -> list[str]:
    """Names of the model directories (those with a config.pbtxt), ensembles after the models they run."""
    configs = sorted(repository.glob("*/config.pbtxt"))
    ensembles = {p.parent.name for p in configs if 'platform: "ensemble"' in p.read_text(errors="replace")}
    return sorted(p.parent.name for p in configs if p.parent.name not in ensembles) + sorted(ensembles)


DEFAULT_FLAGS = (
    "--allow-gpu-metrics=false",
    # request/queue latency summaries (p50…p999) for 'tritonkit check'; Triton >= 2.38 has them
    "--metrics-config=summary_latencies=true",
    "--exit-timeout-secs=10",
    "--strict-readiness=true",
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
        # (sys.flags.ignore_environment == 1): the .pth hook turns bytecode off inside it.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env[NO_BYTECODE_ENV] = "1"
        if self.binary.embedded:
            assert self.binary.library_dir is not None
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (str(self.binary.library_dir), _own_libpython_dir(), env.get("LD_LIBRARY_PATH", "")) if p
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
        try:
            self._wait_live(timeout)
            for name in self.models:
                self.load_model(name)
            if not self.ready():
                raise ServerError("Triton reports not ready after loading every model", hint=f"see {self.log_file}")
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
            if self._get("/v2/health/live") == 200:
                return
            time.sleep(0.1)
        raise ServerError(f"tritonserver not live after {timeout:.0f}s", hint=f"see {self.log_file}")

    def load_model(self, name: str, config: Mapping[str, Any] | str | None = None) -> None:
        """Load (or reload) a model, optionally with a config override (:mod:`.repository_api`).

        Raises:
            ServerError: with Triton's reason when the load fails.
        """
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.endpoints.http_url.removeprefix("http://"), network_timeout=300)
        try:
            load_model(client, name, config, hint=f"fix the model and rebuild; Triton's log: {self.log_file}")
        finally:
            client.close()

    def ready(self) -> bool:
        """Server ready and every model ready."""
        if self._get("/v2/health/ready") != 200:
            return False
        return all(self._get(f"/v2/models/{name}/ready") == 200 for name in self.models)

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

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.endpoints.http_url + path, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0


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


def _own_libpython_dir() -> str:
    """The directory of this interpreter's shared libpython, when it was built with one.

    The stub links ``libpython3.X.so.1.0``; the system's copy (Debian's) can be older than the
    interpreter whose extension modules the stub then imports — e.g. pyenv's ``_ssl`` needs
    symbols Debian 3.11.2 lacks, which breaks ``import transformers`` in an llm model. Loading
    the interpreter's own libpython keeps stub and extension modules from one build.
    """
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and soname and (Path(libdir) / soname).is_file():
        return libdir
    return ""
