"""The models layer's cache key (release/oci.py): what the layer's bytes depend on, all of it."""

from __future__ import annotations

from pathlib import Path

from tritonkit.artifact.lock import Lock
from tritonkit.release.layers import Entry, Layer
from tritonkit.release.oci import _Plan


def test_a_cached_models_layer_is_keyed_by_the_lock_files_bytes_too(tmp_path: Path) -> None:
    """Two releases of one build have one lock digest, but their lock files may differ (what the
    digest leaves out); keyed by the digest alone, the second publish took the first one's layer
    digest from the cache and the registry refused its bytes (DIGEST_INVALID)."""

    def plan(lock_text: str) -> _Plan:
        root = tmp_path / lock_text
        root.mkdir(exist_ok=True)
        (root / "tritonkit.lock.json").write_text(lock_text)
        entries = [Entry("models", 0o555), Entry("models/tritonkit.lock.json", 0o444, root / "tritonkit.lock.json")]
        shell = Layer("application/vnd.oci.image.layer.v1.tar+gzip", (), "sha256:0", 0, "sha256:0")
        return _Plan(Lock(repository="r", digest="sha256:" + "a" * 64, files={}), shell, entries)

    assert plan("one").key != plan("two").key  # same size, same digest, other bytes
    assert plan("one").key == _Plan(plan("one").lock, plan("one").shell, plan("one").entries).key
