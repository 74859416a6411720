"""Rollout gates over InferenceService documents shaped like KServe's v1beta1 status."""

from __future__ import annotations

import copy

import pytest

from tritonkit import UsageError
from tritonkit.deploy.gates import check_canary, evaluate, normalize_mode, rolled_back

# A Serverless InferenceService mid-canary, in the shape KServe writes its status (v1beta1
# InferenceServiceStatus: conditions, components.predictor revisions and traffic).
CANARY = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "demo", "namespace": "ml", "generation": 4},
    "status": {
        "observedGeneration": 4,
        "conditions": [
            {"type": "IngressReady", "status": "True"},
            {"type": "PredictorReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "components": {
            "predictor": {
                "latestCreatedRevision": "demo-predictor-00004",
                "latestReadyRevision": "demo-predictor-00004",
                "latestRolledoutRevision": "demo-predictor-00003",
                "traffic": [
                    {"revisionName": "demo-predictor-00004", "percent": 10, "latestRevision": True, "tag": "latest"},
                    {"revisionName": "demo-predictor-00003", "percent": 90, "latestRevision": False, "tag": "prev"},
                ],
            }
        },
    },
}


def _with(**changes: object) -> dict:
    document = copy.deepcopy(CANARY)
    for path, value in changes.items():
        node = document
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return document


def test_a_settled_canary_passes_only_at_the_asked_split() -> None:
    assert evaluate(CANARY, mode="Serverless", canary=10).passed
    waiting = evaluate(CANARY, mode="Serverless", canary=None)
    assert not waiting.passed and not waiting.failed and "10% of traffic" in waiting.reason


def test_an_unobserved_generation_is_not_judged_on_stale_status() -> None:
    gate = evaluate(_with(metadata__generation=5), mode="Serverless", canary=10)
    assert not gate.passed and not gate.failed and "not observed generation 5" in gate.reason


def test_a_revision_still_coming_up_waits() -> None:
    predictor = copy.deepcopy(CANARY["status"]["components"]["predictor"])
    predictor["latestReadyRevision"] = "demo-predictor-00003"
    gate = evaluate(_with(status__components__predictor=predictor), mode="Serverless", canary=10)
    assert not gate.passed and not gate.failed and "demo-predictor-00004 is not ready" in gate.reason


def test_a_failed_revision_ends_the_wait() -> None:
    conditions = [
        {"type": "PredictorReady", "status": "False", "reason": "RevisionFailed", "message": "model failed to load"},
        {"type": "Ready", "status": "False", "reason": "RevisionFailed"},
    ]
    gate = evaluate(_with(status__conditions=conditions), mode="Serverless", canary=10)
    assert gate.failed and "RevisionFailed model failed to load" in gate.reason


def test_raw_deployment_needs_ready_and_the_observed_generation_only() -> None:
    raw = {
        "metadata": {"generation": 2},
        "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert evaluate(raw, mode="RawDeployment").passed
    not_ready = copy.deepcopy(raw)
    not_ready["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "Progressing"}]
    gate = evaluate(not_ready, mode="RawDeployment")
    assert not gate.passed and not gate.failed and "Progressing" in gate.reason
    assert not evaluate({"metadata": {"generation": 1}}, mode="RawDeployment").passed


def test_canary_is_refused_where_kserve_would_ignore_it() -> None:
    check_canary("Serverless", 10)
    check_canary("RawDeployment", None)
    with pytest.raises(UsageError, match="silently ignored"):
        check_canary("RawDeployment", 10)
    with pytest.raises(UsageError, match="1 to 99 percent"):
        check_canary("Serverless", 100)


def test_a_canary_rollback_with_zero_percent_passes_once_the_previous_revision_has_all_traffic() -> None:
    failed_canary = copy.deepcopy(CANARY)
    predictor = failed_canary["status"]["components"]["predictor"]
    predictor["latestReadyRevision"] = "demo-predictor-00003"  # the new revision never came up
    # KServe pins 'prev' to latestRolledoutRevision; previousRolledoutRevision may be absent.
    assert not rolled_back(failed_canary).passed  # still 10% on the latest
    predictor["traffic"][0]["percent"], predictor["traffic"][1]["percent"] = 0, 100
    gate = rolled_back(failed_canary)
    assert gate.passed and "demo-predictor-00003" in gate.reason
    failed_canary["metadata"]["generation"] = 5  # the canaryTrafficPercent: 0 patch not yet observed
    assert not rolled_back(failed_canary).passed


def test_kserve_0_17_mode_names_mean_the_same() -> None:
    assert normalize_mode("Knative") == "Serverless" and normalize_mode("Standard") == "RawDeployment"
    assert evaluate(CANARY, mode="Knative", canary=10).passed
    assert not evaluate(CANARY, mode="Knative", canary=20).passed
    with pytest.raises(UsageError, match="Serverless mode"):
        check_canary("Standard", 10)


def test_status_without_observed_generation_is_judged_on_the_rest() -> None:
    """KServe before 0.10 never writes status.observedGeneration."""
    old = copy.deepcopy(CANARY)
    del old["status"]["observedGeneration"]
    assert evaluate(old, mode="Serverless", canary=10).passed


def test_a_model_that_will_not_load_ends_the_wait() -> None:
    broken = _with(
        status__modelStatus={
            "transitionStatus": "BlockedByFailedLoad",
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "config.pbtxt: unknown backend"},
        }
    )
    gate = evaluate(broken, mode="RawDeployment")
    assert gate.failed and "ModelLoadFailed" in gate.reason and "unknown backend" in gate.reason
