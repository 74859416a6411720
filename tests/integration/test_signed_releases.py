"""Signed releases: a trust policy refuses what someone with write access to the store rewrote.

The attack these tests replay (issue "a root of trust"): rewrite a release's file and its lock
consistently, delete ``index.json`` and ``index.json.bak``, run ``releases --repair``. Without a
policy the store cannot tell (the chain has no secret); with one, every use refuses it (exit 16).

The formats are checked with a tool nobody here wrote: openssl verifies the blob signature
(cosign's ``verify-blob`` format) and the DSSE signature over the envelope's pre-authentication
encoding (DSSE v1: ``"DSSEv1" SP len(type) SP type SP len(body) SP body``), so the files are what
cosign, in-toto and SLSA verifiers read — not only what our own verifier accepts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.helpers import TINY_SPEC, port_flags, tiny_project, write_add_model
from tritonkit.artifact.hashing import LOCK_FILE, PROVENANCE_FILE, SIGNATURE_FILE
from tritonkit.artifact.layout import make_writable
from tritonkit.artifact.lock import read_lock, write_lock
from tritonkit.cli import main
from tritonkit.errors import TrustError
from tritonkit.events import Event
from tritonkit.release.store import ReleaseStore
from tritonkit.release.trust import TrustPolicy, generate_key, load_signer
from tritonkit.serve.endpoints import Endpoints

SPEC = TINY_SPEC


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    spec = tiny_project(tmp_path / "project")
    result = _run("build", "-f", str(spec), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    return spec.parent


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / "keys" / "release.key"
    return private, generate_key(private)


def _trust(project: Path, public: Path, *, required: bool = True) -> None:
    spec = project / "tritonkit.yaml"
    spec.write_text(SPEC + f"trust:\n  keys: [{public}]\n  required: {str(required).lower()}\n")


def _rewrite(release: Path, new_content: bytes) -> None:
    """The attacker's full rewrite: a model file replaced and the lock written again to match."""
    make_writable(release)
    lock = read_lock(release)
    target = next(release.glob("m/*/model.onnx"))
    target.write_bytes(new_content)
    (release / LOCK_FILE).unlink()
    write_lock(release, lock.repository, lock.models, {})


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "k" / "release.key"
    result = _run("keygen", str(key), "--json")
    assert result.exit_code == 0, result.output
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.with_suffix(".pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE KEY" not in result.output  # the key material is never printed
    again = _run("keygen", str(key))
    assert again.exit_code == 10 and "never overwritten" in again.output


def test_an_encrypted_key_needs_its_password_and_the_error_shows_no_key(tmp_path: Path) -> None:
    key = tmp_path / "release.key"
    generate_key(key, password=b"s3cret pass")
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    with pytest.raises(TrustError) as caught:
        load_signer(key)
    assert "BEGIN" not in caught.value.message and str(key) in caught.value.message
    os.environ["TRITONKIT_KEY_PASSWORD"] = "s3cret pass"
    try:
        assert load_signer(key) is not None
    finally:
        del os.environ["TRITONKIT_KEY_PASSWORD"]


def test_a_signed_release_carries_slsa_provenance_that_existing_tools_verify(
    project: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    spec = project / "tritonkit.yaml"
    _trust(project, public)
    result = _run("release", "-f", str(spec), "--sign-key", str(private), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["signed"] is True and private.read_text() not in result.output
    release = project / "releases" / "v1"
    lock = (release / LOCK_FILE).read_bytes()

    envelope = json.loads((release / PROVENANCE_FILE).read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [{"name": f"v1/{LOCK_FILE}", "digest": {"sha256": hashlib.sha256(lock).hexdigest()}}]
    build = statement["predicate"]["buildDefinition"]
    assert build["externalParameters"]["spec"]["digest"]["sha256"] == hashlib.sha256(spec.read_bytes()).hexdigest()
    assert build["internalParameters"]["lockDigest"] == json.loads(lock)["digest"]
    assert build["internalParameters"]["buildDigest"].startswith("sha256:")
    builder = statement["predicate"]["runDetails"]["builder"]
    assert {"tritonkit", "onnxruntime", "python"} <= set(builder["version"])

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the cross-check with a second verifier needs it")
    work = project.parent
    (work / "lock.sig.der").write_bytes(base64.b64decode((release / SIGNATURE_FILE).read_text()))
    (work / "lock").write_bytes(lock)
    payload_type, body = envelope["payloadType"].encode(), base64.b64decode(envelope["payload"])
    pae = b"DSSEv1 %d %b %d %b" % (len(payload_type), payload_type, len(body), body)
    (work / "pae").write_bytes(pae)
    (work / "pae.sig.der").write_bytes(base64.b64decode(envelope["signatures"][0]["sig"]))
    for data, signature in (("lock", "lock.sig.der"), ("pae", "pae.sig.der")):
        checked = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", str(public), "-signature", signature, data],
            cwd=work, capture_output=True, text=True,
        )  # fmt: skip
        assert checked.returncode == 0 and "Verified OK" in checked.stdout, checked.stdout + checked.stderr


def test_a_full_rewrite_is_readmitted_without_a_policy_and_refused_with_one(
    project: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, public = keys
    spec = str(project / "tritonkit.yaml")
    assert _run("release", "-f", spec, "--sign-key", str(private)).exit_code == 0
    store = project / "releases"
    release = store / "v1"
    evil = tmp_path / "evil.onnx"
    write_add_model(evil, width=4)
    data = evil.read_bytes().replace(b"tritonkit-tests", b"attacker-model!")
    _rewrite(release, data)
    (store / "index.json").unlink()
    (store / "index.json.bak").unlink()

    # Without a policy the rewrite is indistinguishable from a release: repair re-admits it.
    repaired = _run("releases", "-f", spec, "--repair")
    assert repaired.exit_code == 0 and "rebuilt v1 from its lock" in repaired.output, repaired.output
    assert _run("verify", str(release)).exit_code == 0

    # With the spec's trust policy every use refuses it, with one line and exit 16.
    _trust(project, public)
    (store / "index.json").unlink()
    (store / "index.json.bak").unlink()
    refused = _run("releases", "-f", spec, "--repair")
    assert refused.exit_code == 16 and "its lock is not the one that was signed" in refused.output, refused.output
    assert not (store / "index.json").exists()  # nothing re-admitted
    ReleaseStore(store).repair()  # the attacker repairs without the policy …
    for args in (
        ["export", "v1", str(tmp_path / "out"), "-f", spec],
        ["serve", "v1", "-f", spec, *port_flags(Endpoints.allocate())],
        ["verify", str(release), "--trusted-key", str(public)],
    ):
        result = _run(*args)
        assert result.exit_code == 16, (args, result.output)  # … and still nothing uses it
        assert "error:" in result.output and "hint:" in result.output
    assert not (tmp_path / "out").exists()
    env = {"TRITONKIT_TRUSTED_KEYS": str(public)}
    assert _run("verify", str(release), env=env).exit_code == 16  # the environment's policy too

    # Dropping the signature does not help: the policy requires one.
    make_writable(release)
    (release / PROVENANCE_FILE).unlink()
    unsigned = _run("verify", str(release), "--trusted-key", str(public))
    assert unsigned.exit_code == 16 and "is not signed" in unsigned.output

    # Nor does signing it again with the attacker's own key.
    attacker, _ = tmp_path / "attacker.key", generate_key(tmp_path / "attacker.key")
    from tritonkit.release.trust import Provenance, sign

    sign(release, "v1", load_signer(attacker), Provenance())
    forged = _run("verify", str(release), "--trusted-key", str(public))
    assert forged.exit_code == 16 and "not signed by a trusted key" in forged.output


def test_a_signature_copied_from_another_release_is_refused(project: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    spec = project / "tritonkit.yaml"
    assert _run("release", "-f", str(spec), "--sign-key", str(private)).exit_code == 0
    spec.write_text(SPEC.replace("max_batch_size: 8", "max_batch_size: 4"))
    assert _run("build", "-f", str(spec)).exit_code == 0
    assert _run("release", "-f", str(spec)).exit_code == 0  # v2, unsigned
    v1, v2 = project / "releases" / "v1", project / "releases" / "v2"
    make_writable(v2)
    for name in (PROVENANCE_FILE, SIGNATURE_FILE):
        shutil.copy(v1 / name, v2 / name)
    policy = TrustPolicy.from_keys([public])
    assert policy.enforce(v1, release="v1") is not None
    with pytest.raises(TrustError, match="its lock is not the one that was signed"):
        policy.enforce(v2, release="v2")


def test_a_policy_that_requires_signatures_refuses_an_unsigned_release_and_records_nothing(
    project: Path, keys: tuple[Path, Path]
) -> None:
    _, public = keys
    _trust(project, public)
    result = _run("release", "-f", str(project / "tritonkit.yaml"))
    assert result.exit_code == 16 and "requires signed releases" in result.output
    assert not (project / "releases" / "v1").exists()


def test_an_optional_policy_accepts_unsigned_releases_but_not_a_wrong_signature(
    project: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    _, public = keys
    other = generate_key(tmp_path / "other.key")
    _trust(project, public, required=False)
    spec = str(project / "tritonkit.yaml")
    assert _run("release", "-f", spec).exit_code == 0  # unsigned, accepted …
    assert _run("export", "v1", str(tmp_path / "a"), "-f", spec).exit_code == 0
    spec_path = project / "tritonkit.yaml"
    spec_path.write_text(spec_path.read_text().replace("max_batch_size: 8", "max_batch_size: 2"))
    assert _run("build", "-f", spec).exit_code == 0
    signed_by_other = _run("release", "-f", spec, "--sign-key", str(tmp_path / "other.key"))
    assert signed_by_other.exit_code == 16 and "not signed by a trusted key" in signed_by_other.output
    assert not (project / "releases" / "v2").exists()  # … a wrong signature is not
    assert other.is_file()


def _publish_signed(project: Path, keys: tuple[Path, Path], host: str, *, sign: bool = True) -> str:
    spec = str(project / "tritonkit.yaml")
    released = _run("release", "-f", spec, *(["--sign-key", str(keys[0])] if sign else []))
    assert released.exit_code == 0, released.output
    published = _run("publish", "v1", f"oci://{host}/signed/t:v1", "-f", spec, "--json")
    assert published.exit_code == 0, published.output
    return str(json.loads(published.stdout)["reference"])


def test_publish_attaches_the_provenance_and_pull_checks_it_before_downloading(
    registry: tuple[str, Path], project: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    from tritonkit.release.oci import pull
    from tritonkit.release.registry import Reference, Registry

    host, _ = registry
    _, public = keys
    reference = _publish_signed(project, keys, host)
    digest = Reference.parse(reference).digest
    assert digest is not None
    # docker-registry 2.8 has no referrers API: the attachment is under cosign's tag scheme.
    with urllib.request.urlopen(
        urllib.request.Request(
            f"http://{host}/v2/signed/t/manifests/{digest.replace(':', '-')}.att",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
    ) as response:
        attached = json.loads(response.read())
    assert attached["subject"]["digest"] == digest
    assert attached["layers"][0]["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    envelope = Registry(Reference.parse(reference)).get_verified("blobs", attached["layers"][0]["digest"], "envelope")
    assert envelope == (project / "releases" / "v1" / PROVENANCE_FILE).read_bytes()

    good = _run("pull", reference, str(tmp_path / "good"), "--trusted-key", str(public))
    assert good.exit_code == 0 and "and its signature" in good.output, good.output
    assert _run("verify", str(tmp_path / "good"), "--trusted-key", str(public)).exit_code == 0

    stranger = generate_key(tmp_path / "stranger.key")
    events: list[Event] = []
    with pytest.raises(TrustError, match="not signed by a trusted key"):
        pull(reference, tmp_path / "bad", progress=events.append, trust=TrustPolicy.from_keys([stranger]))
    assert not [e for e in events if e.unit == "bytes"]  # refused before any layer was downloaded
    refused = _run("pull", reference, str(tmp_path / "bad"), "--trusted-key", str(stranger))
    assert refused.exit_code == 16 and "hint:" in refused.output
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bad")] == []


def test_pull_under_a_policy_refuses_an_image_without_provenance(
    registry: tuple[str, Path], project: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    host, _ = registry
    reference = _publish_signed(project, keys, host, sign=False)
    assert _run("pull", reference, str(tmp_path / "plain")).exit_code == 0  # no policy: as before
    env = {"TRITONKIT_TRUSTED_KEYS": str(keys[1])}
    refused = _run("pull", reference, str(tmp_path / "refused"), env=env)
    assert refused.exit_code == 16 and "no signed provenance attached" in refused.output, refused.output
    assert not (tmp_path / "refused").exists()


def test_the_same_release_signed_twice_is_two_images_not_a_stale_layer(
    registry: tuple[str, Path], project: Path, keys: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """publish remembers a models layer's digest by the lock digest and file sizes; the signature
    files are not in the lock and a fresh signature has the same size, so they must be keyed by
    content (found when two tests published the same build signed by two keys)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    host, _ = registry
    twin = tmp_path / "twin"
    shutil.copytree(project, twin, ignore=shutil.ignore_patterns("releases"))
    first = _publish_signed(project, keys, host)
    other = (tmp_path / "other.key", generate_key(tmp_path / "other.key"))
    second = _publish_signed(twin, other, host)
    assert first != second
    assert _run("pull", second, str(tmp_path / "second"), "--trusted-key", str(other[1])).exit_code == 0
