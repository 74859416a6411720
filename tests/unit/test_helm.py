"""The Helm chart, linted and rendered by the Helm engine embedded in helm-python-sdk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

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


def test_lint_is_clean_in_strict_mode() -> None:
    report = helm.lint(str(CHART), VALUES, strict=True, kube_version="v1.30.0")
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
