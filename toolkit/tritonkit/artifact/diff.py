"""What changed between two built repositories: models, files with sizes, config.pbtxt text.

Either side is a repository directory (a build, its ``dist/<name>`` alias, a release tree) or a
bare lock file (``tritonkit.lock.json``): the lock lists every file with its SHA-256 and size,
so file changes need no more. Config changes are shown as a unified diff of ``config.pbtxt``
when both sides are directories (a lock file has hashes, not text).

Version directories are matched by position, not number: release ``v3`` serves its models as
version ``3`` (``classifier/3/model.onnx``) and a build as ``1``; the same bytes under another
version number are not a change.

Example:
    >>> result = diff_repositories(Path("dist/demo"), Path("releases/v3"))
    >>> [(m.name, m.change) for m in result.models]
    [('classifier', 'changed')]
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit.artifact.hashing import LOCK_FILE, FileHash
from tritonkit.artifact.lock import Lock, read_lock
from tritonkit.errors import VerifyError

CONFIG_FILE = "config.pbtxt"
REPOSITORY_FILES = "(repository)"  # files not inside a model directory


@dataclass(frozen=True)
class FileChange:
    """One file added, removed or changed; sizes in bytes (``None`` on the side it is absent)."""

    path: str  # as in the new repository (the old one's for a removed file)
    change: str  # "added" | "removed" | "changed"
    old_size: int | None
    new_size: int | None


@dataclass(frozen=True)
class ModelChange:
    """A model added, removed or changed, its changed files and its config diff."""

    name: str
    change: str  # "added" | "removed" | "changed"
    files: list[FileChange]
    config_diff: str = ""  # unified diff of config.pbtxt; "" when unchanged or only locks were given


@dataclass(frozen=True)
class RepositoryDiff:
    """Everything that differs between ``old`` and ``new``."""

    old: str
    new: str
    old_digest: str
    new_digest: str
    models: list[ModelChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.models


@dataclass(frozen=True)
class _Side:
    label: str
    root: Path | None  # None: only a lock file was given
    lock: Lock


def _open(path: Path) -> _Side:
    if path.is_file():
        if path.name != LOCK_FILE:
            raise VerifyError(
                f"{path}: not a repository or a {LOCK_FILE}", hint="pass a build directory, a release or a lock file"
            )
        return _Side(str(path), None, read_lock(path.parent))
    root = path.resolve()
    return _Side(str(path), root, read_lock(root))


def _key(rel: str) -> tuple[str, str]:
    """``(model, path with the version directory as '*')``: what is compared across versions."""
    parts = rel.split("/")
    if len(parts) < 2:
        return REPOSITORY_FILES, rel
    if len(parts) > 2 and parts[1].isdigit():
        parts[1] = "*"
    return parts[0], "/".join(parts)


def _files(lock: Lock) -> dict[tuple[str, str], tuple[str, FileHash]]:
    return {_key(rel): (rel, fh) for rel, fh in lock.files.items()}


def _config_diff(old: _Side, new: _Side, old_rel: str, new_rel: str) -> str:
    if old.root is None or new.root is None:
        return ""
    a = (old.root / old_rel).read_text(errors="replace").splitlines(keepends=True)
    b = (new.root / new_rel).read_text(errors="replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, f"a/{old_rel}", f"b/{new_rel}"))


def diff_repositories(old: Path, new: Path) -> RepositoryDiff:
    """Compare two repositories (or lock files) model by model.

    Args:
        old: the base: a repository directory, or its ``tritonkit.lock.json``.
        new: the one compared against it, in the same forms.

    Returns:
        The models that differ (sorted by name), each with its changed files and config diff,
        and the names of the models that are identical.

    Raises:
        VerifyError: when a side is not a tritonkit repository or its lock file is unreadable.
    """
    a, b = _open(old), _open(new)
    a_files, b_files = _files(a.lock), _files(b.lock)
    names = sorted({model for model, _ in a_files} | {model for model, _ in b_files})
    models: list[ModelChange] = []
    unchanged: list[str] = []
    for name in names:
        keys = sorted({k for k in a_files if k[0] == name} | {k for k in b_files if k[0] == name})
        changes: list[FileChange] = []
        config = ""
        for key in keys:
            before, after = a_files.get(key), b_files.get(key)
            if before is None and after is not None:
                changes.append(FileChange(after[0], "added", None, after[1].size))
            elif after is None and before is not None:
                changes.append(FileChange(before[0], "removed", before[1].size, None))
            elif before is not None and after is not None and before[1].sha256 != after[1].sha256:
                changes.append(FileChange(after[0], "changed", before[1].size, after[1].size))
                if key[1] == f"{name}/{CONFIG_FILE}":
                    config = _config_diff(a, b, before[0], after[0])
        in_a = any(k[0] == name for k in a_files)
        in_b = any(k[0] == name for k in b_files)
        if not changes:
            unchanged.append(name)
        else:
            change = "changed" if in_a and in_b else "added" if in_b else "removed"
            models.append(ModelChange(name, change, changes, config))
    return RepositoryDiff(a.label, b.label, a.lock.digest, b.lock.digest, models, unchanged)
