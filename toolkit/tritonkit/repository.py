"""Repository layout on disk: the lock file, read-only trees and atomic publication.

A built repository lives in ``<out>/<name>-<digest12>/`` and never changes; ``<out>/<name>``
is a relative symlink to the newest build, swapped atomically. The lock file
``tritonkit.lock.json`` at the repository root lists every other file with its SHA-256 and
size, the repository digest, and per-model build metadata. It holds no timestamps or absolute
paths, so two clean builds of the same inputs are byte-identical.

Example:
    >>> lock = read_lock(Path("dist/demo"))
    >>> lock.digest
    'sha256:...'
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpecError, VerifyError
from .hashing import LOCK_FILE, FileHash, canonical_json, hash_tree, repository_digest

LOCK_VERSION = 1


@dataclass(frozen=True)
class Lock:
    """The parsed lock file of a repository."""

    repository: str
    digest: str
    files: dict[str, FileHash]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        document = {
            "lock_version": LOCK_VERSION,
            "repository": self.repository,
            "digest": self.digest,
            "files": {rel: {"sha256": h.sha256, "size": h.size} for rel, h in sorted(self.files.items())},
            "models": self.models,
        }
        # indented for people and diffs, still canonical: sorted keys, fixed separators
        return json.dumps(json.loads(canonical_json(document)), indent=2, sort_keys=True).encode() + b"\n"


def write_lock(
    root: Path, repository: str, models: dict[str, dict[str, Any]], known: Mapping[str, FileHash] | None = None
) -> Lock:
    """Hash every file under ``root`` (``known``: see :func:`hash_tree`) and write the lock file there."""
    files = hash_tree(root, known=known)
    lock = Lock(repository=repository, digest=repository_digest(files), files=files, models=models)
    (root / LOCK_FILE).write_bytes(lock.to_bytes())
    return lock


def read_lock(root: Path) -> Lock:
    """Read ``root``'s lock file.

    Raises:
        VerifyError: when the directory or its lock file is missing or unreadable.
    """
    if not root.is_dir():
        raise VerifyError(f"{root}: no such repository directory", hint="build one with 'tritonkit build -o DIR'")
    path = root / LOCK_FILE
    if not path.is_file():
        raise VerifyError(f"{root}: no {LOCK_FILE}; not a tritonkit repository", hint="build it with 'tritonkit build'")
    try:
        document = json.loads(path.read_text())
        files = {rel: FileHash(entry["sha256"], int(entry["size"])) for rel, entry in document["files"].items()}
        return Lock(
            repository=document["repository"],
            digest=document["digest"],
            files=files,
            models=document.get("models", {}),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise VerifyError(
            f"{path}: unreadable lock file ({exc})", hint="rebuild the repository; a lock is never edited by hand"
        ) from exc


def directory_name(repository: str, digest: str) -> str:
    """``<name>-<first 12 hex digits of the digest>``: names a build by its content."""
    return f"{repository}-{digest.removeprefix('sha256:')[:12]}"


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


def staging_dir(out_dir: Path) -> Path:
    """A fresh temporary directory on the same filesystem as ``out_dir`` (for atomic rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))


def publish(staging: Path, out_dir: Path, lock: Lock) -> tuple[Path, bool]:
    """Move a finished staging tree to its content-addressed name and point the alias at it.

    Returns:
        ``(final_path, created)``; ``created`` is False when an identical build already existed
        (the staging tree is then discarded and nothing on disk changes but the alias).

    Raises:
        SpecError: when ``<out>/<name>`` exists and is not an alias symlink (checked first, so
            nothing is written).
    """
    alias = out_dir / lock.repository
    if alias.exists() and not alias.is_symlink():
        raise SpecError(
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
