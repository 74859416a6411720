"""A stat-keyed memo of file hashes: a file is read again only when its stat says it changed.

A rebuild with nothing changed used to read every source file and every cache entry in full
(twice the model's size for a multi-GB ONNX with external data) only to find the same hashes.
The memo keeps, per absolute path, the SHA-256 together with the stat fields any write changes
(device, inode, size, mtime and, for source files, ctime in ns: ctime cannot be set back by
``touch``). A file whose stat still matches is not read. What it does not catch is a change that
leaves them all equal: bit rot under an unchanged inode, or (for cache entries, compared without
ctime because hard links move it) a deliberate edit that restores the mtime. ``tritonkit
verify`` re-reads everything and is the check for those.

Racy entries (git's "racily clean" problem): a file modified again within the filesystem's
timestamp granularity after it was hashed would keep its stat. A hash is therefore remembered
only for files last modified more than :data:`RACY_NS` before hashing started, unless the
caller vouches for the content (:meth:`HashMemo.remember`: files this process just wrote and
sealed read-only).

Example:
    >>> memo = HashMemo(Path(".tritonkit/cache/.hash-memo.json"))
    >>> memo.hash(Path("model.onnx"))   # reads the file
    >>> memo.hash(Path("model.onnx"))   # stat only
    >>> memo.save()
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from tritonkit.artifact.hashing import FileHash, hash_file, iter_files

RACY_NS = 1_000_000_000
"""A file modified less than this long before it is hashed is not remembered (1 s covers the
timestamp granularity of common local and network filesystems)."""


def _stamp(stat: os.stat_result, ctime: bool = True) -> list[int]:
    stamp = [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns]
    return [*stamp, stat.st_ctime_ns] if ctime else stamp


class HashMemo:
    """Hashes of files keyed by absolute path and stat; persisted as JSON (optional)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._entries: dict[str, dict[str, object]] = {}
        self._dirty = False
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text())
                self._entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._entries = {}  # a damaged memo only costs re-reading

    def hash(self, path: Path, *, ctime: bool = True) -> FileHash:
        """The file's hash: from the memo when its stat is unchanged, else read (and remembered).

        ``ctime=False`` leaves the inode change time out of the comparison, for files whose
        links are added and removed on purpose (a cache entry hard-linked into each build: every
        link and unlink moves the ctime). A content edit still moves the mtime.
        """
        key = os.path.abspath(path)
        started = time.time_ns()
        stat = os.stat(key)
        hit = self._entries.get(key)
        if hit is not None and hit.get("stat") == _stamp(stat, ctime):
            return FileHash(str(hit["sha256"]), stat.st_size)
        result = hash_file(Path(key))
        after = os.stat(key)
        # mtime alone decides raciness: any later write sets mtime to "now", which differs from
        # an mtime older than the filesystem's timestamp granularity
        if _stamp(after) == _stamp(stat) and started - stat.st_mtime_ns > RACY_NS:
            self._entries[key] = {"stat": _stamp(stat, ctime), "sha256": result.sha256}
            self._dirty = True
        return result

    def tree(self, root: Path, *, exclude: frozenset[str] = frozenset(), ctime: bool = True) -> dict[str, FileHash]:
        """Like :func:`~tritonkit.artifact.hashing.hash_tree`, through the memo (``ctime``: see :meth:`hash`)."""
        result: dict[str, FileHash] = {}
        for path in iter_files(root):
            rel = path.relative_to(root).as_posix()
            if rel in exclude or "/__pycache__/" in f"/{rel}":
                continue
            result[rel] = self.hash(path, ctime=ctime)
        return result

    def remember(self, root: Path, hashes: Mapping[str, FileHash], *, ctime: bool = True) -> None:
        """Record hashes the caller computed for files under ``root`` it wrote and then sealed.

        The caller vouches that the content has not changed since it was hashed (its own
        private, now read-only files), so the racy-entry rule does not apply.
        """
        for rel, known in hashes.items():
            key = os.path.abspath(root / rel)
            try:
                stat = os.stat(key)
            except OSError:
                continue
            if stat.st_size == known.size:
                self._entries[key] = {"stat": _stamp(stat, ctime), "sha256": known.sha256}
                self._dirty = True

    def save(self) -> None:
        """Write the memo atomically (entries of files that no longer exist are dropped)."""
        if self.path is None or not self._dirty:
            return
        entries = {key: value for key, value in self._entries.items() if os.path.exists(key)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".hash-memo-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(entries, handle, sort_keys=True)
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self._dirty = False
