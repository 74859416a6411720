"""The stepped promotion's pure parts: the plan of steps, the walk's decisions (on counters made up
by hand; tests/integration/test_canary_analysis.py walks a real Prometheus), and the KServe
revision selectors."""

from __future__ import annotations

import pytest

from tritonkit.deploy.canary import Side, plan_steps, walk
from tritonkit.deploy.kserve import llm_models, revision_pods, serving_revision
from tritonkit.errors import UsageError
from tritonkit.serve.metrics import Histogram, ModelCounters
from tritonkit.slo.analysis import Reads, Window
from tritonkit.spec.intent import Slo

INTENT = {"echo": (Slo(p99_ms=100), None)}


def _window(requests: float, p99_ms: float) -> Window:
    empty = ModelCounters(0, 0, 0, 0, 0, 0, 0)
    return empty, ModelCounters(10, requests, 0, requests, requests, requests * 1e3, 0, {0.99: p99_ms * 1e3})


def test_steps_default_to_a_canary_where_traffic_splits_and_end_at_100() -> None:
    assert plan_steps(None, split=True) == [10, 50, 100]
    assert plan_steps(None, split=False) == [100]
    assert plan_steps([5, 25], split=True) == [5, 25, 100]
    assert plan_steps([100], split=False) == [100]


@pytest.mark.parametrize("steps", [[50, 10], [0, 50], [10, 10, 100], [10, 150], []])
def test_steps_that_are_not_increasing_percentages_are_refused(steps: list[int]) -> None:
    with pytest.raises(UsageError, match="traffic steps must"):
        plan_steps(steps, split=True)


def test_steps_where_traffic_cannot_split_are_refused_with_a_way_out() -> None:
    with pytest.raises(UsageError, match="cannot split traffic") as caught:
        plan_steps([10, 50, 100], split=False)
    assert "without steps" in caught.value.hint


class _Cluster:
    """Where the traffic is (the percentage on the new release) and what each side measures."""

    def __init__(self, new_p99_ms: float) -> None:
        self.new_p99_ms, self.percent, self.restored = new_p99_ms, 0, False
        self.shifts: list[int] = []

    def shift(self, percent: int) -> None:
        self.percent = percent
        self.shifts.append(percent)

    def restore(self) -> None:
        self.restored, self.percent = True, 0

    def read(self, side: Side) -> Reads:
        share = self.percent if side == "new" else 100 - self.percent
        return {"echo": _window(10 * share, self.new_p99_ms if side == "new" else 5)} if share else {}


def test_a_good_release_walks_every_step() -> None:
    cluster = _Cluster(new_p99_ms=6)
    outcome = walk([10, 50, 100], shift=cluster.shift, restore=cluster.restore, read=cluster.read,
                   intent=INTENT, seconds=60, sleep=lambda s: None)  # fmt: skip
    assert outcome.ok and cluster.shifts == [10, 50, 100] and outcome.failed_at is None
    assert [s.percent for s in outcome.steps] == [10, 50, 100]
    last = outcome.steps[-1].verdicts[0]  # at 100% the previous release serves nothing: its 50% window
    assert last.numbers["baseline_p99_ms"] == 5 and last.numbers["rps"] == 100


def test_a_slow_release_stops_at_the_first_step_and_the_traffic_goes_back() -> None:
    cluster = _Cluster(new_p99_ms=60)  # inside the 100 ms SLO, but 12x the previous release
    outcome = walk([10, 50, 100], shift=cluster.shift, restore=cluster.restore, read=cluster.read,
                   intent=INTENT, seconds=60, sleep=lambda s: None)  # fmt: skip
    assert not outcome.ok and outcome.failed_at == 10 and cluster.shifts == [10, 0] and not cluster.restored
    assert outcome.evidence == "echo: p99 60.0 ms is 12.0x the previous release's 5.0 ms"


