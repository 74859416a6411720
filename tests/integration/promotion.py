"""What the promotion tests share: a store of three example releases, and a local environment
served by a real Triton on free loopback ports."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as httpclient

from tests.helpers import Background, copy_example
from tritonkit import Endpoints, TritonServer, build_repository, load_spec
from tritonkit.deploy.local import LocalEnvironment
from tritonkit.release.store import ReleaseStore

# A python model that answers each batch after ``{delay}`` seconds (format it): a release that is
# slow on purpose, for the analysis gates.
ECHO_MODEL = """
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({delay})
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
            for r in requests
        ]
"""


def three_releases(project: Path, extra_model: str, model_py: str, spec_extra: str) -> ReleaseStore:
    """v1 = the example, v2 = another batching delay, v3 = v2 plus ``extra_model``."""
    copy_example(project)
    cache = project.parent / "cache"
    releases = ReleaseStore(project / "releases")
    spec = project / "tritonkit.yaml"

    def release() -> None:
        releases.create(build_repository(load_spec(spec), project / "dist", cache_dir=cache).path)

    release()
    spec.write_text(spec.read_text().replace("max_queue_delay_microseconds: 2000", "max_queue_delay_microseconds: 700"))
    release()
    (project / "models" / extra_model).mkdir()
    (project / "models" / extra_model / "model.py").write_text(model_py)
    spec.write_text(spec.read_text() + spec_extra)
    release()
    return releases


@contextmanager
def unproved(env: LocalEnvironment) -> Iterator[LocalEnvironment]:
    """``env`` promoting without a proof first, for the promotions that only set up a test's
    starting point: each proof is a scratch Triton loading every model, several seconds on a
    2-core host, and the promotions under test still prove."""
    proving, env.prove = env.prove, False
    try:
        yield env
    finally:
        env.prove = proving


@contextmanager
def served_local(store: ReleaseStore, **options: Any) -> Iterator[tuple[LocalEnvironment, TritonServer]]:
    """The store's local environment, served (nothing loaded yet) by an embedded Triton."""
    env = LocalEnvironment(store, **options)
    server = TritonServer(env.prepare(), endpoints=Endpoints.allocate(), models=[])
    server.start()
    env.url = server.endpoints.http_url.removeprefix("http://")
    try:
        yield env, server
    finally:
        server.stop()


class UnpinnedLoad(Background):
    """Two threads sending the example classifier requests without a pinned version, counting
    answers per version; every failure is kept, none is hidden."""

    def __init__(self, url: str) -> None:
        super().__init__(threads=2)
        self.url = url
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        client = httpclient.InferenceServerClient(self.url)
        tensor = httpclient.InferInput("features", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
        while not self.stop.is_set():
            try:
                version = client.infer("classifier", [tensor]).get_response()["model_version"]
                with self.lock:
                    self.versions[version] += 1
            except Exception as exc:
                with self.lock:
                    self.failures.append(str(exc))
