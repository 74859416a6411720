"""KServe rendering: golden YAML, digests everywhere, non-root, and schema-valid core parts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tritonkit import Release, Spec, UsageError
from tritonkit.deploy.render import render, to_yaml

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
