"""Signed releases: a root of trust that someone with write access to the store cannot forge.

The release index's hash chain and the locks catch damage and careless edits, but an attacker who
can write the store can rewrite a file, its lock and the index consistently. A signature made with
a key that attacker does not hold cannot be rewritten. ``tritonkit release --sign-key`` signs each
new release; a **trust policy** (the spec's ``trust:`` section or ``$TRITONKIT_TRUSTED_KEYS``) makes
every use of a release (verify, serve, promote, export, publish, pull) refuse one that is unsigned or
signed by a key the policy does not list.

What is signed, and in which format (chosen so that tools people already run can check it):

- ``tritonkit.provenance.json`` at the root of the release: a DSSE envelope (payload type
  ``application/vnd.in-toto+json``) holding an in-toto Statement v1 whose predicate is SLSA
  Provenance v1 — the format of ``cosign attest`` / ``cosign verify-blob-attestation``, in-toto and
  the SLSA verifiers. Its one subject is the release's lock, named ``vN/tritonkit.lock.json`` with
  the SHA-256 of the lock's bytes; the lock lists every file's SHA-256 and the repository digest,
  so signing the lock signs the tree, and the name binds the signature to that release number.
  The predicate records the spec's digest, the source commit (when the spec is in a git work
  tree), the builder and tool versions, and when the build and the release were made.
- ``tritonkit.lock.sig``: the lock's bytes signed with the same key, base64 (cosign's blob
  signature format: ``cosign verify-blob --key tritonkit.pub --signature tritonkit.lock.sig
  tritonkit.lock.json``; for ECDSA keys ``openssl dgst -sha256 -verify`` checks the decoded bytes).

Both files sit beside the lock and are not listed in it (they sign it), so the repository digest
does not change when a release is signed, and every copy (``export``, ``live/``, the published
image, ``pull``) carries its own proof.

Keys are ECDSA P-256 (cosign's default key type) in PEM: the private key PKCS#8, encrypted with
``$TRITONKIT_KEY_PASSWORD`` when it is set, and the public key as SubjectPublicKeyInfo (the format
of ``cosign.pub``). Ed25519 keys made elsewhere are accepted. A private key is read only to sign:
it is never printed, never written to ``--json``, and never passed to Triton or a model stub.

The DSSE envelope and the key handling are securesystemslib's (the library in-toto and TUF build
on), over ``cryptography``'s primitives: nothing here implements a signature scheme.

Example:
    >>> public = generate_key(Path("release.key"))
    >>> policy = TrustPolicy.from_keys([public])
    >>> policy.enforce(Path("releases/v3"), release="v3").keyid[:8]
    '5c1d0e…'
"""

from __future__ import annotations

import base64
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonkit.artifact.hashing import LOCK_FILE, PROVENANCE_FILE, SIGNATURE_FILE, sha256_bytes
from tritonkit.errors import TrustError, UsageError

if TYPE_CHECKING:
    from securesystemslib.signer import Key, Signer

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:tritonkit:release:v1"
BUILDER_ID = "urn:tritonkit:builder:local"
TRUSTED_KEYS_ENV = "TRITONKIT_TRUSTED_KEYS"
SIGNING_KEY_ENV = "TRITONKIT_SIGNING_KEY"
PASSWORD_ENV = "TRITONKIT_KEY_PASSWORD"
# What the provenance reports as the tools the release was built with (those installed).
_TOOLS = ("tritonkit", "onnx", "onnxruntime", "torch", "transformers", "tritonclient", "nvidia-pytriton", "tensorrt")
_POLICY_HINT = "release it again with 'tritonkit release --sign-key KEY' (a key the trust policy lists)"


