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
from tests.integration.promotion import served_local, unproved
from tritonkit import TritonServer, build_repository, load_spec
from tritonkit.deploy.local import LocalEnvironment
from tritonkit.errors import PromoteError
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


# Issue 26 row 1: a release that the old one's presence makes fail. Each server has one "device":
# a lock file named after the tritonserver process the stub belongs to. v1's `first` holds it
# shared for as long as it is loaded; v2's `second` needs it alone. So v2 loads on a server where
# no v1 `first` is loaded, and fails where one is -- as a release fails live when the old one
# holds the memory it needs. Each model answers with its version and its config's `tag`
# parameter: an old version running under the new release's config shows as a mixed pair.
CONTENDED_SPEC = """
name: contended
models:
  - name: first
    kind: python
    path: models/first
    max_batch_size: 0
    parameters: {{tag: {release}}}
    inputs: [{{name: x, dtype: FP32, dims: [1]}}]
    outputs: [{{name: v, dtype: FP32, dims: [2]}}]
  - name: second
    kind: python
    path: models/second
    max_batch_size: 0
    parameters: {{tag: {release}}}
    inputs: [{{name: v, dtype: FP32, dims: [2]}}]
    outputs: [{{name: all, dtype: FP32, dims: [4]}}]
  - name: chain
    kind: ensemble
    max_batch_size: 0
    steps:
      - {{model: first, inputs: {{x: x}}, outputs: {{v: v}}}}
      - {{model: second, inputs: {{v: v}}, outputs: {{all: all}}}}
    expose: [all]
"""

CONTENDED = """
import fcntl
import json
import os
import numpy as np
import triton_python_backend_utils as pb_utils

DEVICE = {device!r} + "-" + str(os.getppid())  # one per tritonserver process
MODE = {mode!r}


class TritonPythonModel:
    def initialize(self, args):
        self.version = float(args["model_version"])
        self.tag = float(json.loads(args["model_config"])["parameters"]["tag"]["string_value"])
        if MODE == "hold":
            self.device = open(DEVICE, "a")
            fcntl.flock(self.device, fcntl.LOCK_SH)
        elif MODE == "alone":
            with open(DEVICE, "a") as device:
                try:
                    fcntl.flock(device, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise RuntimeError("the device is held by another model") from None

    def execute(self, requests):
        out = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, {input!r}).as_numpy().ravel()
            mine = np.array([self.version, self.tag], np.float32)
            value = mine if tensor.size == 1 else np.concatenate([tensor, mine])
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor({output!r}, value)]))
        return out
"""


# (release, tag, first's mode, second's mode): v2 and v3 fail where v1's `first` is loaded; v3 has
# v1's configs (its old versions stay as they are beside the new), v2 and v4 have configs of their own
# (stand-ins run the old versions meanwhile).
CONTENDED_RELEASES = ((1, 1, "hold", "none"), (2, 2, "none", "alone"), (3, 1, "none", "alone"), (4, 4, "none", "none"))


@pytest.fixture(scope="module")
def contended(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalEnvironment, TritonServer]]:
    project = tmp_path_factory.mktemp("contended")
    device = str(project / "device")
    store = ReleaseStore(project / "releases")
    for release, tag, first_mode, second_mode in CONTENDED_RELEASES:
        for model, mode, names in (("first", first_mode, ("x", "v")), ("second", second_mode, ("v", "all"))):
            (project / "models" / model).mkdir(parents=True, exist_ok=True)
            text = CONTENDED.format(device=device, mode=mode, input=names[0], output=names[1])
            (project / "models" / model / "model.py").write_text(text + f"# release {release}\n")
        (project / "tritonkit.yaml").write_text(CONTENDED_SPEC.format(release=tag))
        store.create(build_repository(load_spec(project / "tritonkit.yaml"), project / "dist").path)
    with served_local(store) as served:
        yield served


def _from_v1(env: LocalEnvironment) -> None:
    current = env.current()
    if current is None or current.number != 1:
        with unproved(env):
            env.promote(1)


def _served_as_recorded(env: LocalEnvironment, name: str) -> None:
    state = env.status()
    assert state.current.name == name and state.differences == [], state.differences  # type: ignore[union-attr]
    assert not [p.name for p in env.live.iterdir() if ".standin-" in p.name]


