"""Signed provenance attached to a published image, and checked before a pull downloads it.

``publish`` of a signed release (:mod:`tritonkit.release.trust`) attaches the release's DSSE
envelope to the image as an OCI artifact whose ``subject`` is the image: indexed by the referrers
API where the registry has OCI 1.1's, tagged ``sha256-<hex>.att`` (cosign's scheme) where it does
not (Debian's docker-registry 2.8). ``pull`` under a trust policy finds it, checks its signature
and reads the SHA-256 of the lock it signs before any layer is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tritonkit.artifact.hashing import sha256_bytes
from tritonkit.errors import TrustError
from tritonkit.release.registry import MANIFEST_TYPE, Registry
from tritonkit.release.trust import PREDICATE_TYPE, TrustPolicy

# The provenance artifact attached to an image: an in-toto attestation in a DSSE envelope (the
# layer type cosign attest uses), over OCI 1.1's empty config.
ATTESTATION_TYPE = "application/vnd.in-toto+json"
DSSE_TYPE = "application/vnd.dsse.envelope.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
REPUBLISH = "the image or its attachment was altered; publish the signed release again"


def attach(registry: Registry, image: str, size: int, envelope: bytes, push_blob: Callable[[bytes], None]) -> str:
    """Push ``envelope`` as an artifact whose subject is the image manifest ``image`` (``size``
    bytes), its blobs through ``push_blob``; returns where it went (:meth:`Registry.push_referrer`)."""
    empty = b"{}"
    for blob in (empty, envelope):
        push_blob(blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": ATTESTATION_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": "sha256:" + sha256_bytes(empty), "size": len(empty)},
        "layers": [
            {
                "mediaType": DSSE_TYPE,
                "digest": "sha256:" + sha256_bytes(envelope),
                "size": len(envelope),
                "annotations": {"predicateType": PREDICATE_TYPE},
            }
        ],
        "subject": {"mediaType": MANIFEST_TYPE, "digest": image, "size": size},
    }
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return registry.push_referrer(text, image)


def signed_lock_digest(registry: Registry, digest: str, trust: TrustPolicy, reference: str) -> str | None:
    """The SHA-256 of the lock the image's attached provenance signs, after checking its
    signature (None when nothing is attached and the policy does not require a signature).

    Raises:
        TrustError: no provenance attached (when required), or not signed by a listed key.
    """
    manifest = registry.find_referrer(digest, ATTESTATION_TYPE)
    if manifest is None:
        if not trust.required:
            return None
        raise TrustError(
            f"{reference} has no signed provenance attached (the trust policy requires one)",
            hint="publish a signed release ('tritonkit release --sign-key KEY', then 'tritonkit publish')",
        )
    try:
        document = json.loads(manifest)
        layer = document["layers"][0]
        if document["subject"]["digest"] != digest or layer["mediaType"] != DSSE_TYPE:
            raise ValueError("not this image's provenance")
        envelope = registry.get_verified("blobs", layer["digest"], "provenance", int(layer["size"]))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise TrustError(f"{reference}: the attached provenance is unreadable ({exc})", hint=REPUBLISH) from exc
    _, lock_sha256 = trust.verify_envelope(envelope, what=reference)
    return lock_sha256
