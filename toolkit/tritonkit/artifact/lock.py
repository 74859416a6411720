"""The lock file: every file of a built repository with its SHA-256 and size.

The lock file ``tritonkit.lock.json`` at the repository root lists every other file with its
SHA-256 and size, the repository digest, and per-model build metadata. It holds no timestamps
or absolute paths, so two clean builds of the same inputs are byte-identical.

Example:
    >>> lock = read_lock(Path("dist/demo"))
    >>> lock.digest
    'sha256:...'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonkit.artifact.hashing import LOCK_FILE, FileHash, canonical_json, hash_tree, repository_digest
from tritonkit.errors import VerifyError

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
    lock = Lock(repository=repository, digest=repository_digest(files, intent_of(models)), files=files, models=models)
    (root / LOCK_FILE).write_bytes(lock.to_bytes())
    return lock


INTENT_KEYS = ("slo", "capacity")


def intent_of(models: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The part of the lock's per-model metadata the digest covers: each model's ``slo`` and
    ``capacity`` (models with neither are left out)."""
    intent = {name: {key: entry[key] for key in INTENT_KEYS if key in entry} for name, entry in models.items()}
    return {name: entry for name, entry in intent.items() if entry}


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
