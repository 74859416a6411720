"""KServe rendering: golden YAML, digests everywhere, non-root, and schema-valid core parts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tritonkit import Release, Spec, UsageError
from tritonkit.manifests.kserve import monitoring, render, to_yaml

GOLDEN = Path(__file__).parents[1] / "golden" / "kserve_staging.yaml"
IMAGE = "nvcr.io/nvidia/tritonserver@sha256:" + "ab" * 32
REFERENCE = "oci://registry.example.com/ml/demo@sha256:" + "cd" * 32

SPEC = Spec.model_validate(
    {
        "name": "demo",
        "models": [{"name": "m", "kind": "python", "path": "m", "inputs": [], "outputs": []}],
        "environments": [
            {
                "name": "staging",
                "namespace": "ml-staging",
                "mode": "Serverless",
                "runtime_image": IMAGE,
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
            }
        ],
    }
)
RELEASE = Release(
    number=3,
    repository="demo",
    digest="sha256:" + "ef" * 32,
    build_digest="sha256:" + "ef" * 32,
    created="2026-11-22T00:00:00Z",
    models={"m": "0" * 64},
    changed=["m"],
)


def staging_documents() -> list[dict]:
    return render(SPEC, SPEC.environment("staging"), RELEASE, REFERENCE)


def test_matches_golden_yaml() -> None:
    text = to_yaml(staging_documents())
    if os.environ.get("TRITONKIT_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_runtime_and_service_agree_and_pin_digests() -> None:
    runtime, service = staging_documents()
    assert (runtime["kind"], service["kind"]) == ("ServingRuntime", "InferenceService")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] and model["protocolVersion"] == "v2"
    assert model["storageUri"] == REFERENCE and model["modelFormat"] == {"name": "triton", "version": "2"}
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    assert runtime["spec"]["supportedModelFormats"][0]["autoSelect"] is True
    container = runtime["spec"]["containers"][0]
    assert container["image"] == IMAGE and "--model-repository=/mnt/models" in container["args"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert runtime["metadata"]["namespace"] == service["metadata"]["namespace"] == "ml-staging"
    assert "password" not in to_yaml(staging_documents()).lower()


def test_containers_and_volumes_are_valid_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    runtime, _ = staging_documents()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "check", "namespace": "ml-staging"},
        "spec": {"containers": runtime["spec"]["containers"], "volumes": runtime["spec"]["volumes"]},
    }
    kubernetes_validate.validate(pod, "1.30", strict=True)


def test_unpinned_inputs_are_refused() -> None:
    with pytest.raises(UsageError, match="not pinned by digest"):
        render(SPEC, SPEC.environment("staging"), RELEASE, "oci://registry.example.com/ml/demo:v3")
    with pytest.raises(ValueError, match="runtime_image"):
        Spec.model_validate(
            {
                "name": "demo",
                "models": SPEC.model_dump()["models"],
                "environments": [{"name": "x", "namespace": "x", "runtime_image": "nvcr.io/nvidia/tritonserver:24.10"}],
            }
        )
    with pytest.raises(UsageError, match="no environment named 'stagin'") as caught:
        SPEC.environment("stagin")
    assert caught.value.hint == "did you mean 'staging'?"


INTENT_SPEC = Spec.model_validate(
    {
        "name": "demo",
        "slo": {"p99_ms": 10, "peak_rps": 3000},
        "models": [
            {"name": "m", "kind": "python", "path": "m", "inputs": [], "outputs": [], "max_batch_size": 8,
             "capacity": {"rps": 1000, "concurrency": 12, "p99_ms": 9}},
        ],
        "environments": [
            {"name": "staging", "namespace": "ml-staging", "mode": "Serverless", "runtime_image": IMAGE},
            {"name": "prod", "namespace": "ml-prod", "mode": "RawDeployment", "runtime_image": IMAGE,
             "prometheus_url": "http://prometheus.monitoring:9090"},
            {"name": "raw", "namespace": "ml-raw", "mode": "RawDeployment", "runtime_image": IMAGE},
        ],
    }
).with_slo_defaults()  # fmt: skip


def intent_documents(env: str) -> list[dict]:
    return render(INTENT_SPEC, INTENT_SPEC.environment(env), RELEASE, REFERENCE)


def test_serverless_scales_on_concurrency_from_the_plan() -> None:
    service = intent_documents("staging")[1]
    predictor = service["spec"]["predictor"]
    # 3000/1000 x 1.2 = 3.6 -> 4 replicas; 12 in flight / 1.2 headroom = 10 per replica
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 6)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 10)
    # Knative scales at target x utilization (default 70 %): at 100 % the headroom is the only margin
    assert service["metadata"]["annotations"]["autoscaling.knative.dev/target-utilization-percentage"] == "100"
    assert (
        "autoscaling.knative.dev/target-utilization-percentage"
        not in intent_documents("prod")[1]["metadata"]["annotations"]
    )


def test_raw_deployment_scales_on_requests_in_flight_through_keda() -> None:
    """Issue 25 defect 8: the signal is the quantity the capacity was measured in (queued +
    executing requests), not Triton's pending count (queued only)."""
    service = intent_documents("prod")[1]
    assert service["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    (metric,) = service["spec"]["predictor"]["autoScaling"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["query"] == (
        'sum(rate(nv_inference_request_duration_us{namespace="ml-prod",pod=~"demo-predictor-.*",model="m"}[1m])) / 1e6'
    )
    assert metric["external"]["target"] == {"type": "Value", "value": "10"}  # KServe's only form: see test_kserve_rules
    raw = intent_documents("raw")[1]  # no Prometheus to read: the plan's peak size, no CPU autoscaler
    predictor = raw["spec"]["predictor"]
    assert "autoScaling" not in predictor and (predictor["minReplicas"], predictor["maxReplicas"]) == (4, 4)
    assert raw["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "none"


def llm_documents() -> list[dict]:
    """INTENT_SPEC's prod environment serving one llm model with a measured capacity."""
    llm = {"name": "chat", "kind": "llm", "random_init": {"family": "gpt2", "layers": 2, "hidden_size": 128,
           "heads": 4}, "capacity": {"rps": 20, "concurrency": 6, "p99_ms": 400}}  # fmt: skip
    spec = INTENT_SPEC.model_copy(update={"models": [Spec.model_validate({"name": "x", "models": [llm]}).models[0]]})
    return render(spec, spec.environment("prod"), RELEASE, REFERENCE)


def test_llm_models_scale_on_the_engines_sequences_and_kv_cache_through_keda() -> None:
    service = llm_documents()[1]
    sequences, kv = service["spec"]["predictor"]["autoScaling"]["metrics"]
    selector = '{namespace="ml-prod",pod=~"demo-predictor-.*"}'
    assert sequences["external"]["metric"]["query"] == (
        f"sum(vllm:num_requests_running{selector}) + sum(vllm:num_requests_waiting{selector})"
    )
    assert sequences["external"]["target"] == {"type": "Value", "value": "5"}  # 6 / 1.2
    # KServe truncates the threshold to an integer: 0.8 would be 0, so the usage is in percent
    assert kv["external"]["metric"]["query"] == f"100 * (sum(vllm:kv_cache_usage_perc{selector}))"
    assert kv["external"]["target"] == {"type": "Value", "value": "80"}


def test_monitoring_selects_the_inference_services_pods() -> None:
    rule, board = monitoring(INTENT_SPEC, INTENT_SPEC.environment("prod"))
    assert (rule["kind"], rule["metadata"]["namespace"]) == ("PrometheusRule", "ml-prod")
    alert = rule["spec"]["groups"][1]["rules"][0]
    assert alert["alert"] == "TritonkitLatencyOverSlo" and " > 10 and " in alert["expr"]  # the SLO's p99_ms
    assert 'namespace="ml-prod",pod=~"demo-predictor-.*",model="m"' in alert["expr"]
    assert board["panels"][0]["title"] == "m"