def generate_key(private: Path, *, password: bytes | None = None) -> Path:
    """Write a new ECDSA P-256 key pair: ``private`` (PKCS#8 PEM, mode 0600, encrypted with
    ``password`` when given) and ``private`` with suffix ``.pub`` (SubjectPublicKeyInfo PEM).

    Returns:
        The public key's path.

    Raises:
        UsageError: either file exists already (a key is never overwritten).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = private.with_suffix(".pub")
    for path in (private, public):
        if path.exists():
            raise UsageError(f"{path} exists; a key is never overwritten", hint="choose another path")
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    private.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public


def load_signer(path: Path) -> Signer:
    """The signer for the private key at ``path`` (password from ``$TRITONKIT_KEY_PASSWORD``).

    Raises:
        TrustError: the file is missing, not a private key, or the password is wrong or missing.
            The message names the file, never its content.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    password = os.environ.get(PASSWORD_ENV)
    try:
        key = load_pem_private_key(path.read_bytes(), password.encode() if password else None)
        return CryptoSigner(key)  # type: ignore[arg-type]
    except FileNotFoundError:
        raise TrustError(f"signing key {path} not found", hint="create one with 'tritonkit keygen KEY'") from None
    except (ValueError, TypeError) as exc:
        reason = "needs a password" if "encrypted" in str(exc).lower() or "password" in str(exc).lower() else None
        raise TrustError(
            f"{path} is not a usable private key ({reason or 'unreadable, wrong password, or an unsupported type'})",
            hint=f"pass a PEM private key made by 'tritonkit keygen' (password in ${PASSWORD_ENV})",
        ) from None


def load_public_key(path: Path) -> Key:
    """The verification key in the PEM public key at ``path``.

    Raises:
        TrustError: missing or not a public key (ECDSA P-256 or Ed25519).
    """
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    try:
        return SSlibKey.from_crypto(load_pem_public_key(path.read_bytes()))
    except FileNotFoundError:
        raise TrustError(f"trusted key {path} not found", hint="list the signing key's public key (.pub)") from None
    except (ValueError, TypeError) as exc:
        raise TrustError(
            f"{path} is not a supported public key ({exc})",
            hint="list a PEM public key: ECDSA P-256 (tritonkit keygen, cosign generate-key-pair) or Ed25519",
        ) from None


@dataclass(frozen=True)
class Provenance:
    """What the provenance statement says about how a release was made (besides its lock)."""

    spec: Path | None = None  # the spec file the build came from, when known
    build_digest: str = ""  # the lock digest of the build the release was copied from
    built_on: str = ""  # when that build was made (ISO 8601); "" when unknown

    def predicate(self, release: str, lock_digest: str, now: datetime) -> dict[str, Any]:
        """The SLSA Provenance v1 predicate."""
        external: dict[str, Any] = {"release": release}
        dependencies: list[dict[str, Any]] = []
        if self.spec is not None and self.spec.is_file():
            external["spec"] = {"path": self.spec.name, "digest": {"sha256": sha256_bytes(self.spec.read_bytes())}}
            commit = _git_commit(self.spec.resolve().parent)
            if commit is not None:
                dependencies.append(commit)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {"lockDigest": lock_digest, "buildDigest": self.build_digest},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": _tool_versions()},
                "metadata": {"startedOn": self.built_on or stamp, "finishedOn": stamp},
            },
        }


def sign(tree: Path, release: str, signer: Signer, provenance: Provenance) -> None:
    """Write ``tritonkit.provenance.json`` and ``tritonkit.lock.sig`` into the writable ``tree``
    (a release being staged), signing its lock as release ``release`` (``"v3"``)."""
    from securesystemslib.dsse import Envelope

    lock = (tree / LOCK_FILE).read_bytes()
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{release}/{LOCK_FILE}", "digest": {"sha256": sha256_bytes(lock)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": provenance.predicate(release, json.loads(lock)["digest"], datetime.now(UTC)),
    }
    envelope = Envelope(json.dumps(statement, sort_keys=True).encode(), PAYLOAD_TYPE, {})
    envelope.sign(signer)
    (tree / PROVENANCE_FILE).write_text(json.dumps(envelope.to_dict(), indent=2, sort_keys=True) + "\n")
    blob = bytes.fromhex(signer.sign(lock).signature)
    (tree / SIGNATURE_FILE).write_text(base64.b64encode(blob).decode() + "\n")


@dataclass(frozen=True)
class Signed:
    """A release whose signature a trusted key verified."""

    release: str  # the name the signature binds ("v3")
    keyid: str
    statement: dict[str, Any]


