"""Structural-schema checks (tritonkit.manifests.crd), and every KServe rendering against the vendored
KServe CRD schemas: what the API server would refuse, or silently prune, is a failure here."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tests.unit.test_deploy import GOLDEN, IMAGE, INTENT_SPEC, REFERENCE, RELEASE, SPEC, intent_documents
from tritonkit import Spec
from tritonkit.artifact.layout import set_read_only
from tritonkit.artifact.lock import write_lock
from tritonkit.cli import main
from tritonkit.errors import ClusterError
from tritonkit.manifests.crd import OBJECT_META, QUANTITY, problems, require_valid, schema_for, validate
from tritonkit.manifests.kserve import render
from tritonkit.release.store import ReleaseStore

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 8},
                "replicas": {"type": "integer", "format": "int32", "minimum": 0},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "size": {"anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": QUANTITY,
                         "x-kubernetes-int-or-string": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                           "properties": {"level": {"type": "integer"}}},
                "empty": {"type": "object"},
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port"],
                          "items": {"type": "object", "required": ["port"],
                                    "properties": {"port": {"type": "integer"}}}},
            },
        },
    },
}  # fmt: skip
VALID = {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {"name": "x"}}


def _with(**spec: Any) -> dict[str, Any]:
    return {**VALID, "spec": {"name": "x", **spec}}


def test_a_valid_object_has_no_problems() -> None:
    document = _with(replicas=2, mode="a", size="1Gi", labels={"k": "v"}, ports=[{"port": 1}, {"port": 2}])
    assert validate(document, SCHEMA) == []
    assert validate(_with(size=3), SCHEMA) == []  # int-or-string: either


def test_unknown_fields_are_reported_where_the_server_would_prune_them() -> None:
    assert validate(_with(replica=2), SCHEMA) == [
        "spec.replica: unknown field (the API server would drop it); did you mean 'replicas'?"
    ]
    assert validate({**VALID, "status": {}}, SCHEMA) == ["status: unknown field (the API server would drop it)"]
    # an object schema that names no fields keeps none of them
    assert validate(_with(empty={"a": 1}), SCHEMA) == ["spec.empty.a: unknown field (the API server would drop it)"]
    # metadata is checked as ObjectMeta, whatever the CRD says of it
    assert validate({**VALID, "metadata": {"name": "x", "label": {}}}, SCHEMA) == [
        "metadata.label: unknown field (the API server would drop it); did you mean 'labels'?"
    ]
    assert validate({**VALID, "metadata": {"name": "x", "labels": {"a": 1}}}, SCHEMA) == [
        "metadata.labels.a: expected string, got integer"
    ]


def test_preserve_unknown_fields_keeps_a_subtree_but_checks_what_it_names() -> None:
    assert validate(_with(config={"anything": {"goes": [1, "x"]}, "level": 3}), SCHEMA) == []
    assert validate(_with(config={"level": "high"}), SCHEMA) == ["spec.config.level: expected integer, got string"]


def test_wrong_types_missing_fields_and_values_are_reported() -> None:
    assert validate(_with(replicas="2"), SCHEMA) == ["spec.replicas: expected integer, got string"]
    assert validate(_with(replicas=True), SCHEMA) == ["spec.replicas: expected integer, got boolean"]
    assert validate(_with(size=1.5), SCHEMA) == ["spec.size: expected integer or string, got number"]
    assert validate(_with(labels={"k": 1}), SCHEMA) == ["spec.labels.k: expected string, got integer"]
    assert validate({**VALID, "spec": {}}, SCHEMA) == ["spec.name: required field missing"]
    assert validate(_with(mode="c"), SCHEMA) == ["spec.mode: 'c' is not one of ['a', 'b']"]
    assert validate(_with(size="4 GB"), SCHEMA) == [
        "spec.size: '4 GB' is not a Kubernetes quantity (e.g. 512Mi, 2, 500m)"
    ]
    assert validate(_with(name="x", mode="a"), {**SCHEMA, "pattern": "^$"}) == []  # patterns apply to strings only
    odd = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"}}}
    assert validate({"name": "X1"}, odd) == ["name: 'X1' is not matched by ^[a-z]+$"]
    assert validate(_with(name="far-too-long"), SCHEMA) == ["spec.name: 'far-too-long' is longer than 8"]
    assert validate(_with(replicas=-1), SCHEMA) == ["spec.replicas: -1 is less than 0"]
    assert validate(_with(replicas=2**31), SCHEMA) == ["spec.replicas: 2147483648 does not fit int32"]
    assert validate(_with(mode=None), SCHEMA) == [
        "spec.mode: null (the API server drops null values of non-nullable fields)"
    ]
    assert validate(_with(ports=[{"port": 1}, {"port": 1}, {}]), SCHEMA) == [
        "spec.ports[2].port: required field missing",
        "spec.ports: duplicate entry for port=1",
    ]
    assert validate([], SCHEMA) == ["(root): expected object, got array"]


def test_the_vendored_schemas_are_the_crds_tritonkit_renders() -> None:
    crds = resources.files("tritonkit.manifests") / "crds"
    for name, kind, version in [("servingruntimes", "ServingRuntime", "v1alpha1"),
                                ("inferenceservices", "InferenceService", "v1beta1")]:  # fmt: skip
        document = json.loads(gzip.decompress((crds / f"{name}.json.gz").read_bytes()))
        assert (document["group"], document["version"], document["kind"]) == ("serving.kserve.io", version, kind)
        assert schema_for(f"serving.kserve.io/{version}", kind) == document["openAPIV3Schema"]
    notice = (crds / "README.md").read_text()
    assert "v0.20.0" in notice and "Apache License, Version 2.0" in notice
    for name in ("servingruntimes.json.gz", "inferenceservices.json.gz"):  # the README records what is vendored
        assert f"`{name}` `{hashlib.sha256((crds / name).read_bytes()).hexdigest()}`" in notice
    assert schema_for("serving.kserve.io/v1alpha2", "InferenceService") is None


# --------------------------------------------------------------------------- every rendering, real schemas

GPU_SPEC = Spec.model_validate(
    {**INTENT_SPEC.model_dump(exclude_none=True),
     "environments": [{"name": "gpu", "namespace": "ml-gpu", "mode": "RawDeployment", "runtime_image": IMAGE,
                       "gpus": 2, "shm_size": "4Gi", "prometheus_url": "http://prometheus:9090"}]}
)  # fmt: skip
LLM_SPEC = Spec.model_validate(
    {"name": "chat", "slo": {"ttft_p99_ms": 500, "tpot_p99_ms": 50, "peak_rps": 20},
     "models": [{"name": "lm", "kind": "llm", "random_init": {"family": "llama"},
                 "capacity": {"rps": 5, "concurrency": 8, "p99_ms": 400}}],
     "environments": [{"name": "staging", "namespace": "ml", "mode": "Serverless", "runtime_image": IMAGE}]}
).with_slo_defaults()  # fmt: skip


def _renderings() -> dict[str, list[dict[str, Any]]]:
    canary = intent_documents("staging")
    canary[1]["spec"]["predictor"]["canaryTrafficPercent"] = 10  # as KServeEnvironment sends a canary
    return {
        "golden": list(yaml.safe_load_all(GOLDEN.read_text())),
        "serverless": render(SPEC, SPEC.environment("staging"), RELEASE, REFERENCE),
        "serverless-scale-metric": intent_documents("staging"),
        "serverless-canary": canary,
        "raw-keda": intent_documents("prod"),
        "raw-bounds-only": intent_documents("raw"),
        "gpus": render(GPU_SPEC, GPU_SPEC.environment("gpu"), RELEASE, REFERENCE),
        "llm": render(LLM_SPEC, LLM_SPEC.environment("staging"), RELEASE, REFERENCE),
    }


@pytest.mark.parametrize("variant", list(_renderings()))
def test_every_rendering_matches_kserves_crd_schemas(variant: str) -> None:
    documents = _renderings()[variant]
    assert [d["kind"] for d in documents] == ["ServingRuntime", "InferenceService"]
    assert problems(documents) == []
    require_valid(documents)


def test_the_golden_objects_fail_once_broken() -> None:
    runtime, service = copy.deepcopy(_renderings()["raw-keda"])
    model = service["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")
    service["spec"]["predictor"]["autoscaling"] = service["spec"]["predictor"].pop("autoScaling")
    service["spec"]["predictor"]["scaleMetric"] = "queue"
    runtime["spec"]["containers"][0]["resources"]["limits"]["memory"] = "8 GB"
    runtime["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] = 1.5
    assert problems([runtime, service]) == [
        "ServingRuntime/tritonkit-demo: spec.containers[0].resources.limits.memory: "
        "'8 GB' is not a Kubernetes quantity (e.g. 512Mi, 2, 500m)",
        "ServingRuntime/tritonkit-demo: spec.volumes[0].emptyDir.sizeLimit: expected integer or string, got number",
        "InferenceService/demo: spec.predictor.model.storageURI: unknown field (the API server would drop it); "
        "did you mean 'storageUri'?",
        "InferenceService/demo: spec.predictor.autoscaling: unknown field (the API server would drop it); "
        "did you mean 'autoScaling'?",
        "InferenceService/demo: spec.predictor.scaleMetric: "
        "'queue' is not one of ['cpu', 'memory', 'concurrency', 'rps']",
    ]
    with pytest.raises(ClusterError) as e:
        require_valid([runtime, service])
    assert str(e.value) == (
        "ServingRuntime/tritonkit-demo: spec.containers[0].resources.limits.memory: '8 GB' is not a Kubernetes "
        "quantity (e.g. 512Mi, 2, 500m) (KServe v0.20.0 CRD schema; 4 more problems)"
    )
    assert e.value.exit_code == 12 and "tritonkit bug" in e.value.hint
    with pytest.raises(ClusterError, match="no KServe v0.20.0 schema for apiVersion serving.kserve.io/v1"):
        require_valid([{**service, "apiVersion": "serving.kserve.io/v1"}])


def test_the_keda_metric_is_checked_field_by_field() -> None:
    _, service = _renderings()["raw-keda"]
    (metric,) = service["spec"]["predictor"]["autoScaling"]["metrics"]
    metric["external"]["metric"]["backend"] = "victoriametrics"
    metric["external"]["target"]["averageValue"] = "ten"
    del metric["type"]
    assert problems([service]) == [
        "InferenceService/demo: spec.predictor.autoScaling.metrics[0].type: required field missing",
        "InferenceService/demo: spec.predictor.autoScaling.metrics[0].external.metric.backend: "
        "'victoriametrics' is not one of ['prometheus', 'graphite']",
        "InferenceService/demo: spec.predictor.autoScaling.metrics[0].external.target.averageValue: "
        "'ten' is not a Kubernetes quantity (e.g. 512Mi, 2, 500m)",
    ]


DEPLOY_SPEC = """name: demo
models:
  - {name: m, kind: python, path: m, inputs: [], outputs: []}
