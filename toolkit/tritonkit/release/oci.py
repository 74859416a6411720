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

Nothing is held in memory whole (:mod:`tritonkit.release.layers`): a layer is described by its
entries and written on demand to a sink. The first publish of a release hashes the models
layer while uploading it in chunks (one pass over its bytes) and remembers the digest; a later
publish of the same release knows it, asks the registry (``HEAD``) and uploads only what is
missing. A pull streams each blob through a hashing reader straight into tar extraction.

References tritonkit prints or records are ``oci://HOST/REPO@sha256:…`` (the manifest digest),
never a tag. Pulling checks the
manifest, the image config and every layer (digest, size, and the config's ``diff_ids``) and
finally every file hash against the release lock; a mismatch leaves nothing at the
destination. The registry protocol and credentials are :mod:`tritonkit.release.registry`'s.

A signed release (:mod:`tritonkit.release.trust`) carries its provenance in the models layer, and
``publish`` also attaches that DSSE envelope to the image (:mod:`tritonkit.release.attest`).
``pull`` with a trust policy checks the attached signature before downloading any layer, then the
lock inside against it, and the tree's own provenance, before anything is written at the
destination.

Example:
    >>> ref = publish(Path("releases/v3"), "oci://127.0.0.1:5000/demo:v3")
    >>> pull(ref, Path("/tmp/demo-v3"))
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from tritonkit.artifact.hashing import (
    LOCK_FILE,
    METADATA_FILES,
    PROVENANCE_FILE,
    hash_file,
    hash_json,
    sha256_bytes,
)
from tritonkit.artifact.layout import make_writable, remove_abandoned, remove_tree, scratch_dir, seal
from tritonkit.artifact.lock import Lock, read_lock
from tritonkit.build.verify import require_verified
from tritonkit.errors import DependencyError, RegistryError, TrustError, UsageError
from tritonkit.events import Event, Progress, emit
from tritonkit.release.attest import REPUBLISH, attach, signed_lock_digest
from tritonkit.release.layers import (
    LAYER_FORMAT,
    LAYER_GZIP_TYPE,
    LAYER_TYPE,
    Entry,
    Layer,
    byte_reporter,
    hash_layer,
    recall,
    remember,
    write_layer,
)
from tritonkit.release.registry import CHUNK, MANIFEST_TYPE, BlobReader, Reference, Registry
from tritonkit.release.trust import TrustPolicy

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
BUSYBOX = Path("/bin/busybox")
SHELL_APPLETS = ("sh", "ln", "sleep", "cp")
"""What the KServe modelcar sidecar (sh, ln, sleep) and the Helm chart's init container (cp) run."""
_IO = 1 << 20

__all__ = ["LAYER_GZIP_TYPE", "LAYER_TYPE", "Blob", "Image", "Layer", "Reference", "build_image", "publish", "pull"]


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
    plan = _plan(release, busybox, progress)
    models = recall(plan.key, plan.entries) or remember(
        plan.key, hash_layer(LAYER_TYPE, plan.entries, "models layer", progress)
    )
    return _image(plan, models)


@dataclass(frozen=True)
class _Plan:
    """A verified release ready to be packed: its lock, the shell layer, the models layer's entries."""

    lock: Lock
    shell: Layer
    entries: list[Entry]

    @property
    def key(self) -> str:
        """What the models layer's bytes depend on: the release content, its tree, the tar writer."""
        listing = [[e.name, e.mode, e.source.stat().st_size if e.source else None] for e in self.entries]
        # The lock digest covers every file the lock lists; the files it cannot list (the lock
        # itself, whose bytes may differ for one digest, e.g. the time it was written, and the
        # signature files) are keyed by their content: a release signed again is another layer.
        # (Keyed by the digest alone, two releases of one build shared a cached layer digest
        # that matched only one of them: the registry refused the other's bytes, DIGEST_INVALID.)
        unlisted = [
            hash_file(e.source).sha256
            for e in self.entries
            if e.source is not None and e.name.removeprefix("models/") in METADATA_FILES
        ]
        return hash_json([LAYER_FORMAT, sys.version_info[:2], self.lock.digest, listing, unlisted])


def _plan(release: Path, busybox: Path, progress: Progress | None) -> _Plan:
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
    shell = hash_layer(LAYER_GZIP_TYPE, shell_entries, "shell layer", progress)  # small: always hashed
    return _Plan(read_lock(release), shell, model_entries)


def _image(plan: _Plan, models: Layer) -> Image:
    lock, layers = plan.lock, [plan.shell, models]
    config_doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Labels": {"dev.tritonkit.repository": lock.repository, "dev.tritonkit.digest": lock.digest},
            "Cmd": ["sh"],
            "Env": ["PATH=/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    config = Blob(CONFIG_TYPE, _canonical(config_doc))
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
        "annotations": {"org.opencontainers.image.title": lock.repository, "dev.tritonkit.digest": lock.digest},
    }
    return Image(config=config, layers=layers, manifest=_canonical(manifest_doc))


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- publish / pull (effects)


def publish(release: Path, target: str, *, progress: Progress | None = None, chunk_size: int = CHUNK) -> str:
    """Push the modelcar image of ``release`` and return ``oci://HOST/REPO@sha256:…``.

    Blobs the registry already has are skipped (``HEAD``), so re-running a push that was killed
    uploads only what is missing and gives the same digest. The first publish of a release from
    this machine hashes the models layer while uploading it (one pass over its bytes).

    Args:
        release: the release repository.
        target: ``oci://HOST/REPO[:TAG]``.
        progress: ``Event("publish", <digest>, "uploading", done, total, "bytes")`` per blob
            (subject ``"models layer"`` while its digest is not known yet).
        chunk_size: bytes per upload request (the memory an upload holds).

    Raises:
        UsageError: a malformed reference. RegistryError: the registry refused or is unreachable.
    """
    ref = Reference.parse(target)
    if ref.digest:
        raise UsageError("publish to a tag or a bare repository, not a digest", hint="e.g. oci://HOST/REPO:v3")
    plan = _plan(release, BUSYBOX, progress)
    registry = Registry(ref, chunk_size=chunk_size)
    _push(registry, plan.shell.digest, plan.shell.size, plan.shell.write, progress)
    models = recall(plan.key, plan.entries)
    if models is not None:
        _push(registry, models.digest, models.size, models.write, progress)
    else:
        total = sum(e.source.stat().st_size for e in plan.entries if e.source is not None)
        report = byte_reporter(progress, "publish", "models layer", "uploading", total)
        report(0, final=True)
        entries = tuple(plan.entries)
        digest, size = registry.upload(lambda sink: write_layer(entries, sink, compress=False), progress=report)
        report(size, final=True)
        models = remember(plan.key, Layer(LAYER_TYPE, entries, digest, size, digest))
    image = _image(plan, models)
    config = image.config.data
    _push(registry, image.config.digest, len(config), lambda sink: sink(config), progress)
    emit(progress, Event("publish", target, "pushing the manifest"))
    pushed = registry.push_manifest(image.manifest, ref.tag or image.digest)
    if pushed and pushed != image.digest:
        raise RegistryError(
            f"registry stored the manifest as {pushed}, expected {image.digest}", hint="check the registry's log"
        )
    if (release / PROVENANCE_FILE).is_file():
        emit(progress, Event("publish", target, "attaching the signed provenance"))

        def push_blob(blob: bytes) -> None:
            _push(registry, "sha256:" + sha256_bytes(blob), len(blob), lambda sink: sink(blob), progress)

        attach(registry, image.digest, len(image.manifest), (release / PROVENANCE_FILE).read_bytes(), push_blob)
    return ref.pinned(image.digest)


def _push(
    registry: Registry,
    digest: str,
    size: int,
    write: Callable[[Callable[[bytes], None]], None],
    progress: Progress | None,
) -> None:
    """Upload one blob of known digest unless the registry has it."""
    if registry.has_blob(digest):
        emit(progress, Event("publish", digest, "already in the registry", size, size, "bytes"))
        return
    report = byte_reporter(progress, "publish", digest, "uploading", size)
    report(0, final=True)
    registry.upload(write, digest=digest, size=size, progress=report)
    report(size, final=True)


def pull(
    reference: str, destination: Path, *, progress: Progress | None = None, trust: TrustPolicy | None = None
) -> Path:
    """Fetch ``oci://HOST/REPO@sha256:…`` into ``destination`` (new or empty), verifying every blob.

    The manifest, the image config and every layer (the shell's too) are checked against their
    digests and sizes, the layers' uncompressed bytes against the config's ``diff_ids``, and the
    files against the release lock. With a ``trust`` policy, the provenance attached to the image
    is checked before any layer is downloaded, and the lock inside must be the one it signs.

    Raises:
        UsageError: not pinned by digest, or a non-empty destination.
        RegistryError: a manifest or blob that does not match its digest (nothing is left behind).
        VerifyError: files that do not match the lock inside the image.
        TrustError: under a policy, unsigned, or not signed by a listed key (nothing written).
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
    signed_lock = None if trust is None else signed_lock_digest(registry, ref.digest, trust, reference)
    destination.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{destination.name}.pull-"  # + pid: what a killed pull left is removed by the next
    remove_abandoned(destination.parent, prefix)
    staged = scratch_dir(destination.parent, prefix)
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
        if not tree.is_dir():
            raise RegistryError(
                f"{reference} has no models/ directory: not a tritonkit modelcar image",
                hint="pull a reference 'tritonkit publish' printed",
            )
        make_writable(tree)
        require_verified(
            tree, subject=f"{reference}: the pulled files", hint="the registry served other bytes; pull again"
        )
        if trust is not None:
            lock = (tree / LOCK_FILE).read_bytes()
            if signed_lock is not None and sha256_bytes(lock) != signed_lock:
                raise TrustError(f"{reference}: its lock is not the one its attached provenance signs", hint=REPUBLISH)
            trust.enforce(tree, release=None, subject=reference)
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
    report = byte_reporter(progress, "pull", digest, "downloading", size)
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
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
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
