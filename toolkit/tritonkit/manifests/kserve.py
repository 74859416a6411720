"""KServe objects for a published release: a namespaced ServingRuntime and an InferenceService.

Built as typed pydantic models (the ``kserve`` SDK cannot share a process with
``tritonclient.grpc``; see docs/architecture.md) and rendered to YAML for GitOps (``--dry-run``), or applied
with the ``kubernetes`` client by server-side apply (field manager ``tritonkit``).

The runtime runs Triton with ``--model-repository=/mnt/models`` (a modelcar image from
:mod:`tritonkit.release.oci` mounts the release there), explicit HTTP/gRPC/metrics ports, the image
pinned by digest, a memory-backed ``/dev/shm`` for the Python backend, startup and readiness
probes on ``/v2/health/ready``, a non-root, no-capability security context, and Prometheus
annotations for port 8002. The InferenceService names the runtime and ``protocolVersion: v2``
explicitly and points ``storageUri`` at the release's ``oci://…@sha256:`` reference.

Example:
    >>> objects = render(spec, spec.environment("staging"), store.get(3), "oci://reg/demo@sha256:…")
    >>> print(to_yaml(objects))
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from tritonkit.errors import UsageError
from tritonkit.manifests.observability import Scope, Signal, dashboard, dns_name, prometheus_rule, scaling_signals
from tritonkit.release.store import Release
from tritonkit.serve.server import AS_WRITTEN
from tritonkit.slo.plan import plan_spec
from tritonkit.spec.schema import EnvironmentSpec, Spec

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8080, 9000, 8002
RUN_AS_USER = 1000  # 'triton-server' in NVIDIA's images


class _K8s(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def document(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class ObjectMeta(_K8s):
    name: str
    namespace: str
    labels: dict[str, str] = {}
    annotations: dict[str, str] | None = None


class HTTPGetAction(_K8s):
    path: str
    port: int


class Probe(_K8s):
    http_get: HTTPGetAction
    period_seconds: int = 5
    timeout_seconds: int = 2
    failure_threshold: int = 3


class Capabilities(_K8s):
    drop: list[str] = ["ALL"]


class SeccompProfile(_K8s):
    type: str = "RuntimeDefault"


class SecurityContext(_K8s):
    run_as_non_root: bool = True
    run_as_user: int = RUN_AS_USER
    allow_privilege_escalation: bool = False
    capabilities: Capabilities = Capabilities()
    seccomp_profile: SeccompProfile = SeccompProfile()


class PodSecurityContext(_K8s):
    run_as_non_root: bool = True
    run_as_user: int = RUN_AS_USER
    fs_group: int = RUN_AS_USER
    seccomp_profile: SeccompProfile = SeccompProfile()


class ContainerPort(_K8s):
    container_port: int
    name: str
    protocol: str = "TCP"


class VolumeMount(_K8s):
    name: str
    mount_path: str


class Container(_K8s):
    name: str
    image: str
    args: list[str]
    ports: list[ContainerPort]
    resources: dict[str, dict[str, str]]
    security_context: SecurityContext = SecurityContext()
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    volume_mounts: list[VolumeMount] = []


class EmptyDir(_K8s):
    medium: str = "Memory"
    size_limit: str


class Volume(_K8s):
    name: str
    empty_dir: EmptyDir


class ModelFormat(_K8s):
    name: str
    version: str
    auto_select: bool | None = None
    priority: int | None = None


class ServingRuntimeSpec(_K8s):
    annotations: dict[str, str]
    supported_model_formats: list[ModelFormat]
    protocol_versions: list[str]
    containers: list[Container]
    volumes: list[Volume]


class ServingRuntime(_K8s):
    api_version: str = "serving.kserve.io/v1alpha1"
    kind: str = "ServingRuntime"
    metadata: ObjectMeta
    spec: ServingRuntimeSpec


class ModelSpec(_K8s):
    model_format: ModelFormat
    runtime: str
    protocol_version: str = "v2"
    storage_uri: str


class PredictorSpec(_K8s):
    model: ModelSpec
    security_context: PodSecurityContext = PodSecurityContext()
    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_metric: str | None = None
    scale_target: int | None = None
    auto_scaling: dict[str, Any] | None = None


class InferenceServiceSpec(_K8s):
    predictor: PredictorSpec


class InferenceService(_K8s):
    api_version: str = "serving.kserve.io/v1beta1"
    kind: str = "InferenceService"
    metadata: ObjectMeta
    spec: InferenceServiceSpec


def render(spec: Spec, env: EnvironmentSpec, release: Release, reference: str) -> list[dict[str, Any]]:
    """The ServingRuntime and InferenceService documents for ``release`` in ``env``.

    Raises:
        UsageError: ``reference`` is not pinned by digest.
    """
    if "@sha256:" not in reference:
        raise UsageError(
            f"{reference} is not pinned by digest", hint="deploy the reference 'tritonkit publish' printed"
        )
    runtime_name = dns_name(f"tritonkit-{spec.name}")
    labels = {
        "app.kubernetes.io/name": spec.name,
        "app.kubernetes.io/managed-by": "tritonkit",
        "tritonkit.dev/release": release.name,
    }
    resources = {"requests": dict(env.resources.requests), "limits": dict(env.resources.limits)}
    if env.gpus:
        resources["limits"]["nvidia.com/gpu"] = str(env.gpus)
        resources["requests"]["nvidia.com/gpu"] = str(env.gpus)
    ready = HTTPGetAction(path="/v2/health/ready", port=HTTP_PORT)
    container = Container(
        name="kserve-container",
        image=env.runtime_image,
        args=[
            "tritonserver",
            "--model-repository=/mnt/models",
            f"--http-port={HTTP_PORT}",
            f"--grpc-port={GRPC_PORT}",
            f"--metrics-port={METRICS_PORT}",
            # p50…p99 summaries (nv_inference_request_summary_us): every p99 query, alert, dashboard
            # panel and canary step reads them; without the flag Triton 2.51 exports none (NaN)
            "--metrics-config=summary_latencies=true",
            "--strict-readiness=true",
            "--exit-timeout-secs=30",
            AS_WRITTEN,  # the config the lock hashed, not one a backend completed (and one stub less)
        ],
        ports=[ContainerPort(container_port=HTTP_PORT, name="http1")],
        resources=resources,
        startup_probe=Probe(http_get=ready, period_seconds=5, failure_threshold=120),
        readiness_probe=Probe(http_get=ready, period_seconds=5, failure_threshold=3),
        volume_mounts=[VolumeMount(name="dshm", mount_path="/dev/shm")],
    )
    runtime = ServingRuntime(
        metadata=ObjectMeta(name=runtime_name, namespace=env.namespace, labels=labels),
        spec=ServingRuntimeSpec(
            annotations={"prometheus.kserve.io/port": str(METRICS_PORT), "prometheus.kserve.io/path": "/metrics"},
            supported_model_formats=[ModelFormat(name="triton", version="2", auto_select=True, priority=1)],
            protocol_versions=["v2", "grpc-v2"],
            containers=[container],
            volumes=[Volume(name="dshm", empty_dir=EmptyDir(size_limit=env.shm_size))],
        ),
    )
    annotations = {
        "serving.kserve.io/deploymentMode": env.mode,
        "tritonkit.dev/digest": release.digest,
        # KServe adds the prometheus.io/* scrape annotations (port and path from the runtime's
        # prometheus.kserve.io/* ones) to the predictor's pods only when this is "true"
        "serving.kserve.io/enable-prometheus-scraping": "true",
    }
    scaling = _autoscaling(spec, env, dns_name(spec.name))
    autoscaler = scaling.pop("autoscaler_class", None)
    if autoscaler is not None:
        annotations["serving.kserve.io/autoscalerClass"] = autoscaler
    utilization = scaling.pop("target_utilization", None)
    if utilization is not None:
        annotations[KNATIVE_UTILIZATION] = utilization
    service = InferenceService(
        metadata=ObjectMeta(name=dns_name(spec.name), namespace=env.namespace, labels=labels, annotations=annotations),
        spec=InferenceServiceSpec(
            predictor=PredictorSpec(
                model=ModelSpec(
                    model_format=ModelFormat(name="triton", version="2"), runtime=runtime_name, storage_uri=reference
                ),
                **scaling,
            )
        ),
    )
    return [runtime.document(), service.document()]


KNATIVE_UTILIZATION = "autoscaling.knative.dev/target-utilization-percentage"
"""Knative's share of ``scaleTarget`` it scales at; rendered 100 (the plan's headroom is the margin)."""


def _autoscaling(spec: Spec, env: EnvironmentSpec, service: str) -> dict[str, Any]:
    """Replicas and a scaling signal from the capacity plan (nothing when no model has a capacity).

    Serverless (Knative): ``scaleMetric: concurrency`` with ``scaleTarget`` the in-flight
    requests one replica sustained within its SLO, less the plan's headroom (for a decoupled
    ``llm`` model, in-flight requests are its waiting + running sequences), and Knative's target
    utilization at 100 %: Knative scales at ``target × utilization`` (default 70 %,
    ``container-concurrency-target-percentage``), which would stack a second margin on the
    headroom — 20 % headroom and 70 % would scale out at 0.58 of the measured capacity. KServe
    copies the InferenceService's annotations onto the Knative revision template
    (``pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go``,
    ``createKnativeService``; ``autoscaling.knative.dev/target-utilization-percentage`` is not in
    its ``ServiceAnnotationDisallowedList``). RawDeployment/Standard: KServe's HPA scales
    on CPU or memory only, so with the environment's ``prometheus_url`` the signals are KEDA
    external metrics per replica (``autoScaling.metrics``, annotation
    ``serving.kserve.io/autoscalerClass: keda``) from :func:`~tritonkit.manifests.observability.scaling_signals`:
    each model's requests in flight in Triton, and for ``llm`` models the engine's sequences and KV-cache usage;
    without it, a fixed size (``autoscalerClass: none``, the plan's peak replicas): KServe's
    default HPA would scale on CPU instead.
    """
    plan = plan_spec(spec, env)
    targets = [m.target_concurrency for m in plan.models if m.target_concurrency is not None]
    if not targets:
        return {}
    scaling: dict[str, Any] = {"min_replicas": plan.min_replicas, "max_replicas": plan.max_replicas}
    if env.mode == "Serverless":
        scaling.update(scale_metric="concurrency", scale_target=min(targets), target_utilization="100")
    elif env.prometheus_url:
        scope = kserve_scope(env, service)
        scaling["auto_scaling"] = {
            "metrics": [_external_metric(signal, env.prometheus_url) for signal in scaling_signals(spec, plan, scope)]
        }
        scaling["autoscaler_class"] = "keda"
    else:
        # No signal to read: KServe's default autoscaler for a Deployment is an HPA on CPU
        # (constants.DefaultAutoscalerClass "hpa"), which says nothing about the measured
        # capacity. Class "none" runs the Deployment at minReplicas: the plan's peak replicas.
        scaling.update(min_replicas=plan.replicas, max_replicas=plan.replicas, autoscaler_class="none")
    return scaling


def kserve_scope(env: EnvironmentSpec, service: str) -> Scope:
    """The series of InferenceService ``service``'s predictor pods (labels as Prometheus's pod discovery sets them)."""
    return Scope(f'namespace="{env.namespace}",pod=~"{service}-predictor-.*"', service=service)


def monitoring(spec: Spec, env: EnvironmentSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SLO ``PrometheusRule`` and the Grafana dashboard for the InferenceService :func:`render` makes."""
    scope = kserve_scope(env, dns_name(spec.name))
    return prometheus_rule(spec, scope, namespace=env.namespace), dashboard(spec, scope, plan_spec(spec, env))


