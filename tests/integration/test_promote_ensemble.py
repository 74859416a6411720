"""An ensemble request never runs steps of two releases while a promotion switches them (issue 17
item 2): two python models that answer with their own version, chained by an ensemble."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.helpers import Background
from tests.integration.promotion import served_local
from tritonkit import TritonServer, build_repository, load_spec
from tritonkit.deploy.local import LocalEnvironment
from tritonkit.release.store import ReleaseStore

SPEC = """
name: pinned
models:
  - name: first
    kind: python
    path: models/first
    max_batch_size: 0
    inputs: [{name: x, dtype: FP32, dims: [1]}]
    outputs: [{name: v, dtype: FP32, dims: [1]}]
  - name: second
    kind: python
    path: models/second
    max_batch_size: 0
    inputs: [{name: v, dtype: FP32, dims: [1]}]
    outputs: [{name: pair, dtype: FP32, dims: [2]}]
  - name: chain
    kind: ensemble
    max_batch_size: 0
    steps:
      - {model: first, inputs: {x: x}, outputs: {v: v}}
      - {model: second, inputs: {v: v}, outputs: {pair: pair}}
    expose: [pair]
"""

# Each model answers with the version Triton loaded it as; 'second' takes a second to initialize
# so the moment between the two switches is wide enough to be hit.
FIRST = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.version = float(args["model_version"])

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("v", np.array([self.version], np.float32))])
                for _ in requests]
"""

SECOND = """
import time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.version = float(args["model_version"])
        time.sleep(1.0)

    def execute(self, requests):
        out = []
        for request in requests:
            v = pb_utils.get_input_tensor_by_name(request, "v").as_numpy()
            pair = np.array([v[0], self.version], np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("pair", pair)]))
        return out
"""


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalEnvironment, TritonServer]]:
    project = tmp_path_factory.mktemp("pinned")
    (project / "models" / "first").mkdir(parents=True)
    (project / "models" / "second").mkdir(parents=True)
    (project / "tritonkit.yaml").write_text(SPEC)
    store = ReleaseStore(project / "releases")
    for release in (1, 2):  # a comment changes each model's hash, so v2 is a release of its own
        (project / "models" / "first" / "model.py").write_text(FIRST + f"# release {release}\n")
        (project / "models" / "second" / "model.py").write_text(SECOND + f"# release {release}\n")
        store.create(build_repository(load_spec(project / "tritonkit.yaml"), project / "dist").path)
    with served_local(store, prove=False) as served:
        yield served


class _Pairs(Background):
    def __init__(self, url: str) -> None:
        super().__init__(threads=2)
        self.url = url
        self.pairs: Counter[tuple[int, int]] = Counter()
        self.failures: list[str] = []

    def run(self) -> None:
        client = httpclient.InferenceServerClient(self.url)
        tensor = httpclient.InferInput("x", [1], "FP32")
        tensor.set_data_from_numpy(np.zeros(1, dtype=np.float32))
        while not self.stop.is_set():
            try:
                first, second = client.infer("chain", [tensor]).as_numpy("pair").tolist()
                self.pairs[(int(first), int(second))] += 1
            except Exception as exc:  # every failure is counted
                self.failures.append(str(exc))


def test_no_ensemble_request_mixes_two_releases(pinned: tuple[LocalEnvironment, TritonServer]) -> None:
    env, _ = pinned
    env.promote(1)
    with _Pairs(env.url) as load:
        env.promote(2)
        env.rollback()
        env.promote(2)
    assert load.failures == [], load.failures[:3]
    assert set(load.pairs) == {(1, 1), (2, 2)}, load.pairs  # never (2, 1) or (1, 2)
    live = (env.live / "chain" / "config.pbtxt").read_text()
    assert live.count("model_version: 2") == 2, live  # the served ensemble names its steps' version
    state = env.status()
    assert state.current.name == "v2" and state.differences == [], state.differences  # type: ignore[union-attr]
    assert sorted(p.name for p in Path(env.live / "first").iterdir()) == ["2", "config.pbtxt"]
