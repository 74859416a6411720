"""Rules KServe enforces beyond its CRD schemas, checked on what the renderer produced.

The CRD schemas (tests/unit/test_crd.py) accept objects a real cluster then refuses or
misreads. The rules below are KServe's own, restated from its source (v0.15–0.16 line; the
functions named are where to read them):

- ``pkg/apis/serving/v1beta1/inference_service_validation.go``:
  ``validateScalingKedaCompExtension`` (autoscalerClass keda: no ``scaleMetric``; an External
  metric needs a non-empty ``query`` and ``target.value``), ``validateScaleTarget`` (a target
  of type Value needs ``value``), ``validateScalingKPACompExtension`` (Serverless: no
  ``deploymentStrategy``; ``scaleMetric`` one of concurrency/rps; an rps target >= 1).
- ``pkg/controller/v1beta1/inferenceservice/reconcilers/keda/keda_reconciler.go``:
  ``getKedaMetrics`` turns each External metric into a KEDA trigger whose ``threshold`` is
  ``int(target.value)``: a fraction truncates, and 0 would scale on any load.
- ``pkg/constants/constants.go``: ``DefaultAutoscalerClass`` is ``hpa``, and
  ``validateScalingHPACompExtension`` defaults its metric to ``cpu``: a RawDeployment/Standard
  InferenceService without an autoscaler class scales on CPU, not on what tritonkit measured.
  Class ``none`` runs the Deployment at ``minReplicas`` (the raw deployment reconciler).
- KServe adds Prometheus scrape annotations to a predictor's pods only when the InferenceService
  has ``serving.kserve.io/enable-prometheus-scraping: "true"`` (taking port and path from the
  runtime's ``prometheus.kserve.io/*`` annotations), and Triton 2.51 exports the latency
  summaries every p99 reads only with ``--metrics-config=summary_latencies=true``.
- ``pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go``:
  ``createKnativeService`` puts the InferenceService's annotations (less
  ``constants.ServiceAnnotationDisallowedList``: min-scale, max-scale, the storage initializer's
  source URI, kubectl's last-applied configuration, modelFormat) on the Knative revision
  template, where Knative's autoscaler reads ``autoscaling.knative.dev/*``.
"""

from __future__ import annotations

import math
from typing import Any

from tests.unit.test_deploy import INTENT_SPEC, REFERENCE, RELEASE, intent_documents, llm_documents, staging_documents
from tritonkit.manifests.kserve import render
from tritonkit.serve.server import DEFAULT_FLAGS

_KPA_METRICS = ("concurrency", "rps")


def kserve_webhook_problems(service: dict[str, Any]) -> list[str]:
    """What KServe's InferenceService validation would refuse in ``service`` (see the docstring)."""
    problems = []
    predictor = service["spec"]["predictor"]
    annotations = service["metadata"].get("annotations", {})
    keda = annotations.get("serving.kserve.io/autoscalerClass") == "keda"
    if keda:
        if "scaleMetric" in predictor:
            problems.append("ScaleMetric is not supported for KEDA")
        for metric in predictor.get("autoScaling", {}).get("metrics", []):
            if metric["type"] != "External":
                continue
            target = metric["external"].get("target", {})
            if not metric["external"]["metric"].get("query"):
                problems.append("the query should not be empty")
            if target.get("value") is None:
                problems.append("the target threshold value should not be empty")
            if target.get("type") == "Value" and target.get("value") is None:
                problems.append("the Value type should be set")
    elif annotations.get("serving.kserve.io/deploymentMode") == "Serverless":
        if "deploymentStrategy" in predictor:
            problems.append("customizing deploymentStrategy is only supported for raw deployment mode")
        metric = predictor.get("scaleMetric", "concurrency")
        if metric not in _KPA_METRICS:
            problems.append(f"[{metric}] is not a supported metric")
        if metric == "rps" and predictor.get("scaleTarget", 1) < 1:
            problems.append("the target for rps should be greater than 1")
    return problems


