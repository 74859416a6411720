"""Publish releases to an OCI registry as KServe modelcar images, and pull them back verified.

The image has two layers, both built deterministically (sorted entries, mtime 0, owner 0:0,
fixed modes, gzip without name or time), so one release always gives one manifest digest:

1. ``bin/busybox`` (Debian's busybox-static) with ``sh``, ``ln``, ``sleep`` and ``cp`` linked to
   it — KServe's modelcar sidecar runs ``sh -c "ln -s /proc/$$/root/models /mnt/models && sleep …"``
   and the Helm chart's init container ``cp -R /models/. …``;
2. the release repository at ``models/`` — so ``/mnt/models`` is a Triton model repository and
   the runtime's ``--model-repository=/mnt/models`` needs no sub-path.

References tritonkit prints or records are ``oci://HOST/REPO@sha256:…`` (the manifest digest),
never a tag. Pulling checks the manifest digest, every blob digest, and finally every file
hash against the release lock. Credentials come from ``$TRITONKIT_REGISTRY_USERNAME`` /
``$TRITONKIT_REGISTRY_PASSWORD`` or the Docker config (``$DOCKER_CONFIG/config.json``,
``~/.docker/config.json``) and are never logged. ``127.0.0.1`` and ``localhost`` registries
are spoken to over plain HTTP; everything else over HTTPS.

Example:
    >>> ref = publish(Path("releases/v3"), "oci://127.0.0.1:5000/demo:v3")
    >>> pull(ref, Path("/tmp/demo-v3"))
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonkit.artifact.layout import make_writable, remove_tree, seal
from tritonkit.artifact.lock import read_lock
from tritonkit.build.verify import require_verified
from tritonkit.errors import DependencyError, RegistryError, UsageError, VerifyError, mask_credentials
from tritonkit.events import Event, Progress, emit

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
BUSYBOX = Path("/bin/busybox")
SHELL_APPLETS = ("sh", "ln", "sleep", "cp")
"""What the KServe modelcar sidecar (sh, ln, sleep) and the Helm chart's init container (cp) run."""
_REF = re.compile(
    r"^oci://(?P<host>[^/]+)/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>\w[\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


@dataclass(frozen=True)
class Reference:
    """``oci://HOST/REPO[:TAG][@sha256:…]``."""

    host: str
    repo: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        if "@" in text.removeprefix("oci://").split("/", 1)[0]:
            raise UsageError(
                f"'{mask_credentials(text)}': credentials do not belong in the reference (they would be printed "
                "and recorded)",
                hint="set TRITONKIT_REGISTRY_USERNAME / TRITONKIT_REGISTRY_PASSWORD or use 'docker login'",
            )
        match = _REF.match(text)
        if not match:
            raise UsageError(
                f"'{mask_credentials(text)}' is not an OCI reference",
                hint="use oci://HOST[:PORT]/REPO[:TAG] or oci://HOST/REPO@sha256:…",
            )
        return cls(match["host"], match["repo"], match["tag"], match["digest"])

    def pinned(self, digest: str) -> str:
        return f"oci://{self.host}/{self.repo}@{digest}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"oci://{self.host}/{self.repo}{tag}" + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class Blob:
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
    layers: list[Blob]
    manifest: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


# --------------------------------------------------------------------------- image (pure bytes)


def build_image(release: Path, *, busybox: Path = BUSYBOX) -> Image:
    """The modelcar image of the repository at ``release`` (deterministic bytes).

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
    entries_shell: list[tuple[str, bytes | None, int]] = [
        ("bin", None, 0o755),
        ("bin/busybox", busybox.read_bytes(), 0o755),
    ]
    shell_links = [(f"bin/{name}", "busybox") for name in SHELL_APPLETS]
    shell = _layer(entries_shell, shell_links)
    entries: list[tuple[str, bytes | None, int]] = [("models", None, 0o555)]
    for path in sorted(release.rglob("*"), key=lambda p: p.relative_to(release).as_posix()):
        rel = path.relative_to(release).as_posix()
        if "__pycache__" in rel.split("/"):
            continue
        if path.is_dir():
            entries.append((f"models/{rel}", None, 0o555))
        else:
            entries.append((f"models/{rel}", path.read_bytes(), 0o444))
    models = _layer(entries, [])
    lock = read_lock(release)
    config_doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Labels": {"dev.tritonkit.repository": lock.repository, "dev.tritonkit.digest": lock.digest},
            "Cmd": ["sh"],
            "Env": ["PATH=/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [shell[1], models[1]]},
    }
    config = Blob(CONFIG_TYPE, _canonical(config_doc))
    layers = [shell[0], models[0]]
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
        "annotations": {"org.opencontainers.image.title": lock.repository, "dev.tritonkit.digest": lock.digest},
    }
    return Image(config=config, layers=layers, manifest=_canonical(manifest_doc))


def _layer(files: list[tuple[str, bytes | None, int]], links: list[tuple[str, str]]) -> tuple[Blob, str]:
    """A gzip'd tar with fixed metadata; returns the blob and the uncompressed diff id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        items: list[tuple[str, bytes | None, int, str | None]] = [(n, d, m, None) for n, d, m in files]
        items += [(n, None, 0o777, target) for n, target in links]
        for name, data, mode, target in sorted(items, key=lambda item: item[0]):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", mode
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    uncompressed = raw.getvalue()
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=6, mtime=0) as handle:
        handle.write(uncompressed)
    return Blob(LAYER_TYPE, compressed.getvalue()), "sha256:" + hashlib.sha256(uncompressed).hexdigest()


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- registry (effects)