environments:
  - {name: staging, namespace: ml-staging, runtime_image: "IMAGE"}
  - {name: typo, namespace: ml-staging, runtime_image: "IMAGE", shm_size: 1 GB}
"""


def test_deploy_and_promote_refuse_what_kserve_would_refuse_before_writing_or_connecting(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.py").write_text("# a model\n")
    build = tmp_path / "build"
    (build / "m" / "1").mkdir(parents=True)
    (build / "m" / "config.pbtxt").write_text('name: "m"\nbackend: "python"\nmax_batch_size: 0\n')
    (build / "m" / "1" / "model.py").write_text("# a model\n")
    write_lock(build, "demo", {"m": {"kind": "python", "versions": ["1"]}})
    set_read_only(build)
    store = ReleaseStore(tmp_path / "releases")
    store.create(build)
    store.record_publication(1, REFERENCE)
    spec = tmp_path / "tritonkit.yaml"
    spec.write_text(DEPLOY_SPEC.replace("IMAGE", IMAGE))
    runner, out = CliRunner(), tmp_path / "kserve.yaml"
    args = ["deploy", "v1", "--dry-run", "--out", str(out), "-f", str(spec), "--store", str(store.root)]

    refused = runner.invoke(main, [*args, "--env", "typo"])
    assert refused.exit_code == ClusterError.exit_code, refused.output
    assert (
        "ServingRuntime/tritonkit-demo: spec.volumes[0].emptyDir.sizeLimit: '1 GB' is not a Kubernetes quantity"
        in refused.output
    )
    assert "hint:" in refused.output and not out.exists()
    as_json = json.loads(runner.invoke(main, [*args, "--env", "typo", "--json"]).stdout)
    assert as_json["exit_code"] == ClusterError.exit_code and not out.exists()
    written = runner.invoke(main, [*args, "--env", "staging"])
    assert written.exit_code == 0, written.output
    assert problems(yaml.safe_load_all(out.read_text())) == []
    # a KServe promotion checks before it looks for a cluster (there is none here)
    offline = CliRunner(env={"KUBECONFIG": str(tmp_path / "no-such-kubeconfig")})
    promoted = offline.invoke(main, ["promote", "v1", "--env", "typo", "-f", str(spec), "--store", str(store.root)])
    assert promoted.exit_code == ClusterError.exit_code, promoted.output
    assert "emptyDir.sizeLimit: '1 GB' is not a Kubernetes quantity" in promoted.output
    assert not (store.root / "envs" / "typo" / "history.jsonl").exists()


# --------------------------------------------------------------------------- a second opinion: jsonschema


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The structural schema as plain JSON Schema with pruning made explicit: every object that
    names its fields and neither keeps unknown ones nor maps values gets additionalProperties false."""
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {key: _strict(value) for key, value in schema["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out[key] = _strict(schema[key])
    keeps = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
    if schema.get("type") == "object" and not keeps:
        out["additionalProperties"] = False
    return out


def _jsonschema_paths(document: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    jsonschema = pytest.importorskip("jsonschema")
    strict = _strict({**schema, "properties": {**schema["properties"], "metadata": OBJECT_META}})
    paths = set()
    for error in jsonschema.Draft4Validator(strict).iter_errors(document):
        base = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        if error.validator == "additionalProperties":
            names = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        elif error.validator == "required":
            names = [name for name in error.validator_value if name not in error.instance]
        else:
            names = [""]
        paths |= {f"{base}.{name}".strip(".") for name in names}
    return paths


def test_jsonschema_agrees_on_every_rendering_and_every_breakage() -> None:
    broken = copy.deepcopy(_renderings()["raw-keda"])
    broken[0]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "8 GB"
    broken[0]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "1000"
    predictor = broken[1]["spec"]["predictor"]
    predictor["model"]["storageURI"] = predictor["model"].pop("storageUri")
    predictor["scaleMetric"] = "queue"
    del predictor["autoScaling"]["metrics"][0]["type"]
    for documents in [*_renderings().values(), broken]:
        for document in documents:
            schema = schema_for(document["apiVersion"], document["kind"])
            assert schema is not None
            ours = {problem.split(": ")[0] for problem in validate(document, schema)}
            assert ours == _jsonschema_paths(document, schema)
    assert len({problem.split(": ")[1] for problem in problems(broken)}) == 5
