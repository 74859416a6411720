"""The OCI distribution API, as much of it as publish and pull need: streamed, chunked, verified.

Owns references (``oci://HOST/REPO[:TAG][@sha256:…]``), authentication and the HTTP calls.
Memory stays flat whatever the blob size: an upload is sent as ``POST`` → ``PATCH`` chunks of
``chunk_size`` bytes → ``PUT ?digest=`` (the OCI distribution spec's chunked upload), and a
download is read through :class:`BlobReader`, which hashes and counts as it goes and refuses a
blob that is longer than its descriptor or does not match its digest (:class:`RegistryError`).

Authentication answers the registry's ``WWW-Authenticate`` challenge: Basic with credentials
from ``$TRITONKIT_REGISTRY_USERNAME`` / ``$TRITONKIT_REGISTRY_PASSWORD`` or the Docker config;
Bearer by asking the challenge's ``realm`` for a token for its ``service`` and ``scope`` — with
those credentials when there are any, anonymously otherwise (public registries hand anonymous
pull tokens). Credentials are never logged, never sent over plain HTTP to a non-loopback host,
and never follow a redirect (blob downloads are often redirected to a CDN that refuses them).

Example:
    >>> registry = Registry(Reference.parse("oci://127.0.0.1:5000/demo:v1"))
    >>> registry.has_blob("sha256:…")
    False
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any

from tritonkit.errors import RegistryError, UsageError, mask_credentials

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CHUNK = 32 << 20
"""Bytes per ``PATCH`` request: the memory an upload holds at once."""
_READ = 1 << 20
_TIMEOUT = 300  # per socket operation, not per request: a chunk is small, a registry can be slow
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_DOCUMENT_LIMIT = 4 << 20  # a manifest is a few kB; refuse to buffer more
_REF = re.compile(
    r"^oci://(?P<host>[^/]+)/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>\w[\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_CREDENTIALS_HINT = "check credentials (docker login, or $TRITONKIT_REGISTRY_USERNAME and _PASSWORD)"
_TAMPERED_HINT = "the registry's copy was altered or corrupted; publish the release again"


@dataclass(frozen=True)
class Reference:
    """``oci://HOST/REPO[:TAG][@sha256:…]``."""

    host: str
    repo: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse an ``oci://`` reference.

        Raises:
            UsageError: credentials inside it (refused without echoing them), or anything else.
        """
        if re.search(r"@(?!sha256:[0-9a-f]{64}$)", text):  # any '@' but the digest's: a user part
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


def _loopback(netloc: str) -> bool:
    """Whether ``HOST[:PORT]`` names this machine (spoken to over plain HTTP)."""
    return urllib.parse.urlsplit(f"//{netloc}").hostname in _LOOPBACK


class BlobReader:
    """A blob as a file-like stream that hashes and counts what it hands out.

    Call :meth:`finish` after the last read: it reads what is left and raises
    :class:`RegistryError` unless the bytes match the descriptor's digest and size.
    """

    def __init__(
        self, stream: IO[bytes], digest: str, size: int, what: str, progress: Callable[[int], None] | None = None
    ) -> None:
        self._stream, self.digest, self.size, self.what = stream, digest, size, what
        self._hash = hashlib.sha256()
        self._progress = progress
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._stream.read(_READ if n is None or n < 0 else n)
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(
                f"the download of {self.what} {self.digest[:19]}… broke off after {self.done} bytes ({exc!r})",
                hint="pull again; nothing was kept",
            ) from exc
        if len(data) + self.done > self.size:
            raise RegistryError(
                f"{self.what} {self.digest[:19]}… is longer than its descriptor's {self.size} bytes; refusing it",
                hint=_TAMPERED_HINT,
            )
        self._hash.update(data)
        self.done += len(data)
        if self._progress is not None:
            self._progress(self.done)
        return data

    def finish(self) -> None:
        """Drain the stream and check digest and size."""
        while self.read(_READ):
            pass
        if self.done < self.size:  # http.client reports a connection closed early as a short read
            raise RegistryError(
                f"the download of {self.what} {self.digest[:19]}… broke off after {self.done} of {self.size} bytes",
                hint="pull again; nothing was kept",
            )
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest or self.done != self.size:
            raise _mismatch(self.what, self.digest, self.size, actual, self.done)


class Registry:
    """One repository of one registry, over urllib, authenticating on the first 401."""

    def __init__(self, ref: Reference, *, chunk_size: int = CHUNK) -> None:
        self.ref = ref
        self.base = f"{'http' if _loopback(ref.host) else 'https'}://{ref.host}/v2/{ref.repo}"
        self.chunk_size = chunk_size
        self._authorization: str | None = None

    # ------------------------------------------------------------------ requests

    def _open(
        self, method: str, url: str, data: bytes | bytearray | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Message, IO[bytes]]:
        """Send one request; returns status, headers and the (open) body. The caller closes it."""
        for attempt in range(2):
            request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
            if self._authorization:
                request.add_unredirected_header("Authorization", self._authorization)
            try:
                response = urllib.request.urlopen(request, timeout=_TIMEOUT)
                return response.status, response.headers, response
            except urllib.error.HTTPError as exc:
                if exc.code != 401 or attempt == 1:
                    return exc.code, exc.headers, exc
                with exc:  # read and close before asking for a token: no socket left open
                    refusal = exc.read(1 << 16)
                if not self._authenticate(exc.headers.get("WWW-Authenticate", "")):
                    return exc.code, exc.headers, io.BytesIO(refusal)
            except OSError as exc:
                raise RegistryError(
                    f"cannot reach the registry {self.ref.host}: {exc}", hint="check the host, port and network"
                ) from exc
        raise AssertionError("unreachable")

    def _call(
        self, method: str, url: str, data: bytes | bytearray | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Message, bytes]:
        status, response_headers, body = self._open(method, url, data, headers)
        with body:
            return status, response_headers, body.read(1 << 16) if method != "HEAD" else b""

    def _authenticate(self, challenge: str) -> bool:
        scheme, _, params = challenge.partition(" ")
        user, password = _credentials(self.ref.host)
        basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user is not None else None
        if scheme.lower() == "basic":
            if basic is None:
                return False
            self._authorization = basic
            return True
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme.lower() != "bearer" or "realm" not in fields:
            return False
        realm = urllib.parse.urlsplit(fields["realm"])
        if basic is not None and realm.scheme != "https" and not _loopback(realm.netloc):
            basic = None  # never send a password in clear text; an anonymous token may still do
        query = {key: fields[key] for key in ("service", "scope") if key in fields}
        query.setdefault("scope", f"repository:{self.ref.repo}:pull")
        request = urllib.request.Request(f"{fields['realm']}?{urllib.parse.urlencode(query)}")
        if basic:  # unredirected: a token service that redirects never passes the password on
            request.add_unredirected_header("Authorization", basic)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                document = json.loads(response.read(1 << 20))
        except urllib.error.HTTPError as exc:
            exc.close()
            who = f"as {user}" if basic else "anonymously"
            raise RegistryError(
                f"token service {realm.netloc} refused a token for {query['scope']} {who}: HTTP {exc.code}",
                hint=_CREDENTIALS_HINT,
            ) from exc
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"cannot get a token from {realm.netloc}: {exc}", hint="check the network and the registry's status"
            ) from exc
        token = document.get("token") or document.get("access_token") if isinstance(document, dict) else None
        if not token:
            return False
        self._authorization = f"Bearer {token}"
        return True

    def _check(self, status: int, expected: int, what: str, body: bytes) -> None:
        if status != expected:
            detail = " ".join(body.decode(errors="replace").split())[:200]  # one line, whatever the body
            hint = _CREDENTIALS_HINT if status in (401, 403) else "check the registry's log"
            raise RegistryError(f"registry {self.ref.host} refused to {what}: HTTP {status} {detail}", hint=hint)

    # ------------------------------------------------------------------ blobs and manifests

    def has_blob(self, digest: str) -> bool:
        """Whether the registry already holds ``digest`` in this repository (``HEAD``)."""
        status, _, _ = self._call("HEAD", f"{self.base}/blobs/{digest}")
        return status == 200

    def upload(
        self,
        produce: Callable[[Callable[[bytes], None]], object],
        *,
        digest: str | None = None,
        size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[str, int]:
        """Upload a blob in chunks: ``produce(sink)`` writes its bytes to ``sink``.

        Args:
            produce: writes the blob, in pieces, to the sink it is given.
            digest: the blob's digest when known; else it is computed from the bytes as they
                are sent (one pass over them instead of two).
            size: the blob's size when known (checked).
            progress: called with the bytes sent so far after each chunk.

        Returns:
            The digest and size the registry accepted.

        Raises:
            RegistryError: the registry refused a step, or the bytes are not ``digest``/``size``.
        """
        status, headers, body = self._call("POST", f"{self.base}/blobs/uploads/", data=b"")
        self._check(status, 202, "start a blob upload", body)
        location = urllib.parse.urljoin(self.base, headers.get("Location", ""))
        hashing = hashlib.sha256() if digest is None else None
        buffer = bytearray()
        offset = 0

        def flush() -> None:
            nonlocal location, offset
            if not buffer:
                return
            status, headers, body = self._call(
                "PATCH",
                location,
                data=buffer,  # sent as it is: no copy of the chunk
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(buffer) - 1}",
                },
            )
            self._check(status, 202, f"take bytes {offset}… of a blob", body)
            location = urllib.parse.urljoin(self.base, headers.get("Location", location))
            offset += len(buffer)
            buffer.clear()
            if progress is not None:
                progress(offset)

        def sink(data: bytes) -> None:
            if hashing is not None:
                hashing.update(data)
            buffer.extend(data)
            if len(buffer) >= self.chunk_size:
                flush()

        produce(sink)
        flush()
        if hashing is not None:
            digest = "sha256:" + hashing.hexdigest()
        assert digest is not None
        if size is not None and offset != size:
            raise RegistryError(
                f"{digest[:19]}… came out as {offset} bytes, not {size}: its files changed while publishing",
                hint="publish again; a release is read-only and should not change",
            )
        separator = "&" if "?" in location else "?"
        status, _, body = self._call("PUT", f"{location}{separator}digest={digest}", data=b"")
        self._check(status, 201, f"take {digest[:19]}…", body)
        return digest, offset

    def push_manifest(self, manifest: bytes, tag: str) -> str:
        """``PUT`` the manifest under ``tag``; returns the digest the registry reports."""
        status, headers, body = self._call(
            "PUT", f"{self.base}/manifests/{tag}", data=manifest, headers={"Content-Type": MANIFEST_TYPE}
        )
        self._check(status, 201, "push the manifest", body)
        return headers.get("Docker-Content-Digest", "")

    def push_referrer(self, manifest: bytes, subject: str) -> str:
        """Push ``manifest`` (one whose ``subject`` is the image ``subject``) where clients find it:
        by digest when the registry supports OCI 1.1's referrers API (it answers with an
        ``OCI-Subject`` header), else also under cosign's tag scheme ``sha256-<hex>.att``.

        Returns:
            ``"referrers"`` or the tag it was pushed under.
        """
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        status, headers, body = self._call(
            "PUT", f"{self.base}/manifests/{digest}", data=manifest, headers={"Content-Type": MANIFEST_TYPE}
        )
        self._check(status, 201, "push the provenance manifest", body)
        if headers.get("OCI-Subject"):
            return "referrers"
        tag = attachment_tag(subject)
        self.push_manifest(manifest, tag)
        return tag

    def find_referrer(self, subject: str, artifact_type: str) -> bytes | None:
        """The manifest of an artifact of ``artifact_type`` attached to ``subject`` (referrers API,
        then the ``sha256-<hex>.att`` tag), or None when there is none. Its bytes are checked
        against the digest the referrers index names; a tag's are not pinned (the caller checks
        the content's signature and its ``subject``)."""
        status, _, body = self._call(
            "GET", f"{self.base}/referrers/{subject}?artifactType={urllib.parse.quote(artifact_type)}",
            headers={"Accept": INDEX_TYPE},
        )  # fmt: skip
        if status == 200:
            try:
                found = [m for m in json.loads(body)["manifests"] if m.get("artifactType") == artifact_type]
            except (ValueError, KeyError, TypeError):
                found = []
            if found:
                return self.get_verified("manifests", found[-1]["digest"], "provenance manifest")
        status, _, body = self._call(
            "GET", f"{self.base}/manifests/{attachment_tag(subject)}", headers={"Accept": MANIFEST_TYPE}
        )
        if status == 404:
            return None
        self._check(status, 200, "serve the provenance manifest", body)
        return body

    def get_verified(self, kind: str, digest: str, what: str, size: int | None = None) -> bytes:
        """A small document (a manifest, an image config) checked against ``digest`` and ``size``.

        Raises:
            RegistryError: refused, or other bytes than ``digest`` (a tampered or corrupted copy).
        """
        accept = {"Accept": MANIFEST_TYPE} if kind == "manifests" else {}
        status, _, body = self._open("GET", f"{self.base}/{kind}/{digest}", headers=accept)
        with body:
            if status != 200:
                self._check(status, 200, f"serve {what} {digest[:19]}…", body.read(1 << 16))
            try:
                data = body.read((size if size is not None else _DOCUMENT_LIMIT) + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise RegistryError(
                    f"the download of {what} {digest[:19]}… broke off ({exc!r})", hint="pull again"
                ) from exc
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest or (size is not None and len(data) != size):
            raise _mismatch(what, digest, size, actual, len(data))
        return data

    def open_blob(
        self, digest: str, size: int, what: str, progress: Callable[[int], None] | None = None
    ) -> tuple[BlobReader, IO[bytes]]:
        """Start downloading a blob; returns the verifying reader and the body to close."""
        status, _, body = self._open("GET", f"{self.base}/blobs/{digest}")
        if status != 200:
            with body:
                self._check(status, 200, f"serve {what} {digest[:19]}…", body.read(1 << 16))
        return BlobReader(body, digest, size, what, progress), body


def attachment_tag(subject: str) -> str:
    """cosign's tag for what is attached to image ``subject``: ``sha256-<hex>.att``."""
    return subject.replace(":", "-") + ".att"


def _mismatch(what: str, digest: str, size: int | None, actual: str, got: int) -> RegistryError:
    expected = f"{digest} ({size} bytes)" if size is not None else digest
    return RegistryError(
        f"{what} digest mismatch: expected {expected}, the registry served {actual} ({got} bytes); refusing it",
        hint=_TAMPERED_HINT,
    )


def _credentials(host: str) -> tuple[str | None, str | None]:
    user = os.environ.get("TRITONKIT_REGISTRY_USERNAME")
    if user:
        return user, os.environ.get("TRITONKIT_REGISTRY_PASSWORD", "")
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths: dict[str, Any] = json.loads(config.read_text()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None, None
    for key in (host, f"https://{host}", f"http://{host}"):
        entry = auths.get(key)
        if entry and entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
    return None, None
