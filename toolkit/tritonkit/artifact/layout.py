"""Repository layout on disk: read-only trees, staging folders and atomic installation.

A built repository lives in ``<out>/<name>-<digest12>/`` and never changes; ``<out>/<name>``
is a relative symlink to the newest build, swapped atomically by :func:`install`.

Example:
    >>> staging = staging_dir(Path("dist"))
    >>> ...  # write the models and the lock into staging
    >>> path, changed = install(staging, Path("dist"), lock)
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from tritonkit.artifact.lock import Lock, directory_name
from tritonkit.errors import UsageError


def set_read_only(root: Path) -> None:
    """Make every file 0444 and every directory 0555 (bottom-up)."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        os.chmod(dirpath, 0o555)


def make_writable(root: Path) -> None:
    """Undo :func:`set_read_only` on a copy: directories 0755, files 0644."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def seal(tree: Path, destination: Path) -> None:
    """Make ``tree`` read-only and rename it to ``destination`` (same filesystem, atomic)."""
    set_read_only(tree)
    os.chmod(tree, 0o755)  # rename of a directory needs write on itself on some filesystems
    os.rename(tree, destination)
    os.chmod(destination, 0o555)


def remove_tree(root: Path) -> None:
    """Delete a tree even when it was made read-only."""
    if not root.exists() and not root.is_symlink():
        return
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, stat.S_IRWXU)
    shutil.rmtree(root)


KEPT = ".kept"  # marks a scratch directory kept on purpose (a failed build step to reproduce)


def scratch_dir(parent: Path, prefix: str) -> Path:
    """A fresh directory ``<parent>/<prefix><pid>-<random>``: the pid says whose it is, so a
    later run can tell a live process's scratch space from what a killed one left
    (:func:`remove_abandoned`)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def remove_abandoned(parent: Path, prefix: str) -> list[Path]:
    """Delete ``<prefix><pid>-*`` directories under ``parent`` whose process no longer exists
    (and that were not kept on purpose: :data:`KEPT`). Names without a pid are left alone.

    Returns:
        The directories removed.
    """
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for path in parent.glob(f"{prefix}*"):
        pid = path.name.removeprefix(prefix).split("-", 1)[0]
        if not pid.isdigit() or not path.is_dir() or (path / KEPT).exists() or _alive(int(pid)):
            continue
        try:
            remove_tree(path)
            removed.append(path)
        except FileNotFoundError:  # another build cleaned it first
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def staging_dir(out_dir: Path) -> Path:
    """A fresh staging directory in ``out_dir`` (same filesystem, for an atomic rename)."""
    return scratch_dir(out_dir, ".staging-")


def install(staging: Path, out_dir: Path, lock: Lock) -> tuple[Path, bool]:
    """Move a finished staging tree to its content-addressed name and point the alias at it.

    Returns:
        ``(final_path, created)``; ``created`` is False when an identical build already existed
        (the staging tree is then discarded and nothing on disk changes but the alias).

    Raises:
        UsageError: when ``<out>/<name>`` exists and is not an alias symlink (checked first, so
            nothing is written).
    """
    alias = out_dir / lock.repository
    if alias.exists() and not alias.is_symlink():
        raise UsageError(
            f"{alias} exists and is not a tritonkit alias symlink",
            hint="move it away or build into another -o directory; tritonkit keeps '<name>' as a symlink",
        )
    final = out_dir / directory_name(lock.repository, lock.digest)
    created = False
    if final.exists():
        remove_tree(staging)
    else:
        try:
            seal(staging, final)
            created = True
        except OSError:
            if not final.exists():
                raise
            remove_tree(staging)  # a concurrent build of the same inputs got there first
    _point_alias(alias, final.name)
    return final, created


def _point_alias(alias: Path, target_name: str) -> None:
    if alias.is_symlink() and os.readlink(alias) == target_name:
        return
    temp = alias.with_name(f".{alias.name}.link-{os.getpid()}")
    if temp.is_symlink():
        temp.unlink()
    os.symlink(target_name, temp)
    os.replace(temp, alias)
