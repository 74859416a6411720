"""Values for the Helm chart (``helm/tritonkit``) from a published release and its environment. Pure.

The chart runs a release on plain Kubernetes; these values fill it from the same spec and plan
the KServe objects come from: the release and Triton images (by digest), the environment's
resources, the plan's replicas, and — rendered by :mod:`tritonkit.manifests.observability` — the
autoscaling signals, the PrometheusRule groups and the Grafana dashboard. The Deployment is
named after the spec (``fullnameOverride``), so the rules can select its series
(``namespace`` and ``job``: a ServiceMonitor's job is the Service's name) before it exists.

Objects that need cluster add-ons stay off: the ServiceMonitor, PrometheusRule and dashboard
(Prometheus Operator, Grafana's sidecar) are filled but disabled; autoscaling is on only when
the environment names the Prometheus its KEDA reads (``prometheus_url``), as for KServe.

Example:
    >>> values = chart_values(spec, spec.environment("prod"), store.get(3), "oci://reg/demo@sha256:…")
    >>> values["autoscaling"]["signals"][0]["name"]
    'in-flight-classifier'
"""

from __future__ import annotations

from typing import Any

from tritonkit.manifests.kserve import dns_name, quantity
from tritonkit.manifests.observability import Scope, Signal, dashboard, rule_groups, scaling_signals
from tritonkit.release.store import Release
from tritonkit.slo.plan import plan_spec
from tritonkit.spec.schema import EnvironmentSpec, Spec


def chart_scope(spec: Spec, env: EnvironmentSpec) -> Scope:
    """The series of the chart's Triton pods when installed into ``env``'s namespace."""
    name = dns_name(spec.name)
    return Scope(f'namespace="{env.namespace}",job="{name}"', service=name)


def chart_values(spec: Spec, env: EnvironmentSpec, release: Release, reference: str) -> dict[str, Any]:
    """The chart's values for ``release`` (published as ``reference``, ``oci://…@sha256:…``) in ``env``."""
    spec = spec.with_slo_defaults()
    plan = plan_spec(spec, env)
    scope = chart_scope(spec, env)
    signals = scaling_signals(spec, plan, scope)
    groups = rule_groups(spec, scope)
    return {
        "fullnameOverride": scope.service,
        "release": {"image": reference.removeprefix("oci://"), "name": release.name},
        "triton": {"image": env.runtime_image},
        "replicas": plan.replicas,
        "resources": {"requests": dict(env.resources.requests), "limits": dict(env.resources.limits)},
        "gpus": env.gpus,
        "shmSize": env.shm_size,
        "autoscaling": {
            "enabled": bool(signals and env.prometheus_url),
            "engine": "keda",
            "minReplicas": plan.min_replicas,
            "maxReplicas": plan.max_replicas,
            "prometheusUrl": env.prometheus_url or "",
            "signals": [_signal(s) for s in signals],
        },
        # every query above selects job="<name>", the label only the chart's ServiceMonitor gives
        # the scraped series: on whenever the autoscaler reads them
        "serviceMonitor": {"enabled": bool(signals and env.prometheus_url)},
        "prometheusRule": {"enabled": False, "groups": groups},
        "dashboard": {"enabled": False, "json": dashboard(spec, scope, plan)},
    }


def _signal(signal: Signal) -> dict[str, Any]:
    """One entry of ``autoscaling.signals``: the trigger's query and threshold (KEDA), the per-pod
    metric and the labels that select its series (HPA)."""
    entry: dict[str, Any] = {
        "name": signal.name, "query": signal.query, "target": quantity(signal.target), "podMetric": signal.pod_metric,
    }  # fmt: skip
    if signal.pod_labels:
        entry["podSelector"] = dict(signal.pod_labels)
    return entry
