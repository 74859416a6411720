"""Numbered, immutable releases of built repositories, kept in a release store.

A release ``vN`` is a copy of a verified build in which every model's Triton version directory
is ``N`` — so ``model_version`` in responses and Triton's metrics say which release answered.
It has its own lock and digest, is read-only, and never changes. The store is a directory
(default ``releases/`` beside the spec; ``--store`` or ``$TRITONKIT_STORE``)::

    releases/
      index.json     every release: number, digest, build digest, created, per-model hashes
      published.jsonl  where each release was pushed (oci://…@sha256: references), append-only
      v1/  v2/ ...   read-only repositories (tritonkit.lock.json at the root of each)

Releasing a build that is already a release is a no-op that names that release. ``index.json``
is rewritten atomically under an exclusive lock, and only ever grows.

Example:
    >>> store = ReleaseStore(Path("releases"))
    >>> release, created = store.create(Path("dist/demo"))
    >>> release.name, release.changed
    ('v1', ['classifier', 'postprocess'])
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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from tritonkit.artifact.hashing import LOCK_FILE, hash_json
from tritonkit.artifact.layout import make_writable, remove_tree, seal
from tritonkit.artifact.lock import Lock, read_lock, write_lock
from tritonkit.build.verify import require_verified
from tritonkit.errors import UsageError, VerifyError

INDEX = "index.json"
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
    """The release store at ``root`` (created on first use)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def releases(self) -> list[Release]:
        """Every release, oldest first."""
        path = self.root / INDEX
        if not path.is_file():
            return []
        try:
            document = json.loads(path.read_text())
            return [Release(**entry) for entry in document["releases"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise VerifyError(
                f"{path}: unreadable release index ({exc})", hint="restore it from a backup; it is never edited by hand"
            ) from exc

    def get(self, number: int) -> Release:
        """Release ``number``; a UsageError listing what exists otherwise."""
        for release in self.releases():
            if release.number == number:
                return release
        names = ", ".join(r.name for r in self.releases()) or "none yet"
        raise UsageError(f"no release v{number} in {self.root}", hint=f"releases: {names}")

    def path(self, number: int) -> Path:
        """The read-only repository of release ``number``."""
        self.get(number)
        return self.root / f"v{number}"

    def create(self, build: Path) -> tuple[Release, bool]:
        """Record ``build`` as the next release.

        Returns:
            ``(release, created)``; ``created`` is False when this build already is a release.

        Raises:
            VerifyError: the build does not match its lock (nothing is recorded).
        """
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
                    hint="a release was interrupted or the store edited by hand; move that directory away",
                )
            staged, release_lock = self._stage(build, lock, number)
            hashes = model_hashes(lock)
            previous = existing[-1].models if existing else {}
            release = Release(
                number=number,
                repository=lock.repository,
                digest=release_lock.digest,
                build_digest=lock.digest,
                created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                models=hashes,
                changed=sorted(m for m, h in hashes.items() if previous.get(m) != h),
            )
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
        staged = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
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

    def _stage(self, build: Path, lock: Lock, number: int) -> tuple[Path, Lock]:
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
            (tree / LOCK_FILE).unlink()
            # The build was verified just now, so its lock's hashes are this run's: the lock of the
            # copy reuses them instead of reading every file again (a multi-GB model is read once
            # less). The copy itself is then verified by reading it, so a bad copy is still caught.
            known = {_moved(rel, renamed): entry for rel, entry in lock.files.items()}
            release_lock = write_lock(tree, lock.repository, models, known)
            require_verified(tree, subject=f"release v{number}")
            final = self.root / f".v{number}.ready"
            seal(tree, final)
            return final, release_lock
        finally:
            remove_tree(staged)

    def _write_index(self, releases: list[Release]) -> None:
        document = {"releases": [asdict(r) for r in releases]}
        descriptor, temp = tempfile.mkstemp(prefix=".index.", dir=self.root)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(document, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(temp, 0o644)
        os.replace(temp, self.root / INDEX)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _moved(rel: str, renamed: dict[str, str]) -> str:
    for old, new in renamed.items():
        if rel.startswith(old):
            return new + rel[len(old) :]
    return rel


def default_store(spec_root: Path) -> Path:
    """``$TRITONKIT_STORE``, or ``releases/`` beside the spec."""
    configured = os.environ.get("TRITONKIT_STORE")
    return Path(configured) if configured else spec_root / "releases"
