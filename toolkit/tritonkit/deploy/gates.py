"""Status gates for KServe rollouts: is an InferenceService where a promotion step wants it?

Pure functions over the InferenceService document the API server returns; no cluster calls.
A step passes only when everything agrees:

* ``status.observedGeneration`` has caught up with ``metadata.generation`` (KServe has seen the
  change at all — until then every other field describes the previous spec);
* the ``Ready`` condition is ``True``;
* Serverless (Knative) only: the predictor's ``latestReadyRevision`` equals its
  ``latestCreatedRevision`` (the new revision came up), and the share of traffic on the latest
  revision is exactly what the step asked for (the canary percentage, or 100).

A condition that is ``False`` with a reason KServe uses for broken revisions or models ends the
wait at once (:attr:`Gate.failed`), so a bad release is rolled back without sitting out the
timeout. In RawDeployment mode KServe ignores ``canaryTrafficPercent``; :func:`check_canary`
refuses it there instead of pretending.

Example:
    >>> gate = evaluate(isvc, mode="Serverless", canary=10)
    >>> gate.passed, gate.reason
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tritonkit.errors import UsageError

FAILED_REASONS = frozenset(
    {
        # Serverless (Knative) revisions
        "RevisionFailed",
        "RevisionMissing",
        "ContainerMissing",
        # RawDeployment / Standard (the Deployment and KServe's reconciler)
        "ProgressDeadlineExceeded",
        "ReconcileFailed",
        "InvalidGPUAllocation",
    }
)
"""Condition reasons (with status False) that no amount of waiting fixes."""

FAILED_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})
"""``status.modelStatus.transitionStatus`` values that mean the model will not load."""

MODES = {
    "Serverless": "Serverless",
    "Knative": "Serverless",
    "RawDeployment": "RawDeployment",
    "Standard": "RawDeployment",
}
"""KServe 0.17 renamed the modes (its webhook rewrites Serverless to Knative, RawDeployment to
Standard); both spellings mean the same here."""


def normalize_mode(mode: str) -> str:
    """``Serverless`` or ``RawDeployment`` for any spelling KServe uses (unknown names unchanged)."""
    return MODES.get(mode, mode)


@dataclass(frozen=True)
class Gate:
    """Where a rollout step stands: passed, failed for good, or still waiting (with why)."""

    passed: bool
    failed: bool
    reason: str


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in status.get("conditions", []) or []:
        if condition.get("type") == kind:
            return condition
    return {}


def evaluate(document: Mapping[str, Any], *, mode: str, canary: int | None = None) -> Gate:
    """Judge an InferenceService document against the step's intent."""
    status = document.get("status", {}) or {}
    stale = _stale(document)
    if stale:
        return stale
    for condition in status.get("conditions", []) or []:
        if condition.get("status") == "False" and condition.get("reason") in FAILED_REASONS:
            message = condition.get("message", "")
            return Gate(False, True, f"{condition['type']}: {condition['reason']} {message}".strip())
    model_status = status.get("modelStatus", {}) or {}
    if model_status.get("transitionStatus") in FAILED_TRANSITIONS:
        failure = model_status.get("lastFailureInfo", {}) or {}
        detail = " ".join(str(failure.get(k, "")) for k in ("reason", "message")).strip()
        return Gate(False, True, f"model {model_status['transitionStatus']}: {detail}".strip())
    if normalize_mode(mode) == "Serverless":
        predictor = (status.get("components", {}) or {}).get("predictor", {}) or {}
        created, ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
        if not created or created != ready:
            return Gate(False, False, f"revision {created or '?'} is not ready yet (ready: {ready or 'none'})")
        latest = sum(
            int(t.get("percent", 0) or 0) for t in predictor.get("traffic", []) or [] if t.get("latestRevision")
        )
        wanted = 100 if canary is None else canary
        if latest != wanted:
            return Gate(False, False, f"{latest}% of traffic on the latest revision, want {wanted}%")
    ready_condition = _condition(status, "Ready")
    if ready_condition.get("status") != "True":
        why = ready_condition.get("reason") or ready_condition.get("message") or "no Ready condition yet"
        return Gate(False, False, f"not Ready: {why}")
    return Gate(True, False, "ready")


def rolled_back(document: Mapping[str, Any]) -> Gate:
    """Has ``canaryTrafficPercent: 0`` taken effect (Serverless rollback of a canary)?

    KServe then routes all traffic to the revision it pinned as ``prev`` (its last rolled-out
    one: the traffic target tagged ``prev``, which is ``latestRolledoutRevision`` — not
    ``previousRolledoutRevision``, which only moves when a revision reaches 100%) and none to the
    latest (failed or unwanted) one. Readiness of the latest revision is not required: it may be
    the reason for the rollback.
    """
    stale = _stale(document)
    if stale:
        return stale
    status = document.get("status", {}) or {}
    predictor = (status.get("components", {}) or {}).get("predictor", {}) or {}
    traffic = predictor.get("traffic", []) or []
    latest = sum(int(t.get("percent", 0) or 0) for t in traffic if t.get("latestRevision"))
    if latest:
        return Gate(False, False, f"{latest}% of traffic still on the latest revision")
    pinned = [t for t in traffic if t.get("tag") == "prev" and not t.get("latestRevision")]
    serving = sum(int(t.get("percent", 0) or 0) for t in pinned)
    name = pinned[0].get("revisionName", "?") if pinned else "?"
    if serving != 100:
        return Gate(False, False, f"{serving}% of traffic on the previous ('prev') revision {name}, want 100%")
    return Gate(True, False, f"all traffic back on {name}")


def _stale(document: Mapping[str, Any]) -> Gate | None:
    """A waiting Gate while KServe's status still describes an older generation, else None.

    ``status.observedGeneration`` is copied from the child object (the Knative Service, or the
    Deployment in RawDeployment mode) and is absent before KServe 0.10; when absent, the other
    fields decide alone.
    """
    generation = int(document.get("metadata", {}).get("generation", 0))
    status = document.get("status", {}) or {}
    if status.get("observedGeneration") is None:
        return None
    observed = int(status["observedGeneration"])
    if observed < generation:
        return Gate(False, False, f"KServe has not observed generation {generation} yet (at {observed})")
    return None


def check_canary(mode: str, canary: int | None) -> None:
    """Refuse a canary where KServe would silently ignore it.

    Raises:
        UsageError: a canary percentage outside 1..99, or any canary in RawDeployment mode.
    """
    if canary is None:
        return
    if not 0 < canary < 100:
        raise UsageError(f"a canary must send 1 to 99 percent of the traffic, got {canary}", hint="e.g. 10")
    if normalize_mode(mode) != "Serverless":
        raise UsageError(
            f"canary rollouts need KServe's Serverless mode; this environment is {mode}, where "
            "canaryTrafficPercent is silently ignored",
            hint="promote the whole release (a blue/green switch gated on readiness), or use a Serverless environment",
        )
