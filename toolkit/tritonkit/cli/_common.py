"""What every command module shares: the consoles, error rendering, and where a repository comes from.

Errors: a :class:`~tritonkit.errors.TritonkitError` becomes one ``error:`` line, one ``hint:``
line and the error's exit code (see :mod:`tritonkit.errors`); nothing else is printed. An
``OSError`` for a full disk, a read-only file system or a denied permission becomes a
:class:`~tritonkit.errors.StorageError` the same way; credentials in URLs are masked.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

from tritonkit.errors import ServerError, StorageError, TritonkitError, mask_credentials

if TYPE_CHECKING:
    from tritonkit.release.store import ReleaseStore

console = Console()
err_console = Console(stderr=True)


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TritonkitError as exc:
            _fail(exc)
        except OSError as exc:  # a full disk, a read-only or forbidden path: one line, not a traceback
            storage = StorageError.from_os_error(exc)
            if storage is None:
                raise
            _fail(storage)


def _fail(exc: TritonkitError) -> NoReturn:
    # Messages are plain text: "pip install 'tritonkit[serve]'" must not read as markup. A URL's
    # credentials (oci://user:pass@…) are masked wherever they came from.
    message, hint = mask_credentials(exc.message), mask_credentials(exc.hint)
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[bold cyan]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)
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

        return ReleaseStore(default_store(spec_file.resolve().parent)).path(parse_release(str(path)))
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
    """The store named by ``--store``, else the default for the spec's directory."""
    from tritonkit.release.store import ReleaseStore, default_store

    if store is not None:
        return ReleaseStore(store)
    return ReleaseStore(default_store(spec_file.resolve().parent))


def open_env(spec_file: Path, store: Path | None, name: str, url: str, metrics_url: str | None = None) -> Any:
    """Environment ``name`` of the spec's release store (the spec is read when it exists: KServe
    environments are declared there; ``local`` needs none)."""
    from tritonkit.deploy import open_environment
    from tritonkit.spec.loader import load_spec

    spec = load_spec(spec_file).spec if spec_file.is_file() else None
    return open_environment(store_for(spec_file, store), name, spec, url=url, metrics_url=metrics_url)
