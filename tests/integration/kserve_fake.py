"""A stand-in for a KServe Serverless cluster, for the tests of a walk that outlives its process.

There is no cluster here. This is a ``kubernetes`` dynamic client (the calls tritonkit makes:
``resources.get``, ``get``, ``server_side_apply``) that keeps the objects it is given in a JSON
file, so a killed ``promote`` and the next command see one cluster, and that plays KServe's
reconciler for an InferenceService's predictor, as KServe's source does it:

* a new revision when the predictor's spec changes other than ``canaryTrafficPercent``
  (Knative: a revision per template change);
* traffic targets: with ``canaryTrafficPercent`` and a rolled-out revision, that share on the
  latest revision and the rest on the last rolled-out one, tagged ``prev``; otherwise 100 % on
  the latest (``ksvc_reconciler.go``, ``NewKsvcReconciler``'s ``createKnativeService``);
* ``latestRolledoutRevision`` moves to the latest ready revision when it gets 100 %, and
  ``previousRolledoutRevision`` to the one before (``inference_service_status.go``
  ``PropagateStatus``);
* every revision becomes ready at once; ``observedGeneration`` follows ``generation``.

The objects applied are exactly what the renderer produced (tritonkit's ``apply`` sends them).
Run as ``python -m tests.integration.kserve_fake STATE ARGS…``, it runs the tritonkit CLI with
ARGS against the cluster in STATE and with :func:`healthy_reads` as Prometheus (the walk's
analysis is tested against a real Prometheus in test_canary_analysis.py; here only its
journal is).
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tritonkit.serve.metrics import ModelCounters


class NotFound(Exception):
    status = 404


class _Object:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.document)


class _Resource:
    def __init__(self, cluster: FakeCluster, kind: str) -> None:
        self.cluster, self.kind = cluster, kind

    def get(self, name: str, namespace: str) -> _Object:
        document = self.cluster.objects().get(f"{self.kind}/{namespace}/{name}")
        if document is None:
            raise NotFound(f"{self.kind} {name} not found")
        return _Object(document)

    def server_side_apply(self, body: dict[str, Any], name: str, namespace: str, **_: Any) -> _Object:
        objects = self.cluster.objects()
        key = f"{self.kind}/{namespace}/{name}"
        document = copy.deepcopy(body)
        if self.kind == "InferenceService":
            document = reconcile(objects.get(key), document)
        objects[key] = document
        self.cluster.save(objects)
        return _Object(document)


class _Resources:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def get(self, api_version: str, kind: str) -> _Resource:
        return _Resource(self.cluster, kind)


class FakeCluster:
    """The dynamic client; every object lives in ``state`` (JSON)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.resources = _Resources(self)

    def objects(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.state.read_text()) if self.state.exists() else {}

    def save(self, objects: dict[str, dict[str, Any]]) -> None:
        temp = self.state.with_suffix(".tmp")
        temp.write_text(json.dumps(objects))
        temp.replace(self.state)

    def predictor(self, namespace: str, name: str) -> dict[str, Any]:
        """The InferenceService's predictor status (revisions, traffic)."""
        return self.objects()[f"InferenceService/{namespace}/{name}"]["status"]["components"]["predictor"]

    def spec(self, namespace: str, name: str) -> dict[str, Any]:
        return self.objects()[f"InferenceService/{namespace}/{name}"]["spec"]


def reconcile(old: dict[str, Any] | None, document: dict[str, Any]) -> dict[str, Any]:
    """KServe's view of an applied InferenceService (module docstring)."""
    name = document["metadata"]["name"]
    before = (old or {}).get("status", {}).get("components", {}).get("predictor", {})
    template = {k: v for k, v in document["spec"]["predictor"].items() if k != "canaryTrafficPercent"}
    old_template = {
        k: v for k, v in (old or {}).get("spec", {}).get("predictor", {}).items() if k != "canaryTrafficPercent"
    }
    count = int(before.get("revisions", 0))
    latest = before.get("latestCreatedRevision", "")
    if old is None or template != old_template:
        count += 1
        latest = f"{name}-predictor-{count:05d}"
    rolled, previous = before.get("latestRolledoutRevision", ""), before.get("previousRolledoutRevision", "")
    canary = document["spec"]["predictor"].get("canaryTrafficPercent")
    traffic = [{"revisionName": latest, "latestRevision": True, "percent": 100}]
    if canary is not None and rolled:
        traffic = [{"revisionName": latest, "latestRevision": True, "percent": int(canary)}]
        if canary < 100:
            traffic.append(
                {"revisionName": rolled, "latestRevision": False, "percent": 100 - int(canary), "tag": "prev"}
            )
    on_latest = sum(t["percent"] for t in traffic if t["revisionName"] == latest)
    for target in traffic:
        if target["revisionName"] == latest and target["latestRevision"]:
            if rolled != latest and target["percent"] == 100:
                previous, rolled = rolled, latest
            elif rolled == latest and target["percent"] < 100 and on_latest == 100 and previous:
                rolled = previous
    generation = int((old or {}).get("metadata", {}).get("generation", 0)) + 1
    document["metadata"]["generation"] = generation
    document["status"] = {
        "observedGeneration": generation,
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {
            "predictor": {
                "revisions": count,
                "latestCreatedRevision": latest,
                "latestReadyRevision": latest,
                "latestRolledoutRevision": rolled,
                "previousRolledoutRevision": previous,
                "traffic": traffic,
            }
        },
    }
    return document


def healthy_reads(
    url: str, namespace: str, service: str, models: Iterable[str], seconds: float, revision: Any, **_: Any
) -> Callable[[str], dict[str, tuple[ModelCounters, ModelCounters]]]:
    """Prometheus as a walk would read it from a release that keeps its SLO: per model, 1000
    requests in the window, none failed, 10 ms each."""
    names = sorted(models)

    def read(side: str) -> dict[str, tuple[ModelCounters, ModelCounters]]:
        before = ModelCounters(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        after = ModelCounters(seconds, 1000.0, 0.0, 1000.0, 1000.0, 1e7, 1e5, quantiles_us={0.99: 20_000.0})
        return {name: (before, after) for name in names}

    return read


def install(state: Path) -> None:
    """Point tritonkit's KServe environment at the cluster in ``state`` and at :func:`healthy_reads`."""
    import tritonkit.deploy.kserve as kserve

    kserve.cluster = lambda env: FakeCluster(state)  # type: ignore[assignment]
    kserve.prometheus_reads = healthy_reads  # type: ignore[assignment]


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    from tritonkit.cli import main

    main(sys.argv[2:])
