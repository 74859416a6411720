"""The stat-keyed hash memo: re-reads exactly the files whose stat changed (pure: tmp files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tritonkit.artifact import hashmemo
from tritonkit.artifact.hashing import hash_file
from tritonkit.artifact.hashmemo import HashMemo


def _old(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    past = path.stat().st_mtime_ns - 10 * hashmemo.RACY_NS
    os.utime(path, ns=(past, past))
    return path


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    seen: list[Path] = []

    def counting(path: Path):  # type: ignore[no-untyped-def]
        seen.append(path)
        return hash_file(path)

    monkeypatch.setattr(hashmemo, "hash_file", counting)
    return seen


def test_unchanged_files_are_not_read_again_across_processes(tmp_path: Path, reads: list[Path]) -> None:
    model = _old(tmp_path / "model.onnx", b"weights" * 100)
    store = tmp_path / "memo.json"
    first = HashMemo(store)
    assert first.hash(model) == hash_file(model)
    first.save()
    second = HashMemo(store)  # a later build
    assert second.hash(model) == hash_file(model)
    assert len(reads) == 1


def test_a_change_is_seen_even_with_the_same_size_and_mtime(tmp_path: Path, reads: list[Path]) -> None:
    model = _old(tmp_path / "model.onnx", b"aaaa")
    memo = HashMemo()
    before = memo.hash(model)
    mtime = model.stat().st_mtime_ns
    model.write_bytes(b"bbbb")
    os.utime(model, ns=(mtime, mtime))  # touch it back: ctime still moves
    assert memo.hash(model) != before and memo.hash(model) == hash_file(model)


def test_a_file_written_just_now_is_not_remembered(tmp_path: Path, reads: list[Path]) -> None:
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"x")
    memo = HashMemo()
    memo.hash(fresh)
    memo.hash(fresh)
    assert len(reads) == 2  # racy: a same-tick rewrite would keep the stat


def test_remembered_hashes_skip_the_first_read_and_a_damaged_memo_is_ignored(tmp_path: Path, reads: list[Path]) -> None:
    (tmp_path / "entry").mkdir()
    data = tmp_path / "entry" / "w.data"
    data.write_bytes(b"w" * 10)
    store = tmp_path / "memo.json"
    memo = HashMemo(store)
    memo.remember(tmp_path / "entry", {"w.data": hash_file(data)})
    memo.save()
    reads.clear()
    assert HashMemo(store).tree(tmp_path / "entry") == {"w.data": hash_file(data)}
    assert reads == []
    store.write_text("{not json")
    assert HashMemo(store).hash(data) == hash_file(data)


def test_without_ctime_links_do_not_cause_a_reread_but_edits_do(tmp_path: Path, reads: list[Path]) -> None:
    entry = _old(tmp_path / "entry.data", b"12345678")
    memo = HashMemo()
    memo.hash(entry, ctime=False)
    os.link(entry, tmp_path / "build.data")  # what each build does with a cache entry
    (tmp_path / "build.data").unlink()
    memo.hash(entry, ctime=False)
    assert len(reads) == 1
    entry.write_bytes(b"87654321")
    assert memo.hash(entry, ctime=False) == hash_file(entry) and len(reads) == 2