def test_a_violation_at_100_percent_restores_the_previous_release() -> None:
    cluster = _Cluster(new_p99_ms=500)  # over the SLO
    outcome = walk([100], shift=cluster.shift, restore=cluster.restore, read=cluster.read,
                   intent=INTENT, seconds=60, sleep=lambda s: None)  # fmt: skip
    assert outcome.failed_at == 100 and cluster.shifts == [100] and cluster.restored
    assert "p99 500.0 ms > 100" in outcome.evidence  # and the baseline read before the switch
    assert "5.0 ms" in outcome.evidence


def _generations(requests: float, ttft_ms: float, failed: float = 0) -> Window:
    """An llm model's window as Prometheus answers it: every first token in the bucket up to
    ``ttft_ms``, TPOTs of 20-50 ms; ``failed`` error responses already moved out of the successes."""
    empty = ModelCounters(0, 0, 0, 0, 0, 0, 0)
    ttft = Histogram(((ttft_ms / 2e3, 0.0), (ttft_ms / 1e3, requests), (float("inf"), requests)))
    tpot = Histogram(((0.02, 0.0), (0.05, 10 * requests), (float("inf"), 10 * requests)))
    after = ModelCounters(10, requests - failed, failed, requests, requests, 0, 0, {0.99: 1e6}, ttft=ttft, tpot=tpot,
                          waiting=0, running=1, kv_usage=0.1)  # fmt: skip
    return empty, after


def test_an_llm_canary_is_judged_on_ttft_and_its_error_responses() -> None:
    intent = {"chat": (Slo(ttft_p99_ms=200, tpot_p99_ms=100, error_rate=0.05), None)}

    def read(ttft_ms: float, failed: float = 0):  # type: ignore[no-untyped-def]
        def reads(side: Side) -> Reads:
            return {"chat": _generations(100, ttft_ms if side == "new" else 50, failed if side == "new" else 0)}

        return reads

    shifts: list[int] = []
    slow = walk([10, 50, 100], shift=shifts.append, restore=lambda: None, read=read(800), intent=intent,
                seconds=60, sleep=lambda s: None)  # fmt: skip
    assert slow.failed_at == 10 and shifts == [10, 0]
    assert slow.evidence.startswith("chat: TTFT p99 79")  # interpolated in the 400-800 ms bucket
    assert "> 200" in slow.evidence and "x the previous release's 49.8 ms" in slow.evidence
    failing = walk([10, 100], shift=lambda p: None, restore=lambda: None, read=read(50, failed=10), intent=intent,
                   seconds=60, sleep=lambda s: None)  # fmt: skip
    assert failing.failed_at == 10 and "error rate 10.00% > 5.00%" in failing.evidence
    good = walk([10, 100], shift=lambda p: None, restore=lambda: None, read=read(60), intent=intent,
                seconds=60, sleep=lambda s: None)  # fmt: skip
    assert good.ok  # a request p99 of 1 s on both sides is not judged for an llm


def test_the_llm_models_of_a_release_are_told_by_their_locked_kind() -> None:
    locked = {"chat": {"kind": "llm", "slo": {}}, "clf": {"kind": "onnx"}, "old": {}}
    assert llm_models(locked) == {"chat"}


def test_a_revision_is_selected_by_its_pods() -> None:
    assert (
        revision_pods("prod", "clf", "clf-predictor-00002")
        == 'namespace="prod",pod=~"clf-predictor-00002-deployment-.+"'
    )
    assert revision_pods("prod", "clf", None) == 'namespace="prod",pod=~"clf-predictor-.+"'


def test_the_serving_revision_is_the_one_with_the_most_traffic() -> None:
    canary = {"status": {"components": {"predictor": {
        "latestReadyRevision": "clf-predictor-00002",
        "traffic": [
            {"revisionName": "clf-predictor-00002", "percent": 10, "latestRevision": True, "tag": "latest"},
            {"revisionName": "clf-predictor-00001", "percent": 90, "latestRevision": False, "tag": "prev"},
        ],
    }}}}  # fmt: skip
    assert serving_revision(canary) == "clf-predictor-00001"
    assert serving_revision({"status": {"components": {"predictor": {"latestReadyRevision": "a-1"}}}}) == "a-1"
    assert serving_revision({}) is None