@dataclass(frozen=True)
class TrustPolicy:
    """Which public keys may sign releases, and whether an unsigned release is refused.

    ``required`` (the default) refuses an unsigned release; without it, an unsigned release is
    accepted but a signed one must still verify against a listed key.
    """

    keys: tuple[Path, ...]
    required: bool = True
    _loaded: list[Key] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_keys(cls, keys: list[Path], *, required: bool = True) -> TrustPolicy:
        return cls(tuple(keys), required)

    def verification_keys(self) -> list[Key]:
        if not self._loaded:
            self._loaded.extend(load_public_key(path) for path in self.keys)
        return self._loaded

    def enforce(self, tree: Path, *, release: str | None, subject: str | None = None) -> Signed | None:
        """Verify the signature of the repository at ``tree``.

        Args:
            tree: a release (or a copy of one: export, live/, a pulled image).
            release: the release it must be (``"v3"``); None accepts whichever release it says.
            subject: how messages name it (default: the path).

        Returns:
            What verified, or None for an unsigned tree under a policy that does not require one.

        Raises:
            TrustError: unsigned (when required), signed by no listed key, the signature does not
                cover this lock, or it names another release.
        """
        what = subject or str(tree)
        envelope_path = tree / PROVENANCE_FILE
        if not envelope_path.is_file():
            if not self.required:
                return None
            raise TrustError(f"{what} is not signed (the trust policy requires a signature)", hint=_POLICY_HINT)
        signed, digest = self.verify_envelope(envelope_path.read_bytes(), what=what)
        lock = tree / LOCK_FILE
        actual = sha256_bytes(lock.read_bytes()) if lock.is_file() else "(no lock)"
        if actual != digest:
            raise TrustError(
                f"{what}: its lock is not the one that was signed (sha256 {actual[:12]}… != signed {digest[:12]}…)",
                hint="the release was rewritten after it was signed; restore it from a trusted copy",
            )
        if release is not None and signed.release != release:
            raise TrustError(
                f"{what}: the signature is {signed.release}'s, not {release}'s",
                hint="a signature was copied from another release; restore the release from a trusted copy",
            )
        return signed

    def verify_envelope(self, data: bytes, *, what: str) -> tuple[Signed, str]:
        """Check a provenance envelope's signature against the listed keys.

        Returns:
            What verified, and the SHA-256 (hex) of the lock it signs.

        Raises:
            TrustError: unreadable, not a statement about one lock, or signed by no listed key.
        """
        from securesystemslib.dsse import Envelope
        from securesystemslib.exceptions import VerificationError

        try:
            envelope = Envelope.from_dict(json.loads(data))
            statement = json.loads(envelope.payload)
            subjects = statement["subject"]
            if envelope.payload_type != PAYLOAD_TYPE or statement["_type"] != STATEMENT_TYPE or len(subjects) != 1:
                raise ValueError("not an in-toto statement about one lock")
            named, digest = subjects[0]["name"], subjects[0]["digest"]["sha256"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrustError(f"{what}: its {PROVENANCE_FILE} is unreadable ({exc})", hint=_POLICY_HINT) from None
        try:
            verified = envelope.verify(self.verification_keys(), 1)
        except VerificationError:
            listed = ", ".join(str(p) for p in self.keys)
            raise TrustError(
                f"{what} is not signed by a trusted key (policy: {listed})",
                hint="it was signed by another key or altered after signing; restore it or release it again",
            ) from None
        name = str(named).removesuffix(f"/{LOCK_FILE}")
        return Signed(release=name, keyid=next(iter(verified)), statement=statement), str(digest)


def policy_from(keys: list[Path], required: bool = True) -> TrustPolicy | None:
    """The policy over ``keys`` plus those in ``$TRITONKIT_TRUSTED_KEYS`` (paths separated by
    ``os.pathsep``; a key there makes a signature required); None when no key is listed."""
    from_env = [Path(p) for p in os.environ.get(TRUSTED_KEYS_ENV, "").split(os.pathsep) if p.strip()]
    if not keys and not from_env:
        return None
    return TrustPolicy.from_keys([*keys, *from_env], required=required or bool(from_env))


def _tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git_commit(directory: Path) -> dict[str, Any] | None:
    """The work tree's HEAD as a SLSA resource descriptor (``dirty`` when it has changes), or None."""
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"uri": f"git+file://{directory}", "digest": {"gitCommit": head}, "annotations": {"dirty": bool(changes)}}
