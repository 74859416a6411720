"""The Helm chart, linted and rendered by the Helm engine embedded in helm-python-sdk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy import REFERENCE, RELEASE
from tests.unit.test_observability import CAPACITY, LLM, python_model, spec
from tritonkit.manifests.chart import chart_values

CHART = Path(__file__).parents[2] / "helm" / "tritonkit"
VALUES = {
    "release": {"image": "registry.example.com/ml/demo@sha256:" + "ab" * 32, "name": "v3"},
    "triton": {"image": "nvcr.io/nvidia/tritonserver@sha256:" + "cd" * 32},
}

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (the dev extra installs it)")


def _render(values: dict[str, Any]) -> dict[str, Any]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values=values, name="demo", namespace="ml")
    documents = {}
    for path, text in rendered.items():
        for document in yaml.safe_load_all(text) if path.endswith(".yaml") else []:
            if document:
                documents[document["kind"]] = document
    return documents


def _written(*, llm: bool = False, engine: str = "keda", enabled: bool = True) -> dict[str, Any]:
    """The values 'tritonkit deploy --helm-values' writes, with every optional object switched."""
    models = [python_model(capacity=CAPACITY), LLM] if llm else [python_model(capacity=CAPACITY)]
    loaded = spec(*models, slo={"p99_ms": 10, "peak_rps": 3000, "error_rate": 0.001})
    values = chart_values(loaded, loaded.environment("prod"), RELEASE, REFERENCE)
    values["triton"] = VALUES["triton"]
    values["autoscaling"].update(enabled=enabled, engine=engine)
    for key in ("serviceMonitor", "prometheusRule", "dashboard"):
        values[key]["enabled"] = enabled
    return values


@pytest.mark.parametrize(
    "values",
    [VALUES, _written(enabled=False), _written(), _written(engine="hpa", llm=True)],
    ids=["defaults", "written-off", "written-keda", "written-hpa-llm"],
)
def test_lint_is_clean_in_strict_mode(values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == [], report["messages"]


def test_renders_a_non_root_deployment_fetching_the_release_by_digest() -> None:
    documents = _render(VALUES)
    assert set(documents) == {"Deployment", "Service"}
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    (triton,) = pod["containers"]
    assert fetch["image"] == VALUES["release"]["image"] and triton["image"] == VALUES["triton"]["image"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert triton["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "--model-repository=/models" in triton["args"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {p["port"] for p in documents["Service"]["spec"]["ports"]} == {8000, 8001, 8002}


def test_rendered_objects_are_valid_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for document in _render(VALUES).values():
        kubernetes_validate.validate(document, "1.30", strict=True)


def test_service_monitor_is_optional() -> None:
    documents = _render({**VALUES, "serviceMonitor": {"enabled": True, "interval": "15s"}})
    monitor = documents["ServiceMonitor"]
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]


@pytest.mark.parametrize("key", ["release", "triton"])
def test_a_tag_instead_of_a_digest_is_refused(key: str) -> None:
    values = {**VALUES, key: {**VALUES[key], "image": "registry.example.com/ml/demo:latest"}}
    with pytest.raises(helm.HelmError, match="image"):
        _render(values)


def test_optional_objects_stay_off_until_enabled() -> None:
    assert set(_render(_written(enabled=False))) == {"Deployment", "Service"}
    assert _render(VALUES)["Deployment"]["spec"]["replicas"] == 1


def test_keda_scales_the_deployment_on_the_plans_signals() -> None:
    values = _written(llm=True)
    documents = _render(values)
    assert set(documents) == {"Deployment", "Service", "ServiceMonitor", "ScaledObject", "PrometheusRule", "ConfigMap"}
    assert "replicas" not in documents["Deployment"]["spec"]  # the autoscaler owns the count
    scaled = documents["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"] == {"name": "demo"} and documents["Deployment"]["metadata"]["name"] == "demo"
    bounds = values["autoscaling"]["minReplicas"], values["autoscaling"]["maxReplicas"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == bounds
    assert [(t["name"], t["metadata"]["threshold"]) for t in scaled["triggers"]] == [
        ("in-flight-m", "10"), ("llm-sequences", "5"), ("llm-kv-cache", "1.6")  # 0.8 x 2 engine instances
    ]  # fmt: skip
    assert scaled["triggers"][1]["metadata"] == {
        "serverAddress": "http://prometheus.monitoring:9090",
        "query": values["autoscaling"]["signals"][1]["query"],
        "threshold": "5",
    }
    assert all(t["type"] == "prometheus" for t in scaled["triggers"])  # AverageValue: per replica, the default


def test_hpa_reads_pods_metrics_and_is_valid_kubernetes() -> None:
    documents = _render(_written(engine="hpa"))
    assert "ScaledObject" not in documents
    hpa = documents["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    assert hpa["spec"]["metrics"] == [
        {"type": "Pods", "pods": {"metric": {"name": "tritonkit_requests_in_flight",
                                             "selector": {"matchLabels": {"model": "m"}}},
                                  "target": {"type": "AverageValue", "averageValue": "10"}}}
    ]  # fmt: skip
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for kind in ("HorizontalPodAutoscaler", "ConfigMap", "Deployment"):
        kubernetes_validate.validate(documents[kind], "1.30", strict=True)


def test_prometheus_rule_and_dashboard_are_what_tritonkit_rendered() -> None:
    values = _written()
    documents = _render(values)
    assert documents["PrometheusRule"]["spec"]["groups"] == values["prometheusRule"]["groups"]
    alert = documents["PrometheusRule"]["spec"]["groups"][1]["rules"][0]
    assert "{{ $value" in alert["annotations"]["summary"]  # Prometheus' template, not Helm's
    config_map = documents["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["demo.json"]) == values["dashboard"]["json"]


def test_the_deployment_exports_the_p99_the_rules_read() -> None:
    (triton,) = _render(VALUES)["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert "--metrics-config=summary_latencies=true" in triton["args"]
    assert "--disable-auto-complete-config" in triton["args"]  # each config as the lock hashed it


@pytest.mark.parametrize("key", ["prometheusRule", "dashboard", "autoscaling"])
def test_enabling_an_object_without_its_content_is_refused(key: str) -> None:
    with pytest.raises(helm.HelmError, match="tritonkit deploy --helm-values"):
        _render(
            {**VALUES, key: {"enabled": True, "prometheusUrl": "http://p:9090"}}
            if key == "autoscaling"
            else {**VALUES, key: {"enabled": True}}
        )


@pytest.mark.parametrize(
    "autoscaling",
    [{"engine": "cpu"}, {"signals": [{"name": "x", "query": "up", "target": "ten", "podMetric": "up"}]}, {"typo": 1}],
)
def test_the_schema_refuses_bad_autoscaling_values(autoscaling: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError, match="autoscaling"):
        _render({**VALUES, "autoscaling": autoscaling})
