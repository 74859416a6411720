"""Content hashing: files, trees, canonical JSON and repository digests.

A repository digest is ``sha256:`` over the sorted lines ``<relpath>\\0<sha256>\\n`` of every
file except the lock file, so it depends on paths and contents only — never on mtimes,
owners or the directory the repository lives in.

Example:
    >>> files = hash_tree(Path("dist/demo"))
    >>> repository_digest(files)
    'sha256:3f2a...'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_FILE = "tritonkit.lock.json"
# A signed release's proof of its lock (release/trust.py): beside the lock, not listed in it.
PROVENANCE_FILE = "tritonkit.provenance.json"
SIGNATURE_FILE = "tritonkit.lock.sig"
METADATA_FILES = frozenset({LOCK_FILE, PROVENANCE_FILE, SIGNATURE_FILE})
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileHash:
    """The SHA-256 (hex) and size in bytes of one file."""

    sha256: str
    size: int


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: Path) -> FileHash:
    """Hash one file in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileHash(digest.hexdigest(), size)


def iter_files(root: Path) -> Iterable[Path]:
    """Yield every regular file under ``root`` (symlinks followed), sorted by relative path."""
    return sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def hash_tree(
    root: Path,
    *,
    exclude: frozenset[str] = METADATA_FILES,
    known: Mapping[str, FileHash] | None = None,
) -> dict[str, FileHash]:
    """Hash every file under ``root``, keyed by POSIX relative path, skipping ``exclude``.

    Every other file counts, ``__pycache__/`` included: a ``.pyc`` there is code Python runs
    instead of the source beside it (an unchecked-hash one whatever the source says), so a
    repository holding one the lock does not list fails verification. Builds never contain one
    (builders and release copies skip them) and tritonkit's servers never write one
    (:func:`tritonkit.serve.binary.prepare_backends`).

    ``known`` holds hashes this process has just computed for files it then copied here (a
    verified cache entry): a file listed there with the same size is not read again.
    """
    result: dict[str, FileHash] = {}
    known = known or {}
    for path in iter_files(root):
        rel = path.relative_to(root).as_posix()
        if rel in exclude:
            continue
        earlier = known.get(rel)
        result[rel] = earlier if earlier is not None and earlier.size == path.stat().st_size else hash_file(path)
    return result


def repository_digest(files: Mapping[str, FileHash], intent: Mapping[str, Any] | None = None) -> str:
    """Digest over sorted relative paths and their file hashes, and the models' ``intent`` (their
    SLO and measured capacity, which the lock carries and promotion gates and plans act on: a
    release whose SLO changed is another release, even when no file did). Without intent the
    digest is the files' alone, as before intent existed."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel].sha256}\n".encode())
    if intent:
        digest.update(b"intent\0" + canonical_json(dict(intent)) + b"\n")
    return f"sha256:{digest.hexdigest()}"


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` with sorted keys and no whitespace variance (hash input)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def hash_json(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``value``."""
    return sha256_bytes(canonical_json(value))
