"""What every command module shares: the consoles, error rendering, and where a repository comes from.

Errors: a :class:`~tritonkit.errors.TritonkitError` becomes one ``error:`` line, one ``hint:``
line and the error's exit code (see :mod:`tritonkit.errors`); nothing else is printed. An
``OSError`` for a full disk, a read-only file system or a denied permission becomes a
:class:`~tritonkit.errors.StorageError` the same way; credentials in URLs are masked. With
``--json`` the same error is also the command's JSON document on stdout (:mod:`._output`).

Output that is not a terminal (a CI log, a pipe) is never cut at 80 columns: the consoles are
made wide enough for any table, so a column is never printed as ``-0.…``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.markup import escape

from tritonkit.cli import _output
from tritonkit.cli._output import configure_consoles, console, err_console
from tritonkit.errors import DependencyError, ServerError, StorageError, TritonkitError, mask_credentials

if TYPE_CHECKING:
    from tritonkit.release.store import ReleaseStore
    from tritonkit.release.trust import TrustPolicy

__all__ = [
    "Group",
    "console",
    "default_repository",
    "err_console",
    "open_env",
    "require_extra",
    "require_verified",
    "resolve_repository",
    "store_for",
]

# The import names each extra of pyproject.toml provides, checked before a command does any work.
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("pytriton",),  # nvidia-pytriton: the embedded tritonserver
    "report": ("matplotlib",),
    "k8s": ("kubernetes",),
    "torch": ("torch",),
    "llm": ("transformers",),
}


def require_extra(extra: str, purpose: str, *more: tuple[str, str]) -> None:
    """Refuse (exit 6) before any work when an extra a command needs is not installed.

    Finding a module is enough (nothing is imported), so the check costs milliseconds and a
    measurement never runs only to fail at its report. Every missing extra is named at once.

    Args:
        extra: the tritonkit extra, a key of :data:`EXTRAS`.
        purpose: what needs it, for the message (``"serving with the embedded Triton"``).
        more: further ``(extra, purpose)`` pairs the same command needs.

    Raises:
        DependencyError: naming what is missing and the exact ``pip install``.
    """
    import importlib.util

    missing: dict[str, str] = {}
    for name, why in ((extra, purpose), *more):
        modules = [module for module in EXTRAS[name] if importlib.util.find_spec(module) is None]
        if modules:
            missing[name] = f"{why} needs {', '.join(modules)}"
    if missing:
        raise DependencyError(
            f"{'; '.join(missing.values())}: not installed",
            hint=f"pip install 'tritonkit[{','.join(missing)}]'",
        )


class _ClosedPipeTolerant:
    """stdout for one command: when the reader goes away (``tritonkit status | head -1``), the rest
    of the output is dropped and the command runs to its end, so its exit code is its own (0, or
    e.g. 8 for a status that found differences) instead of click's silent 1. File descriptor 1
    is pointed at /dev/null then, so nothing fails again when Python flushes at exit."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._closed = False

    def write(self, text: str) -> int:
        if not self._closed:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, buffer …
        return getattr(self._stream, name)


