"""Hashing is by content and relative path only."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

from tritonkit.artifact.hashing import LOCK_FILE, FileHash, hash_file, hash_json, hash_tree, repository_digest


def _tree(root: Path) -> None:
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "config.pbtxt").write_text('name: "m"\n')
    (root / "m" / "1" / "model.py").write_text("print('hi')\n")
    (root / LOCK_FILE).write_text("{}")


def test_digest_ignores_location_mtime_and_lock(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "b"
    _tree(a)
    _tree(b)
    os.utime(b / "m" / "config.pbtxt", (0, 0))
    (b / LOCK_FILE).write_text('{"different": true}')
    assert repository_digest(hash_tree(a)) == repository_digest(hash_tree(b))
    assert LOCK_FILE not in hash_tree(a)


def test_digest_changes_with_content_and_path() -> None:
    base = {"m/config.pbtxt": FileHash("aa", 1), "m/1/model.py": FileHash("bb", 1)}
    moved = {"m/config.pbtxt": FileHash("aa", 1), "m/2/model.py": FileHash("bb", 1)}
    edited = {"m/config.pbtxt": FileHash("ab", 1), "m/1/model.py": FileHash("bb", 1)}
    digests = {repository_digest(x) for x in (base, moved, edited)}
    assert len(digests) == 3
    assert repository_digest(dict(reversed(list(base.items())))) == repository_digest(base)


def test_hash_json_is_key_order_independent() -> None:
    assert hash_json({"a": 1, "b": [1, 2]}) == hash_json({"b": [1, 2], "a": 1})
    assert hash_json({"a": 1}) != hash_json({"a": 2})


def test_known_hashes_are_reused_only_for_files_of_the_same_size(tmp_path: Path) -> None:
    _tree(tmp_path)
    real = hash_tree(tmp_path)
    marker = FileHash("0" * 64, real["m/config.pbtxt"].size)  # not the real hash: shows it was not re-read
    stale = FileHash("1" * 64, real["m/1/model.py"].size + 1)  # size differs: the file is hashed again
    reused = hash_tree(tmp_path, known={"m/config.pbtxt": marker, "m/1/model.py": stale})
    assert reused["m/config.pbtxt"] == marker
    assert reused["m/1/model.py"] == real["m/1/model.py"]


def test_a_file_is_hashed_in_chunks_not_read_whole(tmp_path: Path) -> None:
    """Multi-GB models are hashed by build, verify, release and publish: memory must stay flat."""
    big = tmp_path / "weights.bin"
    with open(big, "wb") as handle:
        for _ in range(48):
            handle.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        hashed = hash_file(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hashed == FileHash(hashlib.sha256(big.read_bytes()).hexdigest(), 48 << 20)
    assert peak < 4 << 20, f"hashing a 48 MiB file peaked at {peak / 2**20:.1f} MiB"


def test_the_digest_covers_the_models_intent(tmp_path: Path) -> None:
    """A release whose SLO or measured capacity changed is another release, even when no file did."""
    from tritonkit.artifact.lock import intent_of, write_lock

    _tree(tmp_path)
    plain = write_lock(tmp_path, "r", {"m": {"backend": "python"}})
    assert plain.digest == repository_digest(hash_tree(tmp_path))  # no intent: the files' digest, as before
    strict = write_lock(tmp_path, "r", {"m": {"backend": "python", "slo": {"p99_ms": 10}}})
    loose = write_lock(tmp_path, "r", {"m": {"backend": "python", "slo": {"p99_ms": 20}}})
    assert len({plain.digest, strict.digest, loose.digest}) == 3
    assert intent_of(loose.models) == {"m": {"slo": {"p99_ms": 20}}}
    other_metadata = write_lock(tmp_path, "r", {"m": {"backend": "onnx", "slo": {"p99_ms": 20}}})
    assert other_metadata.digest == loose.digest  # build metadata other than intent is not hashed twice
