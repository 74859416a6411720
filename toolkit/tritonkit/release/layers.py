"""Deterministic tar layers, written on demand: never a whole layer in memory or on disk.

A :class:`Layer` is its entries (directories, files, symlinks; sorted, mtime 0, owner 0:0,
fixed modes) plus the digest, size and diff id of the bytes they give. :func:`write_layer`
streams those bytes to a sink in ~1 MiB pieces (through gzip without name or time when the
layer is compressed), so hashing a layer and uploading it are two walks over the files, not a
buffer. :func:`recall` / :func:`remember` keep an uncompressed layer's digest per content key
(``~/.cache/tritonkit/oci-layers/``), so publishing the same release again need not re-read it.

Example:
    >>> layer = hash_layer(LAYER_TYPE, [Entry("models", 0o555), Entry("models/a", 0o444, Path("a"))], "models", None)
    >>> layer.write(upload_chunk)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonkit.events import Event, Progress

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_FORMAT = 1
"""Bump when the same entries would give other tar bytes (memo keys include it)."""
_IO = 1 << 20
_REPORT_EVERY = 16 << 20  # bytes between two progress events of one blob


@dataclass(frozen=True)
class Entry:
    """One tar entry: a directory (no source, no link), a file (``source``) or a symlink (``link``)."""

    name: str
    mode: int
    source: Path | None = None
    link: str | None = None


@dataclass(frozen=True)
class Layer:
    """A layer described by its entries; its bytes are produced on demand by :meth:`write`."""

    media_type: str
    entries: tuple[Entry, ...]
    digest: str
    size: int
    diff_id: str

    def write(self, sink: Callable[[bytes], None]) -> None:
        """Write the layer's bytes (the same every time) to ``sink`` in pieces of about 1 MiB."""
        write_layer(self.entries, sink, compress=self.media_type == LAYER_GZIP_TYPE)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class _Tee:
    """A write-only file object that forwards what tar or gzip write to it, hashing it if asked."""

    def __init__(self, forward: Callable[[bytes], object], *, hashing: bool = False) -> None:
        self.forward, self.hash = forward, hashlib.sha256() if hashing else None

    def write(self, data: bytes) -> int:
        if self.hash is not None:
            self.hash.update(data)
        self.forward(data)
        return len(data)

    def flush(self) -> None:
        pass


def write_layer(
    entries: tuple[Entry, ...] | list[Entry], sink: Callable[[bytes], None], *, compress: bool, diff_id: bool = False
) -> str | None:
    """Stream a tar (gzip'd when ``compress``) of ``entries`` with fixed metadata to ``sink``.

    Returns:
        The sha256 of the uncompressed tar when ``diff_id`` (else None: an upload hashes nothing,
        the registry checks the digest it is given).
    """
    packer = gzip.GzipFile(filename="", mode="wb", fileobj=_Tee(sink), compresslevel=6, mtime=0) if compress else None
    inner = _Tee(packer.write if packer is not None else sink, hashing=diff_id)
    # Stream mode: tar writes forward only, through a 1 MiB buffer; the bytes equal mode "w"'s.
    with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_IO, copybufsize=_IO) as tar:  # type: ignore[call-overload]
        for entry in sorted(entries, key=lambda e: e.name):
            info = tarfile.TarInfo(entry.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", entry.mode
            if entry.link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, entry.link
                tar.addfile(info)
            elif entry.source is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                with entry.source.open("rb") as handle:
                    info.size = entry.source.stat().st_size
                    tar.addfile(info, handle)
    if packer is not None:
        packer.close()
    return "sha256:" + inner.hash.hexdigest() if inner.hash is not None else None


def hash_layer(media_type: str, entries: list[Entry], label: str, progress: Progress | None) -> Layer:
    """One pass over the layer's bytes for its digest, size and diff id (nothing kept).

    An uncompressed layer's diff id is its digest, so its bytes are hashed once.
    """
    total = sum(e.source.stat().st_size for e in entries if e.source is not None)
    digest, size = hashlib.sha256(), 0
    report = byte_reporter(progress, "publish", label, "hashing", total)

    def sink(data: bytes) -> None:
        nonlocal size
        digest.update(data)
        size += len(data)
        report(size)

    compressed = media_type == LAYER_GZIP_TYPE
    diff_id = write_layer(entries, sink, compress=compressed, diff_id=compressed)
    report(size, final=True)
    blob_digest = "sha256:" + digest.hexdigest()
    return Layer(media_type, tuple(entries), blob_digest, size, diff_id or blob_digest)


def byte_reporter(progress: Progress | None, stage: str, subject: str, message: str, total: int) -> Callable[..., None]:
    """A byte counter's callback that emits an Event every 16 MiB (and at the end)."""
    last = [-_REPORT_EVERY]

    def report(done: int, *, final: bool = False) -> None:
        if progress is not None and (final or done - last[0] >= _REPORT_EVERY):
            last[0] = done
            progress(Event(stage, subject, message, done=done, total=max(total, done), unit="bytes"))

    return report


# An uncompressed layer's digest is remembered per content key (~/.cache/tritonkit/oci-layers/),
# so publishing a release again (another tag, another registry, a re-run after a kill) knows
# the digest without reading every byte, and can ask the registry whether it has it (HEAD).
# A release is verified against its lock before the memo is consulted, and the memo's key
# covers the lock digest, the tree listing and the tar writer; the registry checks uploads.


def _memo(key: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tritonkit" / "oci-layers" / f"{key}.json"


def recall(key: str, entries: list[Entry]) -> Layer | None:
    """The uncompressed layer of ``entries`` remembered under ``key``, if it was."""
    try:
        memo = json.loads(_memo(key).read_text())
        digest, size = str(memo["digest"]), int(memo["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        return None
    return Layer(LAYER_TYPE, tuple(entries), digest, size, digest)


def remember(key: str, layer: Layer) -> Layer:
    """Remember ``layer``'s digest and size under ``key``; returns ``layer``."""
    path = _memo(key)
    try:  # a cache: failing to write it only costs a hashing pass next time
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp = tempfile.mkstemp(prefix=".memo-", dir=path.parent)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"digest": layer.digest, "size": layer.size}, handle)
        os.replace(temp, path)
    except OSError:
        pass
    return layer
