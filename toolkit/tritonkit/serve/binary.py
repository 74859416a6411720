"""Which ``tritonserver`` runs, and the backend directory the embedded one runs with.

The ``nvidia-pytriton`` wheel ships ``tritonserver`` 2.51 with only the Python backend. To serve
``backend: "onnxruntime"`` models on it, :func:`prepare_backends` lays out a backend directory
holding the Python backend (with the stub for the running Python) and ``onnxruntime/model.py``,
tritonkit's Python-based ONNX Runtime backend. A ``tritonserver`` from PATH or ``--triton-bin``
(for example in an NGC image) is run with its own backends instead. :mod:`.server` runs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from tritonkit.artifact.hashing import sha256_bytes
from tritonkit.errors import ServerError

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
# PYTHONDONTWRITEBYTECODE and PYTHONPYCACHEPREFIX never reach it: as root it wrote __pycache__/
# into served repositories, and it read whatever .pyc it found there (an unchecked-hash .pyc runs
# whatever the source says) — and it imports a model before anything of ours runs. It does import
# `site`, which runs the .pth files of this environment's site-packages (the stub finds them
# through the `python3` on PATH). This one line points the stub's bytecode cache at the directory
# named by STUB_PYCACHE_ENV — which environment() sets for Triton's stubs, and nothing else does:
# with a prefix, Python reads and writes bytecode only under it, never in a __pycache__/ beside a
# source, so a served repository is neither written nor read for bytecode. The cache is the user's
# own (~/.cache/tritonkit/stub-pycache, mode 0700), beside the venv the stub imports from.
#
# The first hook pointed the prefix at a directory that never exists (no bytecode at all): every
# stub then compiled torch, transformers or onnxruntime from source at each start, about 5 s of
# the 10 s an LLM model took to load here.
STUB_PYCACHE_ENV = "TRITONKIT_STUB_PYCACHE"
STUB_HOOK = "tritonkit-stub-pycache.pth"
_STUB_HOOK_LINE = (
    f"import os, sys; _p = os.environ.get('{STUB_PYCACHE_ENV}'); "
    "setattr(sys, 'pycache_prefix', _p) if _p else None; del _p\n"
)
_OLD_HOOKS = ("tritonkit-stub-no-bytecode.pth",)


def stub_pycache() -> Path:
    """The stubs' bytecode cache (created, mode 0700): see :data:`STUB_PYCACHE_ENV`. Where it
    cannot be created the stubs still read no repository's bytecode; they compile at every start."""
    path = cache_root() / "stub-pycache"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        log.warning("cannot create %s (%s): Triton's Python stubs will compile their imports at every start", path, exc)
    return path


def install_stub_hook() -> bool:
    """Write :data:`STUB_HOOK` into this environment's site-packages (once; atomically).

    Returns:
        Whether the hook is in place (False where site-packages is not writable: the stub then
        writes bytecode as before, and verify refuses any it finds in a release).
    """
    target = Path(sysconfig.get_paths()["purelib"]) / STUB_HOOK
    for old in _OLD_HOOKS:
        with contextlib.suppress(OSError):
            (target.parent / old).unlink(missing_ok=True)
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
    install_stub_hook()  # the stubs this directory runs keep their bytecode outside any repository
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


def own_libpython_dir() -> str:
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
