"""Numbered, immutable releases of built repositories, kept in a release store.

A release ``vN`` is a copy of a verified build in which every model's Triton version directory
is ``N`` — so ``model_version`` in responses and Triton's metrics say which release answered.
It has its own lock and digest, is read-only, and never changes. The store is a directory
(default ``releases/`` beside the spec; ``--store`` or ``$TRITONKIT_STORE``)::

    releases/
      index.json     every release: number, digest, build digest, created, per-model hashes
      index.json.bak the same document, written after it (what ``repair`` restores from)
      published.jsonl  where each release was pushed (oci://…@sha256: references), append-only
      v1/  v2/ ...   read-only repositories (tritonkit.lock.json at the root of each)

Releasing a build that is already a release is a no-op that names that release. ``index.json``
is rewritten atomically under an exclusive lock, and only ever grows: it is a hash chain, each
entry carrying the hash of the one before (``previous``) and the document the hash of the last
(``head``), so an edited, removed or reordered entry is refused on every read. Every use of a
release (:meth:`ReleaseStore.path`: serve, export, promote, publish, status, verify) compares the
release's lock digest with its index entry; the callers then re-hash the tree against the lock.
The chain has no secret: it catches edits and damage, not someone who rewrites the whole chain.
That is what a signature is for: a store opened with a trust policy (:mod:`tritonkit.release.trust`)
also checks, on every use and in ``repair``, that the release was signed by a key the policy lists.

Example:
    >>> store = ReleaseStore(Path("releases"))
    >>> release, created = store.create(Path("dist/demo"))
    >>> release.name, release.changed
    ('v1', ['classifier', 'postprocess'])

Length: about 470 lines, kept in one file on purpose: the index's hash chain, its repair, the
operations that append to it (create, export) and the signature check every use goes through
must agree on one format.

Length: about 470 lines: one class whose every method shares the store's lock, its index
(with its backup) and its trust policy — numbering, adding, repair and verification read best
together; the OCI side is ``oci.py``, layers ``layers.py``, signing ``attest.py`` and ``trust.py``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tritonkit.artifact.hashing import LOCK_FILE, PROVENANCE_FILE, SIGNATURE_FILE, hash_json
from tritonkit.artifact.layout import make_writable, remove_abandoned, remove_tree, scratch_dir, seal
from tritonkit.artifact.lock import Lock, read_lock, write_lock
from tritonkit.build.verify import require_verified
from tritonkit.errors import TrustError, UsageError, VerifyError
from tritonkit.release.trust import Provenance, TrustPolicy, sign

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

INDEX = "index.json"
BACKUP = "index.json.bak"
_REPAIR_HINT = (
    "the index is never edited by hand; 'tritonkit releases --repair' restores it from index.json.bak "
    "and the releases' own locks"
)
PUBLISHED = "published.jsonl"
_NAME = re.compile(r"^v([1-9][0-9]*)$")


@dataclass(frozen=True)
class Release:
    """One entry of the store's index."""

    number: int
    repository: str
    digest: str  # of the release tree (version directories = number)
    build_digest: str  # of the build it was made from
    created: str  # ISO 8601, UTC
    models: dict[str, str]  # model -> content hash, independent of the version number
    changed: list[str]  # models added or changed since the previous release
    previous: str = ""  # entry_hash() of the release before this one ("" for v1): the chain

    def entry_hash(self) -> str:
        """The hash the next entry records as its ``previous`` (over every field, chain included)."""
        return hash_json(asdict(self))

    @property
    def name(self) -> str:
        return f"v{self.number}"


def parse_release(text: str) -> int:
    """``"v3"`` -> 3.

    Raises:
        UsageError: anything else.
    """
    match = _NAME.match(text.strip())
    if not match:
        raise UsageError(f"'{text}' is not a release name", hint="releases are named v1, v2, v3 …")
    return int(match.group(1))


def model_hashes(lock: Lock) -> dict[str, str]:
    """Per-model content hash over its files, with the version directory name left out."""
    per_model: dict[str, dict[str, str]] = {}
    for rel, entry in lock.files.items():
        model, _, rest = rel.partition("/")
        parts = rest.split("/")
        if len(parts) > 1 and parts[0].isdigit():
            parts[0] = "<version>"
        per_model.setdefault(model, {})["/".join(parts)] = entry.sha256
    return {model: hash_json(files) for model, files in sorted(per_model.items())}


