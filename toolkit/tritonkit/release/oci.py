"""Publish releases to an OCI registry as KServe modelcar images, and pull them back verified.

The image has two layers, both built deterministically (sorted entries, mtime 0, owner 0:0,
fixed modes; gzip without name or time for the shell), so one release always gives one
manifest digest:

1. ``bin/busybox`` (Debian's busybox-static) with ``sh``, ``ln``, ``sleep`` and ``cp`` linked to
   it — KServe's modelcar sidecar runs ``sh -c "ln -s /proc/$$/root/models /mnt/models && sleep …"``
   and the Helm chart's init container ``cp -R /models/. …``;
2. the release repository at ``models/``, an *uncompressed* tar — so ``/mnt/models`` is a
   Triton model repository and the runtime's ``--model-repository=/mnt/models`` needs no
   sub-path. Uncompressed because model weights do not compress (random-like floats: gzip
   gains a few percent) while gzip runs at ~20 MB/s on one core: a 10 GB model would spend
   minutes compressing for nothing. Docker, containerd and CRI-O all pull ``tar`` layers.

Nothing is held in memory whole: a layer is described by its entries and written on demand
to a sink (once to hash it, once more to upload it, in chunks), and a pull streams each blob
through a hashing reader straight into tar extraction. References tritonkit prints or records
are ``oci://HOST/REPO@sha256:…`` (the manifest digest), never a tag. Pulling checks the
manifest, the image config and every layer (digest, size, and the config's ``diff_ids``) and
finally every file hash against the release lock; a mismatch leaves nothing at the
destination. The registry protocol and credentials are :mod:`tritonkit.release.registry`'s.

Example:
    >>> ref = publish(Path("releases/v3"), "oci://127.0.0.1:5000/demo:v3")
    >>> pull(ref, Path("/tmp/demo-v3"))
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from tritonkit.artifact.layout import make_writable, remove_tree, seal
from tritonkit.artifact.lock import read_lock
from tritonkit.build.verify import require_verified
from tritonkit.errors import DependencyError, RegistryError, UsageError
from tritonkit.events import Event, Progress, emit
from tritonkit.release.registry import CHUNK, MANIFEST_TYPE, BlobReader, Reference, Registry

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
BUSYBOX = Path("/bin/busybox")
SHELL_APPLETS = ("sh", "ln", "sleep", "cp")
"""What the KServe modelcar sidecar (sh, ln, sleep) and the Helm chart's init container (cp) run."""
_IO = 1 << 20
_REPORT_EVERY = 16 << 20  # bytes between two progress events of one blob

__all__ = ["Blob", "Image", "Layer", "Reference", "build_image", "publish", "pull"]