def keda_thresholds(service: dict[str, Any]) -> list[int]:
    """The trigger thresholds KServe's KEDA reconciler writes: ``int(target.value)``."""
    metrics = service["spec"]["predictor"].get("autoScaling", {}).get("metrics", [])
    return [int(float(m["external"]["target"]["value"])) for m in metrics if m["type"] == "External"]


def test_every_rendered_inference_service_passes_kserves_webhook() -> None:
    services = [
        render(INTENT_SPEC, INTENT_SPEC.environment(e), RELEASE, REFERENCE)[1] for e in ("staging", "prod", "raw")
    ]
    services += [staging_documents()[1], llm_documents()[1]]
    for service in services:
        assert kserve_webhook_problems(service) == [], service["metadata"]


def test_no_rendered_deployment_is_left_to_kserves_cpu_autoscaler() -> None:
    for env in ("prod", "raw"):  # RawDeployment with and without Prometheus
        service = render(INTENT_SPEC, INTENT_SPEC.environment(env), RELEASE, REFERENCE)[1]
        annotations = service["metadata"]["annotations"]
        assert annotations["serving.kserve.io/deploymentMode"] != "Serverless"
        assert annotations.get("serving.kserve.io/autoscalerClass", "hpa") in ("keda", "none"), env
        predictor = service["spec"]["predictor"]
        if annotations["serving.kserve.io/autoscalerClass"] == "none":  # runs at minReplicas: the plan's size
            assert predictor["minReplicas"] == predictor["maxReplicas"] >= 1


def test_keda_thresholds_are_the_targets_meant_not_truncations() -> None:
    prod = render(INTENT_SPEC, INTENT_SPEC.environment("prod"), RELEASE, REFERENCE)[1]
    assert keda_thresholds(prod) == [10]
    sequences, kv = keda_thresholds(llm_documents()[1])
    assert (sequences, kv) == (5, 80)  # KV-cache usage 0.8 per replica, as a percentage
    assert all(t >= 1 and math.isfinite(t) for t in (sequences, kv))


def test_the_pods_are_scraped_and_export_the_p99_every_query_reads() -> None:
    runtime, service = staging_documents()
    assert service["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == "8002"
    (container,) = runtime["spec"]["containers"]
    assert "--metrics-config=summary_latencies=true" in container["args"]


def test_the_pods_serve_each_config_as_the_lock_hashed_it() -> None:
    """No backend completes a config on the pod (the onnxruntime backend would fill in a
    max_batch_size left at 0), and the local server runs the same way."""
    (container,) = staging_documents()[0]["spec"]["containers"]
    assert "--disable-auto-complete-config" in container["args"]
    assert "--disable-auto-complete-config" in DEFAULT_FLAGS


# constants.ServiceAnnotationDisallowedList (autoscaling.MinScaleAnnotationKey, MaxScaleAnnotationKey, …)
_NOT_PROPAGATED = {
    "autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale",
    "internal.serving.kserve.io/storage-initializer-sourceuri", "kubectl.kubernetes.io/last-applied-configuration",
    "modelFormat",
}  # fmt: skip


def test_knative_reads_the_target_utilization_the_renderer_set() -> None:
    """Knative scales at scaleTarget × target utilization (70 % by default): the render sets 100 %
    so the plan's headroom is the only margin, and KServe carries the annotation to the revision."""
    service = intent_documents("staging")[1]  # Serverless, with a measured capacity
    annotations = service["metadata"]["annotations"]
    knative = {k: v for k, v in annotations.items() if k.startswith("autoscaling.knative.dev/")}
    assert knative == {"autoscaling.knative.dev/target-utilization-percentage": "100"}
    assert not set(knative) & _NOT_PROPAGATED
    assert service["spec"]["predictor"]["scaleMetric"] in _KPA_METRICS
