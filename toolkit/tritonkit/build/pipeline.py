"""Spec → plan → cached model builds → one immutable, content-hashed repository.

``plan`` is pure: it decides, per model, the cache key (hash of the spec entry, every source
file's bytes and the versions of the tools that produce the artifact). ``build`` is the edge
that touches disks: it reuses cached model directories, builds the others in a scratch
directory, assembles everything in a staging directory next to the output, writes the lock,
makes the tree read-only and renames it into place. A failure anywhere removes the staging
tree; existing outputs are never touched (except an identical earlier build whose files were
edited after the fact: it is replaced by the correct tree). Scratch and staging directories are
named with the builder's pid, and a build first removes those whose process is gone (what a
killed build left), except a working directory kept on purpose to reproduce a failed step.

A rebuild with nothing changed reads no model file: sources and cache entries are checked
through a stat-keyed hash memo (:mod:`tritonkit.artifact.hashmemo`) and the staging tree holds
hard links of the cache entries (both are read-only), so its cost does not grow with the
model's size.

Example:
    >>> result = build_repository(load_spec(Path("model_repository/tritonkit.yaml")), Path("dist"))
    >>> result.path, result.digest
    (PosixPath('dist/demo-3f2a9c1b7e4d'), 'sha256:3f2a...')

Length: a little over 400 lines: planning, the cache (entries, manifests, hard links) and
staging are one sequence whose failure paths must see each other's state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tritonkit.artifact.hashing import FileHash, hash_file, hash_json, hash_tree, sha256_bytes
from tritonkit.artifact.hashmemo import HashMemo
from tritonkit.artifact.layout import KEPT, install, remove_abandoned, remove_tree, scratch_dir, seal, staging_dir
from tritonkit.artifact.lock import directory_name, write_lock
from tritonkit.build import pbtxt
from tritonkit.build.builders import VERSION, BuildContext, Builder, builder_for
from tritonkit.build.builders.base import tool_version
from tritonkit.build.ensembles import ensemble_config
from tritonkit.errors import BuildError, StorageError, TritonkitError
from tritonkit.events import Event, Progress, emit
from tritonkit.spec.schema import EnsembleModel, LoadedSpec, ModelBase

log = logging.getLogger(__name__)

# Bump when the layout or config rendering changes, so old cache entries are not reused.
BUILD_FORMAT = 1
_MANIFEST = ".tritonkit-cache.json"
_META = ".tritonkit-meta.json"  # what a builder recorded for the lock file (cache entries only)
_HASH_MEMO = ".hash-memo.json"  # stat-keyed hashes of sources and entries (artifact.hashmemo)


@dataclass(frozen=True)
class PlannedModel:
    """One model of the plan: what to build and under which cache key."""

    index: int
    model: ModelBase
    builder: Builder
    key: str


@dataclass(frozen=True)
class ModelResult:
    """How one model was obtained."""

    name: str
    kind: str
    key: str
    cached: bool  # ensembles are always generated afresh from their steps' configs (cached False)
    seconds: float


@dataclass(frozen=True)
class BuildResult:
    """The outcome of :func:`build`."""

    path: Path
    alias: Path
    digest: str
    created: bool
    models: list[ModelResult]
    seconds: float


def plan(
    loaded: LoadedSpec, skip_kinds: frozenset[str] = frozenset(), memo: HashMemo | None = None
) -> list[PlannedModel]:
    """Cache key of every model: spec entry + source file bytes + tool versions.

    ``memo`` (the build's :class:`~tritonkit.artifact.hashmemo.HashMemo`) skips re-reading
    source files whose stat has not changed since they were last hashed.
    """
    hash_source = memo.hash if memo is not None else hash_file
    planned = []
    for index, model in enumerate(loaded.spec.models):
        if isinstance(model, EnsembleModel):
            continue  # only a config, generated from the built steps (see _write_ensembles)
        if getattr(model, "kind", "") in skip_kinds:
            continue
        builder = builder_for(model)
        sources = {
            os.path.relpath(path, loaded.root): hash_source(path).sha256 for path in builder.input_files(loaded, model)
        }
        key = hash_json(
            {
                "format": BUILD_FORMAT,
                "tritonkit": tool_version("tritonkit"),
                "entry": model.model_dump(mode="json"),
                "sources": sources,
                "tools": builder.tool_versions(model),
            }
        )
        planned.append(PlannedModel(index=index, model=model, builder=builder, key=key))
    return planned


def _write_ensembles(loaded: LoadedSpec, staging: Path) -> dict[str, dict[str, object]]:
    """Generate and check every ensemble's config from its steps' built configs."""
    ensembles = [m for m in loaded.spec.models if isinstance(m, EnsembleModel)]
    if not ensembles:
        return {}
    configs = {p.parent.name: pbtxt.parse(p.read_text()) for p in staging.glob("*/config.pbtxt")}
    written: dict[str, dict[str, object]] = {}
    for model in ensembles:
        config = ensemble_config(model, configs)
        configs[model.name] = config  # a later ensemble may run this one
        text = pbtxt.render(config)
        (staging / model.name / VERSION).mkdir(parents=True)  # Triton wants a version directory, even empty
        (staging / model.name / "config.pbtxt").write_text(text)
        written[model.name] = {
            "kind": "ensemble",
            "input_hash": sha256_bytes(text.encode()),
            "versions": [VERSION],
            "tools": {},
        }
    return written


def default_cache_dir(loaded: LoadedSpec) -> Path:
    """``$TRITONKIT_CACHE_DIR``, else ``.tritonkit/cache`` next to the spec."""
    env = os.environ.get("TRITONKIT_CACHE_DIR")
    return Path(env) if env else loaded.root / ".tritonkit" / "cache"


def build_repository(
    loaded: LoadedSpec,
    out_dir: Path,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
    skip_kinds: frozenset[str] = frozenset(),
) -> BuildResult:
    """Build every model of the spec into one repository under ``out_dir``.

    Args:
        loaded: the validated spec.
        out_dir: where ``<name>-<digest12>/`` and the ``<name>`` alias go.
        cache_dir: model cache (default :func:`default_cache_dir`).
        use_cache: False rebuilds every model (the results still refresh the cache).
        progress: called with an :class:`~tritonkit.events.Event` (stage ``build``, subject the
            model) as work happens.
        skip_kinds: model kinds left out of this repository (e.g. ``tensorrt`` on a CPU host);
            an ensemble that runs a skipped model fails its wiring check.

    Returns:
        Where the repository is, its digest, and per-model cache hits.

    Raises:
        SpecError, BuildError: nothing under ``out_dir`` has changed when they are raised.
    """
    started = time.perf_counter()
    cache = _Cache(cache_dir or default_cache_dir(loaded), use_cache)
    try:
        return _build(loaded, out_dir, cache, progress, skip_kinds, started)
    finally:
        with contextlib.suppress(OSError):  # the memo only saves re-reading; a full disk must not mask the error
            cache.memo.save()


def _build(
    loaded: LoadedSpec,
    out_dir: Path,
    cache: _Cache,
    progress: Progress | None,
    skip_kinds: frozenset[str],
    started: float,
) -> BuildResult:
    def report(model: str, message: str) -> None:
        emit(progress, Event("build", model, message))

    planned = plan(loaded, skip_kinds, cache.memo)
    for item in planned:  # refuse (no GPU, no TensorRT, …) before anything is built or written
        check = getattr(item.builder, "preflight", None)
        if check is not None and cache.valid(item.key) is None:
            check(item.model)
    # what killed builds left (their process is gone): scratch space is never reused
    remove_abandoned(out_dir, ".staging-")
    remove_abandoned(cache.root, ".work-")
    staging = staging_dir(out_dir)
    results: list[ModelResult] = []
    lock_models: dict[str, dict[str, object]] = {}
    built: dict[str, Path] = {}
    known: dict[str, FileHash] = {}  # staging path -> hash computed this run (write_lock reuses them)
    try:
        for item in planned:
            result, lock_models[item.model.name], hashes = _stage_model(loaded, item, cache, staging, report, built)
            known.update({f"{item.model.name}/{rel}": h for rel, h in hashes.items()})
            results.append(result)
        for name, meta in _write_ensembles(loaded, staging).items():
            lock_models[name] = meta
            results.append(ModelResult(name, "ensemble", str(meta["input_hash"]), False, 0.0))
        lock = write_lock(staging, loaded.spec.name, lock_models, known)
        existing = out_dir / directory_name(lock.repository, lock.digest)
        if existing.is_dir() and not _still_intact(existing, staging, lock.files, cache.memo):
            # An identical build whose files were changed afterwards (it shares hard links with
            # the cache, so an edit through either shows here): replace it with the good one.
            log.warning("%s was modified after it was built; replacing it", existing)
            remove_tree(existing)
        final, created = install(staging, out_dir, lock)
    except BaseException:
        remove_tree(staging)
        raise
    return BuildResult(
        path=final,
        alias=out_dir / loaded.spec.name,
        digest=lock.digest,
        created=created,
        models=results,
        seconds=time.perf_counter() - started,
    )


class _Cache:
    """The model cache of one build: each entry is verified at most once.

    Entries and sources are hashed through one stat-keyed memo kept beside the entries
    (``.hash-memo.json``), so a rebuild with nothing changed stats files instead of reading them.
    """

    def __init__(self, root: Path, use: bool) -> None:
        self.root, self.use = root, use
        root.mkdir(parents=True, exist_ok=True)
        self.memo = HashMemo(root / _HASH_MEMO)
        self._verified: dict[str, dict[str, FileHash] | None] = {}  # key -> its files' hashes

    def valid(self, key: str) -> dict[str, FileHash] | None:
        """The hashes of a complete, unchanged entry; ``None`` when it must be (re)built."""
        if key not in self._verified:
            self._verified[key] = _cache_valid(self.root / key, self.memo) if self.use else None
        return self._verified[key]


def _stage_model(
    loaded: LoadedSpec,
    item: PlannedModel,
    cache: _Cache,
    staging: Path,
    report: Callable[[str, str], None],
    built: dict[str, Path],
) -> tuple[ModelResult, dict[str, object], dict[str, FileHash]]:
    """Build one model into the cache (unless a valid entry exists) and copy it into staging.

    Returns:
        Its result row, its lock entry, and the hashes of its files (relative to the model).
    """
    t0 = time.perf_counter()
    entry = cache.root / item.key
    hashes = cache.valid(item.key)
    cached = hashes is not None
    if hashes is None:
        report(item.model.name, "building")
        hashes = _build_into_cache(loaded, item, cache.root, report, built)
        cache.memo.remember(entry, hashes, ctime=False)  # written and sealed by this build: no re-read
    else:
        report(item.model.name, "cached")
    built[item.model.name] = entry
    _copy_model(entry, staging / item.model.name)
    lock_entry: dict[str, object] = {
        "kind": item.builder.kind,
        "input_hash": item.key,
        "versions": [VERSION],
        "tools": item.builder.tool_versions(item.model),
    }
    if (entry / _META).is_file():
        lock_entry.update(json.loads((entry / _META).read_text()))
    # the intent and the evidence travel with the build: what it promises and what was measured
    if item.model.slo is not None:
        lock_entry["slo"] = item.model.slo.model_dump(exclude_none=True)
    if item.model.capacity is not None:
        lock_entry["capacity"] = item.model.capacity.model_dump(exclude_none=True)  # as before llm keys
    result = ModelResult(item.model.name, item.builder.kind, item.key, cached, time.perf_counter() - t0)
    return result, lock_entry, hashes


def _build_into_cache(
    loaded: LoadedSpec, item: PlannedModel, cache: Path, report: Callable[[str, str], None], built: dict[str, Path]
) -> dict[str, FileHash]:
    """Build one model in a scratch directory; on success move it to ``cache/<key>``.

    Returns:
        The hashes of its files (the cache entry's manifest).
    """
    workdir = scratch_dir(cache, ".work-")
    model_dir = workdir / "model"
    model_dir.mkdir()
    ctx = BuildContext(
        loaded=loaded,
        index=item.index,
        workdir=workdir,
        log=lambda m: report(item.model.name, m),
        cache_dir=cache,
        built=dict(built),
    )
    try:
        config = item.builder.build(ctx, model_dir)
        (model_dir / "config.pbtxt").write_text(pbtxt.render(config))
        hashes = hash_tree(model_dir)
        manifest = {rel: h.sha256 for rel, h in hashes.items()}
        if ctx.meta:
            (model_dir / _META).write_text(json.dumps(ctx.meta, sort_keys=True))
        (model_dir / _MANIFEST).write_text(json.dumps(manifest, sort_keys=True))
        entry = cache / item.key
        if entry.exists():
            remove_tree(entry)
        seal(model_dir, entry)
    except BuildError as exc:
        if exc.workdir is None:
            remove_tree(workdir)
        else:
            (workdir / KEPT).touch()  # kept to reproduce the failure: not abandoned
        raise
    except TritonkitError:
        remove_tree(workdir)
        raise
    except Exception as exc:
        storage = StorageError.from_os_error(exc) if isinstance(exc, OSError) else None
        if storage is not None:  # a full or read-only disk is not the model's fault: nothing kept
            remove_tree(workdir)
            raise storage from exc
        (workdir / KEPT).touch()
        raise BuildError(
            f"{type(exc).__name__}: {exc}",
            model=item.model.name,
            step="build",
            hint=f"working directory kept at {workdir}",
            workdir=workdir,
        ) from exc
    remove_tree(workdir)
    return hashes


def _cache_valid(entry: Path, memo: HashMemo) -> dict[str, FileHash] | None:
    """A cache entry is used only when its files still hash to what was recorded.

    Returns:
        Its files' hashes when it is intact, else None.
    """
    manifest_path = entry / _MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        return None
    # without ctime: every build links and unlinks the entry's files, which moves it
    current = memo.tree(entry, exclude=frozenset({_MANIFEST, _META}), ctime=False)
    if {rel: h.sha256 for rel, h in current.items()} != manifest:
        log.warning("cache entry %s was modified; rebuilding", entry.name)
        return None
    return current


def _copy_model(entry: Path, target: Path) -> None:
    """Put a cache entry's files into the staging tree: hard links where possible.

    Both sides are read-only trees; a link costs no time or space for a multi-GB model, and an
    edit through either side (after making it writable) changes the shared file's stat, so the
    cache entry fails its check and is rebuilt. Across filesystems it is a copy.
    """
    shutil.copytree(
        entry, target, ignore=shutil.ignore_patterns(_MANIFEST, _META, "__pycache__"), copy_function=_link_or_copy
    )
    for dirpath, _, _ in os.walk(target):
        os.chmod(dirpath, 0o755)


def _still_intact(existing: Path, staging: Path, files: Mapping[str, FileHash], memo: HashMemo) -> bool:
    """Whether an existing build holds exactly ``files``: the same inodes as the fresh staging
    tree (hard links of verified cache entries: nothing to read), else hashes that match."""
    for rel, expected in files.items():
        try:
            have, fresh = os.stat(existing / rel), os.stat(staging / rel)
        except OSError:
            return False
        if (have.st_dev, have.st_ino) != (fresh.st_dev, fresh.st_ino) and memo.hash(existing / rel) != expected:
            return False
    return True


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(source, target)


__all__ = ["BuildResult", "ModelResult", "PlannedModel", "build_repository", "default_cache_dir", "plan"]