@dataclass(frozen=True)
class Blob:
    """A small blob held in memory (the image config)."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


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
        _write_layer(self.entries, sink, compress=self.media_type == LAYER_GZIP_TYPE)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    config: Blob
    layers: list[Layer]
    manifest: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


# --------------------------------------------------------------------------- image (deterministic bytes)


def build_image(release: Path, *, busybox: Path = BUSYBOX, progress: Progress | None = None) -> Image:
    """The modelcar image of the repository at ``release``: verified, then hashed layer by layer.

    Args:
        release: a verified repository (a release of the store).
        busybox: the static shell for the sidecar.
        progress: ``Event("publish", "<layer>", "hashing", done, total, "bytes")`` while hashing.

    Raises:
        VerifyError: the repository does not match its lock.
        DependencyError: no static busybox for the sidecar's shell.
    """
    require_verified(release, consequence="not published")
    if not busybox.is_file():
        raise DependencyError(
            f"{busybox} not found: the modelcar image needs a static shell",
            hint="apt-get install busybox-static (make sysdeps does it)",
        )
    shell_entries = [Entry("bin", 0o755), Entry("bin/busybox", 0o755, source=busybox)]
    shell_entries += [Entry(f"bin/{name}", 0o777, link="busybox") for name in SHELL_APPLETS]
    model_entries = [Entry("models", 0o555)]
    for path in sorted(release.rglob("*"), key=lambda p: p.relative_to(release).as_posix()):
        rel = path.relative_to(release).as_posix()
        if "__pycache__" in rel.split("/"):
            continue
        model_entries.append(Entry(f"models/{rel}", 0o555) if path.is_dir() else Entry(f"models/{rel}", 0o444, path))
    shell = _hash_layer(LAYER_GZIP_TYPE, shell_entries, "shell layer", progress)
    models = _hash_layer(LAYER_TYPE, model_entries, "models layer", progress)
    lock = read_lock(release)
    config_doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Labels": {"dev.tritonkit.repository": lock.repository, "dev.tritonkit.digest": lock.digest},
            "Cmd": ["sh"],
            "Env": ["PATH=/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [shell.diff_id, models.diff_id]},
    }
    config = Blob(CONFIG_TYPE, _canonical(config_doc))
    layers = [shell, models]
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
        "annotations": {"org.opencontainers.image.title": lock.repository, "dev.tritonkit.digest": lock.digest},
    }
    return Image(config=config, layers=layers, manifest=_canonical(manifest_doc))


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


def _write_layer(
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


def _hash_layer(media_type: str, entries: list[Entry], label: str, progress: Progress | None) -> Layer:
    """One pass over the layer's bytes for its digest, size and diff id (nothing kept).

    An uncompressed layer's diff id is its digest, so its bytes are hashed once.
    """
    total = sum(e.source.stat().st_size for e in entries if e.source is not None)
    digest, size = hashlib.sha256(), 0
    report = _reporter(progress, "publish", label, "hashing", total)

    def sink(data: bytes) -> None:
        nonlocal size
        digest.update(data)
        size += len(data)
        report(size)

    compressed = media_type == LAYER_GZIP_TYPE
    diff_id = _write_layer(entries, sink, compress=compressed, diff_id=compressed)
    report(size, final=True)
    blob_digest = "sha256:" + digest.hexdigest()
    return Layer(media_type, tuple(entries), blob_digest, size, diff_id or blob_digest)


def _reporter(progress: Progress | None, stage: str, subject: str, message: str, total: int) -> Callable[..., None]:
    """A byte counter's callback that emits an Event every 16 MiB (and at the end)."""
    last = [-_REPORT_EVERY]

    def report(done: int, *, final: bool = False) -> None:
        if progress is not None and (final or done - last[0] >= _REPORT_EVERY):
            last[0] = done
            progress(Event(stage, subject, message, done=done, total=max(total, done), unit="bytes"))

    return report


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- publish / pull (effects)


def publish(release: Path, target: str, *, progress: Progress | None = None, chunk_size: int = CHUNK) -> str:
    """Push the modelcar image of ``release`` and return ``oci://HOST/REPO@sha256:…``.

    Blobs the registry already has are skipped (``HEAD``), so re-running a push that was killed
    uploads only what is missing and gives the same digest.

    Args:
        release: the release repository.
        target: ``oci://HOST/REPO[:TAG]``.
        progress: ``Event("publish", <digest>, "uploading", done, total, "bytes")`` per blob.
        chunk_size: bytes per upload request (the memory an upload holds).

    Raises:
        UsageError: a malformed reference. RegistryError: the registry refused or is unreachable.
    """
    ref = Reference.parse(target)
    if ref.digest:
        raise UsageError("publish to a tag or a bare repository, not a digest", hint="e.g. oci://HOST/REPO:v3")
    image = build_image(release, progress=progress)
    registry = Registry(ref, chunk_size=chunk_size)
    blobs: list[tuple[str, int, Callable[[Callable[[bytes], None]], None]]] = [
        (layer.digest, layer.size, layer.write) for layer in image.layers
    ]
    config = image.config.data
    blobs.append((image.config.digest, len(config), lambda sink: sink(config)))
    for digest, size, write in blobs:
        if registry.has_blob(digest):
            emit(progress, Event("publish", digest, "already in the registry", size, size, "bytes"))
            continue
        report = _reporter(progress, "publish", digest, "uploading", size)
        report(0, final=True)
        registry.upload(digest, size, write, progress=report)
        report(size, final=True)
    emit(progress, Event("publish", target, "pushing the manifest"))
    pushed = registry.push_manifest(image.manifest, ref.tag or image.digest)
    if pushed and pushed != image.digest:
        raise RegistryError(
            f"registry stored the manifest as {pushed}, expected {image.digest}", hint="check the registry's log"
        )
    return ref.pinned(image.digest)


