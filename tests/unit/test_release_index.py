"""The release index: a hash chain checked on every read, each use checked against the release's
lock, and a repair path for a damaged index (issue 17, item 4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tritonkit.artifact.layout import make_writable, set_read_only
from tritonkit.artifact.lock import write_lock
from tritonkit.errors import VerifyError
from tritonkit.release.store import BACKUP, INDEX, ReleaseStore, check_release_dir

CONFIG = 'name: "m"\nbackend: "python"\nmax_batch_size: 0\n'


def _build(root: Path, body: str) -> Path:
    """A verifiable one-model repository (a python model) whose model.py holds ``body``."""
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "config.pbtxt").write_text(CONFIG)
    (root / "m" / "1" / "model.py").write_text(body)
    write_lock(root, "demo", {"m": {"kind": "python", "versions": ["1"]}})
    set_read_only(root)
    return root


@pytest.fixture()
def store(tmp_path: Path) -> ReleaseStore:
    store = ReleaseStore(tmp_path / "releases")
    for n in range(3):
        store.create(_build(tmp_path / f"build{n}", f"# model {n}\n"))
    return store


def _tamper_release(store: ReleaseStore, number: int) -> None:
    """Change a file of vN and rewrite its lock to match: the release verifies on its own."""
    root = store.root / f"v{number}"
    make_writable(root)
    (root / "m" / str(number) / "model.py").write_text("import os; os.system('id')\n")
    (root / "tritonkit.lock.json").unlink()
    write_lock(root, "demo", {"m": {"kind": "python", "versions": [str(number)]}})
    set_read_only(root)


def _edit_index(store: ReleaseStore, edit: object) -> None:
    path = store.root / INDEX
    document = json.loads(path.read_text())
    edit(document)  # type: ignore[operator]
    path.write_text(json.dumps(document))


def test_entries_are_chained_and_the_backup_mirrors_the_index(store: ReleaseStore) -> None:
    releases = store.releases()
    assert [r.name for r in releases] == ["v1", "v2", "v3"]
    assert releases[0].previous == ""
    assert [r.previous for r in releases[1:]] == [r.entry_hash() for r in releases[:-1]]
    assert (store.root / BACKUP).read_text() == (store.root / INDEX).read_text()


def test_a_rewritten_lock_is_caught_on_every_use(store: ReleaseStore) -> None:
    _tamper_release(store, 2)
    with pytest.raises(VerifyError, match="is not the .* recorded in index.json"):
        store.path(2)
    with pytest.raises(VerifyError, match="recorded in index.json"):
        check_release_dir(store.root / "v2")  # what `tritonkit verify releases/v2` runs
    with pytest.raises(VerifyError, match="recorded in index.json"):
        store.export(2, store.root.parent / "exported")
    assert not (store.root.parent / "exported").exists()
    store.path(1)  # the others are untouched
    check_release_dir(store.root / "v3")


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["releases"][0]["models"].update(m="sha256:" + "0" * 64),  # an edited old entry
        lambda d: d["releases"][2].update(digest="sha256:" + "1" * 64),  # the last entry edited
        lambda d: d["releases"].pop(),  # the newest entry dropped
        lambda d: d["releases"].pop(1),  # one in the middle dropped
    ],
    ids=["edited-old", "edited-last", "dropped-last", "dropped-middle"],
)
def test_an_edited_index_is_refused_in_one_line_with_a_hint(store: ReleaseStore, edit: object) -> None:
    _edit_index(store, edit)
    with pytest.raises(VerifyError) as caught:
        store.releases()
    assert "\n" not in caught.value.message and "releases --repair" in caught.value.hint


def test_repair_restores_a_truncated_index_from_the_backup(store: ReleaseStore) -> None:
    before = store.releases()
    index = store.root / INDEX
    index.write_text(index.read_text()[:100])
    with pytest.raises(VerifyError, match="unreadable release index"):
        store.releases()
    done = store.repair()
    assert done[0].startswith("index damaged") and "restored 3 entries" in done[1]
    assert store.releases() == before
    assert store.repair() == []  # intact: nothing written


def test_repair_rebuilds_entries_from_the_locks_without_a_backup(store: ReleaseStore) -> None:
    before = store.releases()
    (store.root / BACKUP).unlink()
    (store.root / INDEX).write_text("")
    done = store.repair()
    assert [line.split(" from")[0] for line in done[1:]] == ["rebuilt v1", "rebuilt v2", "rebuilt v3"]
    after = store.releases()
    assert [(r.number, r.digest, r.models, r.changed) for r in after] == [
        (r.number, r.digest, r.models, r.changed) for r in before
    ]
    assert all(r.build_digest == "" for r in after)


def test_repair_refuses_a_release_that_does_not_match_the_backup(store: ReleaseStore) -> None:
    _tamper_release(store, 1)
    (store.root / INDEX).write_text("{")
    with pytest.raises(VerifyError, match="v1: lock digest"):
        store.repair()
    assert (store.root / INDEX).read_text() == "{"  # nothing written


def test_a_legacy_index_without_a_chain_is_read_and_sealed_by_the_next_release(
    store: ReleaseStore, tmp_path: Path
) -> None:
    _edit_index(store, lambda d: (d.pop("head"), [e.pop("previous") for e in d["releases"]]))
    assert [r.name for r in store.releases()] == ["v1", "v2", "v3"]
    store.create(_build(tmp_path / "build3", "# model 3\n"))
    document = json.loads((store.root / INDEX).read_text())
    assert document["head"] and all("previous" in e for e in document["releases"])


def test_a_killed_release_leaves_nothing_the_next_one_trips_over(store: ReleaseStore, tmp_path: Path) -> None:
    leftover = store.root / ".v4.ready"
    (leftover / "m").mkdir(parents=True)
    os.chmod(leftover, 0o555)
    release, created = store.create(_build(tmp_path / "build3", "# model 3\n"))
    assert created and release.name == "v4" and not leftover.exists()


def test_promote_rollback_and_status_refuse_a_rewritten_lock_before_touching_a_server(store: ReleaseStore) -> None:
    from tritonkit.deploy.local import LocalEnvironment

    env = LocalEnvironment(store, url="127.0.0.1:1")  # nothing listens: a check after connecting would say so
    env.record("promote", None, store.get(1), "ok")
    env.record("promote", store.get(1), store.get(3), "ok")
    _tamper_release(store, 2)
    with pytest.raises(VerifyError, match="v2: lock digest"):
        env.promote(2)
    _tamper_release(store, 1)
    with pytest.raises(VerifyError, match="v1: lock digest"):
        env.rollback()
    _tamper_release(store, 3)
    with pytest.raises(VerifyError, match="v3: lock digest"):
        env.status()  # it used to report v3's recorded digest as served


def test_a_deleted_index_is_noticed_and_repaired(store: ReleaseStore, tmp_path: Path) -> None:
    before = store.releases()
    (store.root / INDEX).unlink()
    with pytest.raises(VerifyError, match="v1 exists but is not in index.json") as caught:
        store.create(_build(tmp_path / "build3", "# model 3\n"))
    assert "releases --repair" in caught.value.hint
    assert "lists 0 release(s), 3 are in" in store.repair()[0]
    assert store.releases() == before


def test_the_cli_verify_and_repair(store: ReleaseStore) -> None:
    from click.testing import CliRunner

    from tritonkit.cli import main

    runner = CliRunner()
    (store.root / INDEX).write_text("")
    listed = runner.invoke(main, ["releases", "--store", str(store.root)])
    assert listed.exit_code == VerifyError.exit_code and "releases --repair" in listed.stderr
    repaired = runner.invoke(main, ["releases", "--store", str(store.root), "--repair"])
    assert repaired.exit_code == 0 and "restored 3 entries from index.json.bak" in repaired.output
    assert "v3" in repaired.output  # then lists them

    clean = runner.invoke(main, ["verify", str(store.root / "v2")])
    assert clean.exit_code == 0, clean.output + clean.stderr
    _tamper_release(store, 2)
    tampered = runner.invoke(main, ["verify", str(store.root / "v2")])  # lock and files agree: only the index knows
    assert tampered.exit_code == VerifyError.exit_code and "recorded in index.json" in tampered.stderr
    refused = runner.invoke(main, ["releases", "--store", str(store.root), "--repair"])
    assert refused.exit_code == 0 and "intact" in refused.output  # the index is fine: nothing to repair


def test_status_rehashes_the_release_it_reports(store: ReleaseStore) -> None:
    from tritonkit.deploy.local import LocalEnvironment

    env = LocalEnvironment(store, url="127.0.0.1:1")
    env.record("promote", None, store.get(3), "ok")
    assert env.status().current == store.get(3)
    root = store.root / "v3"
    make_writable(root)
    (root / "m" / "3" / "model.py").write_text("# changed, lock left alone\n")
    set_read_only(root)
    with pytest.raises(VerifyError, match="v3 in .* failed verification"):
        env.status()