class ReleaseStore:
    """The release store at ``root`` (created on first use).

    With a ``trust`` policy, every release handed out (and every one ``repair`` re-admits) must be
    signed by a key it lists; ``create`` then signs new releases, and refuses to record one it
    cannot sign when the policy requires signatures.
    """

    def __init__(self, root: Path, trust: TrustPolicy | None = None) -> None:
        self.root = root
        self.trust = trust

    def releases(self) -> list[Release]:
        """Every release, oldest first, after checking the index's hash chain.

        Raises:
            VerifyError: the index is unreadable, or an entry was edited, removed or reordered.
        """
        path = self.root / INDEX
        if not path.is_file():
            return []
        return _read_index(path, hint=_REPAIR_HINT)

    def repair(self) -> list[str]:
        """Restore a damaged ``index.json``: from ``index.json.bak`` when its chain is intact,
        then an entry rebuilt from its lock for each release directory neither copy lists.

        Every restored entry must match its release's lock digest. A rebuilt entry has no build
        digest (that build is not known any more: releasing it again makes a new release) and
        takes its creation time from the directory. Nothing is written when the index is intact.

        Returns:
            What was done, one line each (empty when the index was intact).

        Raises:
            VerifyError: a release directory does not match the entry restored for it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            on_disk = sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _NAME.match(p.name)))
            try:
                listed = [r.number for r in self.releases()]
                if listed == on_disk:
                    return []
                damage = f"{INDEX} lists {len(listed)} release(s), {len(on_disk)} are in {self.root}"
            except VerifyError as exc:
                damage = exc.message
            done = [f"index damaged: {damage}"]
            entries: list[Release] = []
            backup = self.root / BACKUP
            if backup.is_file():
                try:
                    entries = _read_index(backup, hint="")
                    done.append(f"restored {len(entries)} entries from {BACKUP}")
                except VerifyError as exc:
                    done.append(f"{BACKUP} not usable either: {exc.message}")
            for release in entries:
                self._check_lock(release)
            known = {r.number for r in entries}
            for number in on_disk:
                if number in known:
                    continue
                if number != (entries[-1].number + 1 if entries else 1):
                    raise VerifyError(
                        f"{self.root}: v{number} exists but the release before it is missing",
                        hint="put the missing release directory back, then repair again",
                    )
                lock = read_lock(self.root / f"v{number}")
                self._check_signature(number)  # a rewritten release is not re-admitted under a policy
                created = datetime.fromtimestamp((self.root / f"v{number}").stat().st_mtime, UTC)
                entries.append(self._entry(lock, number, "", created, entries))
                done.append(f"rebuilt v{number} from its lock (build digest unknown)")
            self._write_index(entries)
            return done

    def get(self, number: int) -> Release:
        """Release ``number``; a UsageError listing what exists otherwise."""
        for release in self.releases():
            if release.number == number:
                return release
        names = ", ".join(r.name for r in self.releases()) or "none yet"
        raise UsageError(f"no release v{number} in {self.root}", hint=f"releases: {names}")

    def path(self, number: int) -> Path:
        """The read-only repository of release ``number``, whose lock matches its index entry.

        Callers that hand the release on re-hash it against that lock (``require_verified``).

        Raises:
            UsageError: no such release.
            VerifyError: its lock's digest is not the one recorded in the index (tampered).
        """
        return self._check_lock(self.get(number))

    def verified(self, number: int) -> Path:
        """:meth:`path`, then every file re-hashed against the lock.

        Raises:
            UsageError: no such release.
            VerifyError: the lock is not the recorded one, or the files do not match it.
        """
        root = self.path(number)
        require_verified(root, subject=f"v{number} in {self.root}", hint="the release store was modified; restore it")
        return root

    def _check_lock(self, release: Release) -> Path:
        root = self.root / release.name
        lock = read_lock(root)
        if lock.digest != release.digest:
            raise VerifyError(
                f"{root}: lock digest {lock.digest[:19]}… is not the {release.digest[:19]}… recorded in {INDEX}",
                hint="the release was modified after it was recorded; restore it (or its published image)",
            )
        self._check_signature(release.number)
        return root

    def _check_signature(self, number: int) -> None:
        """Under a trust policy: release ``number`` is signed, as itself, by a listed key."""
        if self.trust is not None:
            self.trust.enforce(self.root / f"v{number}", release=f"v{number}")

    def create(
        self, build: Path, *, signer: Signer | None = None, provenance: Provenance | None = None
    ) -> tuple[Release, bool]:
        """Record ``build`` as the next release, signed with ``signer`` when one is given.

        Args:
            build: a verified build.
            signer: signs the release's lock and its ``provenance`` (see :mod:`tritonkit.release.trust`).
            provenance: what the provenance statement records besides the lock.

        Returns:
            ``(release, created)``; ``created`` is False when this build already is a release.

        Raises:
            VerifyError: the build does not match its lock (nothing is recorded).
            TrustError: the store's policy requires signatures and no signer was given.
        """
        if signer is None and self.trust is not None and self.trust.required:
            raise TrustError(
                "the trust policy requires signed releases and no signing key was given",
                hint="pass the signing key (tritonkit release --sign-key KEY, or $TRITONKIT_SIGNING_KEY)",
            )
        require_verified(build, consequence="not released")
        lock = read_lock(build)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            existing = self.releases()
            for release in existing:
                if release.build_digest == lock.digest:
                    return release, False
            number = max((r.number for r in existing), default=0) + 1
            target = self.root / f"v{number}"
            if target.exists():
                raise VerifyError(
                    f"{target} exists but is not in {INDEX}",
                    hint="the index lost its entry: 'tritonkit releases --repair' rebuilds it from the release's lock",
                )
            self._clean_staged()
            made = datetime.fromtimestamp(build.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            recorded = replace(provenance or Provenance(), build_digest=lock.digest, built_on=made)
            signing = None if signer is None else (signer, recorded)
            staged, release_lock = self._stage(build, lock, number, signing)
            release = self._entry(release_lock, number, lock.digest, datetime.now(UTC), existing)
            os.rename(staged, target)
            os.chmod(target, 0o555)
            self._write_index([*existing, release])
        return release, True

    def export(self, number: int, destination: Path) -> Path:
        """Copy release ``number`` to ``destination`` (new or empty), read-only, and verify the copy.

        Raises:
            UsageError: the destination exists and is not empty.
            VerifyError: the copy does not match the lock.
        """
        source = self.path(number)
        if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
            raise UsageError(f"{destination} exists and is not empty", hint="export into a new or empty directory")
        if destination.exists():
            destination.rmdir()
        destination.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{destination.name}.export-"  # + pid: what a killed export left is removed by the next
        remove_abandoned(destination.parent, prefix)
        staged = scratch_dir(destination.parent, prefix)
        try:
            shutil.copytree(source, staged / "tree", symlinks=False)
            tree = staged / "tree"
            make_writable(tree)
            require_verified(
                tree, subject=f"export of v{number}", hint=f"run 'tritonkit verify {source}'; the store may be damaged"
            )
            seal(tree, destination)
        finally:
            remove_tree(staged)
        return destination

    def record_publication(self, number: int, reference: str) -> None:
        """Append ``vN -> oci://…@sha256:…`` to ``published.jsonl`` (never rewritten)."""
        entry = {
            "release": f"v{number}",
            "reference": reference,
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        with self._locked(), open(self.root / PUBLISHED, "a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

    def publications(self, number: int) -> list[str]:
        """Every digest reference release ``number`` was published as, oldest first."""
        path = self.root / PUBLISHED
        if not path.is_file():
            return []
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e["reference"] for e in entries if e["release"] == f"v{number}"]

    def _entry(
        self, release_lock: Lock, number: int, build_digest: str, created: datetime, existing: list[Release]
    ) -> Release:
        """The index entry of a new release ``number``, chained to the last of ``existing``."""
        hashes = model_hashes(release_lock)  # version-independent: same as the build's
        previous = existing[-1].models if existing else {}
        return Release(
            number=number,
            repository=release_lock.repository,
            digest=release_lock.digest,
            build_digest=build_digest,
            created=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            models=hashes,
            changed=sorted(m for m, h in hashes.items() if previous.get(m) != h),
            previous=existing[-1].entry_hash() if existing else "",
        )

    def _clean_staged(self) -> None:
        """Remove what a killed ``create`` left (``.vN.*``): under the store lock none is in use."""
        for path in self.root.glob(".v*.*"):
            if path.is_dir() and _NAME.match(path.name[1:].split(".")[0]):
                remove_tree(path)

    def _stage(
        self, build: Path, lock: Lock, number: int, signing: tuple[Signer, Provenance] | None
    ) -> tuple[Path, Lock]:
        staged = Path(tempfile.mkdtemp(prefix=f".v{number}.", dir=self.root))
        try:
            tree = staged / "tree"
            shutil.copytree(build, tree, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
            make_writable(tree)
            models = {}
            renamed: dict[str, str] = {}  # build path prefix -> release path prefix
            for model, meta in lock.models.items():
                for version in meta.get("versions", []):
                    os.rename(tree / model / version, tree / model / str(number))
                    renamed[f"{model}/{version}/"] = f"{model}/{number}/"
                models[model] = {**meta, "versions": [str(number)]}
            for name in (LOCK_FILE, PROVENANCE_FILE, SIGNATURE_FILE):  # a copied release's proof is not this one's
                (tree / name).unlink(missing_ok=True)
            # The build was verified just now, so its lock's hashes are this run's: the lock of the
            # copy reuses them instead of reading every file again (a multi-GB model is read once
            # less). The copy itself is then verified by reading it, so a bad copy is still caught.
            known = {_moved(rel, renamed): entry for rel, entry in lock.files.items()}
            release_lock = write_lock(tree, lock.repository, models, known)
            require_verified(tree, subject=f"release v{number}")
            if signing is not None:
                sign(tree, f"v{number}", *signing)
                if self.trust is not None:
                    self.trust.enforce(tree, release=f"v{number}", subject=f"release v{number}")
            final = self.root / f".v{number}.ready"
            seal(tree, final)
            return final, release_lock
        finally:
            remove_tree(staged)

    def _write_index(self, releases: list[Release]) -> None:
        """Write the chained document atomically to ``index.json``, then the same to the backup."""
        document = {"releases": [asdict(r) for r in releases], "head": releases[-1].entry_hash() if releases else ""}
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        for name in (INDEX, BACKUP):
            descriptor, temp = tempfile.mkstemp(prefix=".index.", dir=self.root)
            try:
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(temp, 0o644)
                os.replace(temp, self.root / name)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _read_index(path: Path, *, hint: str) -> list[Release]:
    """Parse an index document and check its chain (a document without ``head`` predates the
    chain: its entries are chained in memory and sealed by the next write).

    Raises:
        VerifyError: unreadable, or the chain is broken (names the first entry that disagrees).
    """
    try:
        document = json.loads(path.read_text())
        raw = document["releases"]
        legacy = "head" not in document
        releases: list[Release] = []
        for entry in raw:
            if legacy:
                entry = {**entry, "previous": releases[-1].entry_hash() if releases else ""}
            releases.append(Release(**entry))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VerifyError(f"{path}: unreadable release index ({exc})", hint=hint) from exc
    expected = ""
    for position, release in enumerate(releases, start=1):
        if release.number != position or release.previous != expected:
            raise VerifyError(
                f"{path}: entry {release.name} does not follow the entry before it (edited, removed or reordered)",
                hint=hint,
            )
        expected = release.entry_hash()
    if not legacy and document["head"] != expected:
        last = releases[-1].name if releases else "the last entry"
        raise VerifyError(f"{path}: {last} was edited or entries were removed since it was written", hint=hint)
    return releases


def check_release_dir(path: Path) -> None:
    """When ``path`` is a release directory of a store (``<store>/vN`` beside an ``index.json``),
    check its lock against the index entry (and the index's chain); otherwise do nothing.

    Raises:
        VerifyError: the index is damaged, has no entry for it, or records another digest.
    """
    root = path.resolve()
    match = _NAME.match(root.name)
    if match is None or not (root.parent / INDEX).is_file():
        return
    store = ReleaseStore(root.parent)
    number = int(match.group(1))
    if number not in {r.number for r in store.releases()}:
        raise VerifyError(f"{root} is not recorded in {root.parent / INDEX}", hint=_REPAIR_HINT)
    store.path(number)


def _moved(rel: str, renamed: dict[str, str]) -> str:
    for old, new in renamed.items():
        if rel.startswith(old):
            return new + rel[len(old) :]
    return rel


def default_store(spec_root: Path) -> Path:
    """``$TRITONKIT_STORE``, or ``releases/`` beside the spec."""
    configured = os.environ.get("TRITONKIT_STORE")
    return Path(configured) if configured else spec_root / "releases"