def pull(reference: str, destination: Path, *, progress: Progress | None = None) -> Path:
    """Fetch ``oci://HOST/REPO@sha256:…`` into ``destination`` (new or empty), verifying every blob.

    The manifest, the image config and every layer (the shell's too) are checked against their
    digests and sizes, the layers' uncompressed bytes against the config's ``diff_ids``, and the
    files against the release lock.

    Raises:
        UsageError: not pinned by digest, or a non-empty destination.
        RegistryError: a manifest or blob that does not match its digest (nothing is left behind).
        VerifyError: files that do not match the lock inside the image.
    """
    ref = Reference.parse(reference)
    if not ref.digest:
        raise UsageError(
            f"{reference} is not pinned by digest", hint="pull oci://HOST/REPO@sha256:… (publish prints it)"
        )
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise UsageError(f"{destination} exists and is not empty", hint="pull into a new or empty directory")
    registry = Registry(ref)
    layers, diff_ids = _read_image(registry, ref.digest, reference)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        for index, layer in enumerate(layers):
            target = staged if index == 1 else None  # the shell layer is checked, not unpacked
            diff_id = _fetch_layer(registry, layer, target, progress)
            if diff_id != diff_ids[index]:
                raise RegistryError(
                    f"layer {layer['digest'][:19]}… unpacks to {diff_id}, the image config says {diff_ids[index]}",
                    hint="the image was altered after it was published; publish the release again",
                )
        tree = staged / "models"
        make_writable(tree)
        require_verified(
            tree, subject=f"{reference}: the pulled files", hint="the registry served other bytes; pull again"
        )
        if destination.exists():
            destination.rmdir()
        seal(tree, destination)
    finally:
        remove_tree(staged)
    return destination


def _read_image(registry: Registry, digest: str, reference: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The verified manifest's layer descriptors and the verified config's diff ids."""
    not_ours = RegistryError(
        f"{reference} is not a tritonkit modelcar image", hint="pull a reference 'tritonkit publish' printed"
    )
    try:
        manifest = json.loads(registry.get_verified("manifests", digest, "manifest"))
        layers = manifest["layers"]
        config_descriptor = manifest["config"]
        config = json.loads(
            registry.get_verified("blobs", config_descriptor["digest"], "image config", int(config_descriptor["size"]))
        )
        diff_ids = config["rootfs"]["diff_ids"]
        shapes_ok = len(layers) == 2 == len(diff_ids) and all(
            layer.get("mediaType") in (LAYER_TYPE, LAYER_GZIP_TYPE) for layer in layers
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise not_ours from exc
    if not shapes_ok:
        raise not_ours
    return layers, diff_ids


def _fetch_layer(registry: Registry, layer: dict[str, Any], target: Path | None, progress: Progress | None) -> str:
    """Download one layer through a verifying reader, unpacking it into ``target`` as it arrives.

    Returns:
        The sha256 of the uncompressed tar (its diff id).

    Raises:
        RegistryError: the blob does not match its digest, or is not a tar (checked in that order:
            a tampered blob is reported as tampered even when it also fails to unpack).
    """
    digest, size = layer["digest"], int(layer["size"])
    report = _reporter(progress, "pull", digest, "downloading", size)
    reader, body = registry.open_blob(digest, size, "layer", report)
    with body:
        compressed = layer["mediaType"] == LAYER_GZIP_TYPE
        # An uncompressed layer's diff id is its digest, which the reader checks: hashed once.
        uncompressed = _Reading(gzip.GzipFile(fileobj=cast(IO[bytes], reader), mode="rb")) if compressed else reader
        try:
            if target is not None:
                with tarfile.open(fileobj=uncompressed, mode="r|", bufsize=_IO, copybufsize=_IO) as tar:  # type: ignore[call-overload]
                    tar.extractall(target, filter="data")
            while uncompressed.read(_IO):
                pass
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            reader.finish()  # raises when the bytes are not the published ones
            raise RegistryError(
                f"layer {digest[:19]}… is not a tar archive ({exc})",
                hint="pull a reference 'tritonkit publish' printed",
            ) from exc
        reader.finish()
    report(size, final=True)
    return uncompressed.digest if isinstance(uncompressed, _Reading) else digest


class _Reading:
    """A read-only file object that hashes what is read through it (the uncompressed tar)."""

    def __init__(self, source: BlobReader | gzip.GzipFile) -> None:
        self.source, self.hash = source, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.hash.update(data)
        return data

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()