class Group(click.Group):
    """The ``tritonkit`` group: renders errors (text or JSON) and prints ``--json`` documents."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["tritonkit.args"] = list(args)  # to answer a click usage error as JSON too
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        _output.reset()
        if not isinstance(sys.stdout, _ClosedPipeTolerant):
            sys.stdout = _ClosedPipeTolerant(sys.stdout)
        configure_consoles()
        try:
            result = super().invoke(ctx)
        except TritonkitError as exc:
            _fail(ctx, exc)
        except OSError as exc:  # a full disk, a read-only or forbidden path: one line, not a traceback
            storage = StorageError.from_os_error(exc)
            if storage is None:
                raise
            _fail(ctx, storage)
        except click.ClickException as exc:
            args = ctx.meta.get("tritonkit.args", [])
            if not _output.json_mode() and "--json" in args:
                _output.enable_json(next((a for a in args if not a.startswith("-")), "tritonkit"))
            _output.emit(exc)
            raise
        _output.emit()
        return result


def _fail(ctx: click.Context, exc: TritonkitError) -> NoReturn:
    # Messages are plain text: "pip install 'tritonkit[serve]'" must not read as markup. A URL's
    # credentials (oci://user:pass@…) are masked wherever they came from.
    message, hint = mask_credentials(exc.message), mask_credentials(exc.hint)
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[bold cyan]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)
    if ctx.meta.get("tritonkit.verbose") and exc.__cause__ is not None:
        cause = mask_credentials(repr(exc.__cause__))
        err_console.print(f"[dim]cause: {escape(cause)}[/]", highlight=False, soft_wrap=True)
    _output.emit(exc)
    sys.exit(exc.exit_code)


def require_verified(root: Path) -> None:
    """Refuse to serve or measure a repository that does not verify (exit 5, like a load failure)."""
    from tritonkit.build.verify import require_verified as check

    check(root, error=ServerError)


def resolve_repository(path: Path | None, spec_file: Path) -> Path:
    """PATH as given, a release name (``v3``) from the spec's release store, or the newest build."""
    if path is None:
        return default_repository(spec_file)
    if not path.exists() and str(path)[:1] == "v" and str(path)[1:].isdigit():
        from tritonkit.release.store import ReleaseStore, default_store, parse_release

        store = ReleaseStore(default_store(spec_file.resolve().parent), trust=trust_policy(spec_file))
        return store.path(parse_release(str(path)))
    return path


def default_repository(spec_file: Path) -> Path:
    """The newest build of the spec: ``dist/<name>`` here or beside the spec, whichever was built last."""
    from tritonkit.spec.loader import load_spec

    loaded = load_spec(spec_file)
    candidates = [c for c in (Path("dist") / loaded.spec.name, loaded.root / "dist" / loaded.spec.name) if c.exists()]
    if candidates:
        return max(candidates, key=lambda c: c.lstat().st_mtime)  # the alias is re-pointed by every build
    raise ServerError(
        f"no build of '{loaded.spec.name}' found in dist/",
        hint=f"run 'tritonkit build -f {spec_file}' first, or pass a PATH",
    )


def store_for(spec_file: Path, store: Path | None) -> ReleaseStore:
    """The store named by ``--store``, else the default for the spec's directory, under the
    trust policy of the spec and ``$TRITONKIT_TRUSTED_KEYS`` (:func:`trust_policy`)."""
    from tritonkit.release.store import ReleaseStore, default_store

    root = store if store is not None else default_store(spec_file.resolve().parent)
    return ReleaseStore(root, trust=trust_policy(spec_file))


def trust_policy(spec_file: Path | None, keys: tuple[Path, ...] = ()) -> TrustPolicy | None:
    """The keys that may sign releases: the spec's ``trust:`` (when the spec exists), ``keys``
    (``--trusted-key``) and ``$TRITONKIT_TRUSTED_KEYS``; None when none is listed."""
    from tritonkit.release.trust import policy_from

    listed, required = list(keys), True
    if spec_file is not None and spec_file.is_file():
        from tritonkit.spec.loader import load_spec

        loaded = load_spec(spec_file)
        if loaded.spec.trust is not None:
            listed += [loaded.root / key for key in loaded.spec.trust.keys]
            required = loaded.spec.trust.required or bool(keys)
    return policy_from(listed, required)


def open_env(spec_file: Path, store: Path | None, name: str, url: str | None, metrics_url: str | None = None) -> Any:
    """Environment ``name`` of the spec's release store (the spec is read when it exists: KServe
    environments are declared there; ``local`` needs none)."""
    from tritonkit.deploy import open_environment
    from tritonkit.spec.loader import load_spec

    spec = load_spec(spec_file).spec if spec_file.is_file() else None
    if spec is not None and name != "local":
        spec.environment(name)  # an unknown name is a usage error, whatever is installed
        require_extra("k8s", f"environment '{name}' (KServe)")
    return open_environment(store_for(spec_file, store), name, spec, url=url, metrics_url=metrics_url)
