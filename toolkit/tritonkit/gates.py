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

from .errors import SpecError

FAILED_REASONS = frozenset(
    {"RevisionFailed", "RevisionMissing", "ContainerMissing", "ModelLoadFailed", "InternalError", "InvalidSpec"}
)
"""Condition reasons that no amount of waiting fixes."""


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
    generation = int(document.get("metadata", {}).get("generation", 0))
    status = document.get("status", {}) or {}
    observed = int(status.get("observedGeneration", 0) or 0)
    if observed < generation:
        return Gate(False, False, f"KServe has not observed generation {generation} yet (at {observed})")
    for condition in status.get("conditions", []) or []:
        if condition.get("status") == "False" and condition.get("reason") in FAILED_REASONS:
            message = condition.get("message", "")
            return Gate(False, True, f"{condition['type']}: {condition['reason']} {message}".strip())
    if mode == "Serverless":
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

    KServe then routes all traffic to the previously rolled-out revision and none to the latest
    (failed or unwanted) one. Readiness of the latest revision is not required: it may be the
    reason for the rollback.
    """
    generation = int(document.get("metadata", {}).get("generation", 0))
    status = document.get("status", {}) or {}
    observed = int(status.get("observedGeneration", 0) or 0)
    if observed < generation:
        return Gate(False, False, f"KServe has not observed generation {generation} yet (at {observed})")
    predictor = (status.get("components", {}) or {}).get("predictor", {}) or {}
    traffic = predictor.get("traffic", []) or []
    latest = sum(int(t.get("percent", 0) or 0) for t in traffic if t.get("latestRevision"))
    if latest:
        return Gate(False, False, f"{latest}% of traffic still on the latest revision")
    previous = predictor.get("previousRolledoutRevision")
    serving = sum(int(t.get("percent", 0) or 0) for t in traffic if t.get("revisionName") == previous)
    if not previous or serving != 100:
        return Gate(False, False, f"{serving}% of traffic on the previous revision {previous or '?'}, want 100%")
    return Gate(True, False, f"all traffic back on {previous}")


def check_canary(mode: str, canary: int | None) -> None:
    """Refuse a canary where KServe would silently ignore it.

    Raises:
        SpecError: a canary percentage outside 1..99, or any canary in RawDeployment mode.
    """
    if canary is None:
        return
    if not 0 < canary < 100:
        raise SpecError(f"--canary must be between 1 and 99, got {canary}", hint="e.g. --canary 10")
    if mode != "Serverless":
        raise SpecError(
            f"canary rollouts need KServe's Serverless mode; this environment is {mode}, where "
            "canaryTrafficPercent is silently ignored",
            hint="promote without --canary (a blue/green switch gated on readiness), or use a Serverless environment",
        )