class _Answers(Background):
    """Direct requests to `first` and ensemble requests to `chain`, counted by what answered."""

    def __init__(self, url: str) -> None:
        super().__init__(threads=2)
        self.url = url
        self.direct: Counter[tuple[int, ...]] = Counter()
        self.chain: Counter[tuple[int, ...]] = Counter()
        self.failures: list[str] = []

    def run(self) -> None:
        client = httpclient.InferenceServerClient(self.url)
        tensor = httpclient.InferInput("x", [1], "FP32")
        tensor.set_data_from_numpy(np.zeros(1, dtype=np.float32))
        while not self.stop.is_set():
            try:
                self.direct[tuple(int(v) for v in client.infer("first", [tensor]).as_numpy("v"))] += 1
                self.chain[tuple(int(v) for v in client.infer("chain", [tensor]).as_numpy("all"))] += 1
            except Exception as exc:  # every failure is counted
                self.failures.append(str(exc))


def test_a_release_the_old_one_makes_fail_is_refused_before_it_answers(
    contended: tuple[LocalEnvironment, TritonServer],
) -> None:
    """The proof loads the release as live will hold it while it switches: beside the old
    versions of the steps a served ensemble runs (here as stand-ins). v2 fails there, and nothing
    of it answers; before, it passed the proof, failed live, and answered 412 direct requests and
    411 ensemble requests with v1's `first` under v2's config."""
    env, _ = contended
    _from_v1(env)
    events: list[str] = []
    with _Answers(env.url) as load, pytest.raises(PromoteError) as failed:
        env.promote(2, progress=lambda event: events.append(event.message))
    assert "device is held" in failed.value.message, failed.value.message
    assert not any(message.startswith(("loading ", "standing in")) for message in events), events  # live unchanged
    assert load.failures == [], load.failures[:3]
    assert set(load.direct) == {(1, 1)}, load.direct
    assert set(load.chain) == {(1, 1, 1, 1)}, load.chain
    _served_as_recorded(env, "v1")
    assert not (env.root / "scratch").exists()


@pytest.mark.parametrize(("release", "kept"), [(2, False), (3, True)])
def test_undoing_a_live_failure_never_keeps_the_failed_release(
    contended: tuple[LocalEnvironment, TritonServer], release: int, kept: bool
) -> None:
    """Without the proof the release fails live, after `first` switched. Direct requests to
    `first` go to its newest version once it is ready (Triton's routing), so they see the new
    release's `first` until the undo; the undo retires it at once -- no served ensemble runs it,
    so it is never kept loaded (under v1's config) -- and every ensemble answer is v1's."""
    env, _ = contended
    _from_v1(env)
    events: list[str] = []
    with _Answers(env.url) as load, unproved(env), pytest.raises(PromoteError):
        env.promote(release, progress=lambda event: events.append(event.message))
    both = f"loaded first version 1, {release}"
    assert (both if kept else f"loaded first version {release}") in events, events  # the switch got to `first`
    undo = events[events.index(next(m for m in events if "failed; putting" in m)) :]
    assert "loaded first version 1" in undo and both not in undo, undo
    assert load.failures == [], load.failures[:3]
    assert set(load.direct) <= {(1, 1), (release, 1 if kept else release)}, load.direct
    assert set(load.chain) == {(1, 1, 1, 1)}, load.chain
    _served_as_recorded(env, "v1")


def test_a_step_whose_config_changes_never_runs_under_the_other_release_config(
    contended: tuple[LocalEnvironment, TritonServer],
) -> None:
    """v4 changes both steps' configs: while it switches (and switches back), the served ensemble
    runs stand-ins of the old versions under their own config; before, it answered with the old
    `first` under the new config."""
    env, _ = contended
    _from_v1(env)
    events: list[str] = []
    with _Answers(env.url) as load:
        env.promote(4, progress=lambda event: events.append(event.message))
        _served_as_recorded(env, "v4")
        env.rollback()
    assert load.failures == [], load.failures[:3]
    assert set(load.direct) == {(1, 1), (4, 4)}, load.direct
    assert set(load.chain) == {(1, 1, 1, 1), (4, 4, 4, 4)}, load.chain
    assert "pointing ensemble chain at the stand-ins" in events, events
    _served_as_recorded(env, "v1")