def _external_metric(signal: Signal, server: str) -> dict[str, Any]:
    """A KEDA external metric in the only shape KServe takes: ``target: {type: Value, value: N}``
    with N a whole number.

    KServe's webhook (``pkg/apis/serving/v1beta1/inference_service_validation.go``,
    ``validateScalingKedaCompExtension``) refuses an external metric without ``target.value``, and
    its KEDA reconciler (``pkg/controller/v1beta1/inferenceservice/reconcilers/keda/keda_reconciler.go``,
    ``getKedaMetrics``) reads only ``target.value``, truncated to an integer, as the Prometheus
    trigger's ``threshold``; the trigger has KEDA's default metric type, ``AverageValue``, so the
    query (a sum over the release) is divided by the replicas and compared with N per replica. A
    fractional target (KV-cache usage 0.8) would truncate to 0: it is scaled to a percentage
    (query ×100, target ×100) so the threshold KServe writes is the one meant.
    """
    query, target = signal.query, signal.target
    if not float(target).is_integer():
        query, target = f"100 * ({query})", round(target * 100)
    metric = {"backend": "prometheus", "serverAddress": server, "query": query}
    return {
        "type": "External",
        "external": {"metric": metric, "target": {"type": "Value", "value": str(max(1, int(target)))}},
    }


def quantity(value: float) -> str:
    """A per-replica target as a Kubernetes quantity ("10", "0.8"; never float noise)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def to_yaml(documents: list[dict[str, Any]]) -> str:
    """Multi-document YAML in the order given (runtime first, so an apply in order works)."""
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)
