"""Session fixtures that build the example project and start the real embedded Triton once."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import copy_example
from tests.scheduling import MEASURE, rank
from tritonkit import BuildResult, Endpoints, TritonServer, build_repository, load_spec
from tritonkit.artifact.layout import make_writable, remove_tree
from tritonkit.serve.endpoints import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "model_repository"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark integration tests (and the measuring ones ``serial``: ``pytest -m serial`` runs just
    them) and order modules as tests/scheduling.py says: make test's workers take units in this order."""
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if Path(str(item.fspath)).stem in MEASURE:
                item.add_marker(pytest.mark.serial)
    items.sort(key=lambda item: rank(Path(str(item.fspath)).stem))  # stable: the order within a module is kept


@pytest.fixture(scope="session")
def example_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of model_repository/ (tests may edit it)."""
    target = tmp_path_factory.mktemp("example") / "model_repository"
    copy_example(target)
    return target


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build cache for the whole run. Entries are keyed by what goes into them, so sharing
    changes no result; it spares each module rebuilding the same models (the example's
    random-init LLM takes ~8 s)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory, example_copy: Path, model_cache: Path) -> BuildResult:
    out = tmp_path_factory.mktemp("dist")
    return build_repository(load_spec(example_copy / "tritonkit.yaml"), out, cache_dir=model_cache)


@pytest.fixture(scope="session")
def demo_server(demo_build: BuildResult) -> Iterator[TritonServer]:
    server = TritonServer(demo_build.path, endpoints=Endpoints.allocate())
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def writable_copy(demo_build: BuildResult, tmp_path: Path) -> Iterator[Path]:
    """A writable copy of the demo repository, for tampering."""
    target = tmp_path / demo_build.path.name
    shutil.copytree(demo_build.path, target)
    make_writable(target)
    yield target
    remove_tree(target)


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fresh registry per test (blobs are shared across repositories, and one test tampers)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("Debian's docker-registry is not installed ('make sysdeps' installs it)")
    storage, port = tmp_path / "registry", free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {storage}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                break
        except OSError:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "docker-registry did not start"
            time.sleep(0.1)
    yield f"127.0.0.1:{port}", storage
    process.terminate()
    process.communicate(timeout=10)