class _Registry:
    """The OCI distribution API over urllib, with Basic or Bearer auth from the usual places."""

    def __init__(self, ref: Reference) -> None:
        self.ref = ref
        local = ref.host.split(":")[0] in ("127.0.0.1", "localhost", "[::1]")
        self.base = f"{'http' if local else 'https'}://{ref.host}/v2/{ref.repo}"
        self.token: str | None = None

    def request(
        self, method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
            if self.token:
                request.add_header("Authorization", self.token)
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0 and self._authenticate(exc.headers.get("WWW-Authenticate", "")):
                    continue
                return exc.code, dict(exc.headers), exc.read()
            except OSError as exc:
                raise RegistryError(
                    f"cannot reach the registry {self.ref.host}: {exc}", hint="check the host, port and network"
                ) from exc
        raise AssertionError("unreachable")

    def _authenticate(self, challenge: str) -> bool:
        user, password = _credentials(self.ref.host)
        if user is None:
            return False
        basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if challenge.lower().startswith("basic"):
            self.token = basic
            return True
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in fields:
            return False
        query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
        request = urllib.request.Request(f"{fields['realm']}?{query}", headers={"Authorization": basic})
        with urllib.request.urlopen(request, timeout=60) as response:
            document = json.loads(response.read())
        self.token = "Bearer " + (document.get("token") or document.get("access_token", ""))
        return True

    def has_blob(self, digest: str) -> bool:
        status, _, _ = self.request("HEAD", f"{self.base}/blobs/{digest}")
        return status == 200

    def push_blob(self, blob: Blob) -> None:
        if self.has_blob(blob.digest):
            return
        status, headers, body = self.request("POST", f"{self.base}/blobs/uploads/", data=b"")
        self._check(status, 202, "start a blob upload", body)
        location = urllib.parse.urljoin(self.base, headers.get("Location", ""))
        separator = "&" if "?" in location else "?"
        status, _, body = self.request(
            "PUT",
            f"{location}{separator}digest={blob.digest}",
            data=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._check(status, 201, f"upload {blob.digest[:19]}", body)

    def push_manifest(self, manifest: bytes, tag: str) -> str:
        status, headers, body = self.request(
            "PUT", f"{self.base}/manifests/{tag}", data=manifest, headers={"Content-Type": MANIFEST_TYPE}
        )
        self._check(status, 201, "push the manifest", body)
        return headers.get("Docker-Content-Digest", "")

    def get(self, kind: str, digest: str) -> bytes:
        accept = {"Accept": MANIFEST_TYPE} if kind == "manifests" else {}
        status, _, body = self.request("GET", f"{self.base}/{kind}/{digest}", headers=accept)
        self._check(status, 200, f"fetch {kind[:-1]} {digest[:19]}", body)
        return body

    def _check(self, status: int, expected: int, what: str, body: bytes) -> None:
        if status != expected:
            detail = body.decode(errors="replace")[:200]
            hint = "check the registry's log"
            if status in (401, 403):
                hint = "check credentials (docker login, or $TRITONKIT_REGISTRY_USERNAME and _PASSWORD)"
            raise RegistryError(f"registry {self.ref.host} refused to {what}: HTTP {status} {detail}", hint=hint)


def _credentials(host: str) -> tuple[str | None, str | None]:
    user = os.environ.get("TRITONKIT_REGISTRY_USERNAME")
    if user:
        return user, os.environ.get("TRITONKIT_REGISTRY_PASSWORD", "")
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths = json.loads(config.read_text()).get("auths", {})
    except (OSError, ValueError):
        return None, None
    for key in (host, f"https://{host}", f"http://{host}"):
        entry = auths.get(key)
        if entry and entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
    return None, None


def publish(release: Path, target: str, *, progress: Progress | None = None) -> str:
    """Push the modelcar image of ``release`` and return ``oci://HOST/REPO@sha256:…``.

    Raises:
        UsageError: a malformed reference. RegistryError: the registry refused or is unreachable.
    """

    def report(message: str) -> None:
        emit(progress, Event("publish", target, message))

    ref = Reference.parse(target)
    if ref.digest:
        raise UsageError("publish to a tag or a bare repository, not a digest", hint="e.g. oci://HOST/REPO:v3")
    image = build_image(release)
    registry = _Registry(ref)
    for blob in [*image.layers, image.config]:
        report(f"pushing {blob.digest[:19]} ({len(blob.data) / 1e6:.1f} MB)")
        registry.push_blob(blob)
    report("pushing the manifest")
    pushed = registry.push_manifest(image.manifest, ref.tag or image.digest)
    if pushed and pushed != image.digest:
        raise RegistryError(f"registry stored the manifest as {pushed}, expected {image.digest}")
    return ref.pinned(image.digest)


def pull(reference: str, destination: Path, *, progress: Progress | None = None) -> Path:
    """Fetch ``oci://HOST/REPO@sha256:…`` into ``destination`` (new or empty), verifying every hash.

    Raises:
        UsageError: not pinned by digest, or a non-empty destination.
        VerifyError: a manifest, blob or file that does not match its digest (nothing is left behind).
    """

    def report(message: str) -> None:
        emit(progress, Event("pull", reference, message))

    ref = Reference.parse(reference)
    if not ref.digest:
        raise UsageError(
            f"{reference} is not pinned by digest", hint="pull oci://HOST/REPO@sha256:… (publish prints it)"
        )
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise UsageError(f"{destination} exists and is not empty", hint="pull into a new or empty directory")
    registry = _Registry(ref)
    manifest = registry.get("manifests", ref.digest)
    _expect(manifest, ref.digest, "manifest")
    document = json.loads(manifest)
    layers = document.get("layers", [])
    if len(layers) != 2:
        raise VerifyError(f"{reference} is not a tritonkit modelcar image ({len(layers)} layers)")
    report(f"fetching {layers[1]['digest'][:19]}")
    blob = registry.get("blobs", layers[1]["digest"])
    _expect(blob, layers[1]["digest"], "layer")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
            tar.extractall(staged, filter="data")
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


def _expect(data: bytes, digest: str, what: str) -> None:
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise VerifyError(
            f"{what} digest mismatch: expected {digest}, got {actual}; refusing it",
            hint="the registry's copy was altered or corrupted; publish the release again",
        )
