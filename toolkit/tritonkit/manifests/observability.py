"""Scaling signals, SLO alert rules and a Grafana dashboard, all from one spec's ``slo:`` and plan. Pure.

Everything a cluster watches about a release is rendered here, once, as PromQL over Triton's own
metrics (and the LLM engine's ``vllm:*`` gauges and histograms), so the KServe objects, the Helm
chart's values and the files ``tritonkit deploy --observability DIR`` writes cannot disagree:

- :func:`scaling_signals`: what the autoscaler reads per replica. Each measured model's requests
  in flight in Triton (queued + executing, from its request-duration counter by Little's law);
  for ``llm`` models (which take requests at once and queue them inside the engine) the engine's
  waiting + running sequences and its KV-cache usage.
- :func:`rule_groups`: Prometheus recording and alerting rules. The error budget
  (``slo.error_rate``) burns in the SRE workbook's multi-window, multi-burn-rate form, in the four
  tiers of its generators (Sloth, Pyrra): 14.4x over 1h and 5m, 6x over 6h and 30m: page; 3x over
  1d and 2h, 1x over 3d and 6h: ticket. The windows of a day and more are taken from recorded 5m
  rates (``sum_over_time`` of failures over that of all requests: traffic-weighted), not from a
  raw ``rate(…[3d])`` that re-reads three days of counters at every evaluation. Health alerts say
  when the SLO alerts are blind: a scrape target down for 5m, or no Triton series at all of a
  model with an SLO for 10m (not loaded, not scraped, or a selector that matches nothing; never
  an idle scale-to-zero, which environments cannot ask for: ``min_replicas`` ≥ 1).
  Failures are Triton's, plus,
  where the spec has ``llm`` models, the engine's error responses
  (``tritonkit_llm_request_failure_total``), which Triton counts as successes: every request is
  still counted once (Triton's successes + failures), an error response as a failure. Latency is judged on the p99
  against ``slo.p99_ms`` over a long and a short window (page: 1h and 5m; ticket: 6h and 30m):
  Triton's request summary (worst replica: summaries cannot be merged) for most models, the
  engine's TTFT/TPOT histograms (merged over replicas) against ``ttft_p99_ms``/``tpot_p99_ms`` for
  ``llm`` models.
- :func:`dashboard`: one Grafana row per model with an SLO or a plan: p99 against the SLO line,
  throughput against the planned capacity, queue-time share, error rate, requests in flight and pending, and the
  error-budget burn rate.

A :class:`Scope` says which series belong to the release (label matchers) and which labels keep
one release's recorded series apart from another's.

Example:
    >>> scope = Scope('namespace="ml",job="demo"', service="demo")
    >>> [g["name"] for g in rule_groups(spec, scope)]
    ['demo-slo-recordings', 'demo-slo-alerts']

Length: about 510 lines: the scaling signals, the alert rules and the dashboard render the
same PromQL expressions; kept in one module so each expression is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tritonkit.serve.metrics import KV_USAGE, LLM_FAILURES, LLM_INVALID, LLM_RUNNING, LLM_WAITING, TPOT, TTFT
from tritonkit.slo.plan import ModelPlan, Plan, plan_spec
from tritonkit.spec.intent import Slo
from tritonkit.spec.schema import LlmModel, ModelBase, Spec

#: The error-budget burn rates alerted on: (burn rate, long window, short window, severity).
BURN_RATES = (
    (14.4, "1h", "5m", "critical"),
    (6.0, "6h", "30m", "critical"),
    (3.0, "1d", "2h", "warning"),
    (1.0, "3d", "6h", "warning"),
)
#: Error-ratio windows at least this long (seconds) are summed from the recorded 5m rates.
FROM_RECORDED_S = 86400
#: How long a scrape target must be down, or a model's series absent, before its health alert.
SCRAPE_DOWN_FOR, ABSENT_FOR = "5m", "10m"
#: The latency checks: (long window, short window, severity).
LATENCY_WINDOWS = (("1h", "5m", "critical"), ("6h", "30m", "warning"))
#: KV-cache usage (0-1) per LLM engine instance the autoscaler aims at.
KV_TARGET = 0.8
ERROR_RATIO = "tritonkit:request_error:ratio_rate"
FAILURES_5M, REQUESTS_5M = "tritonkit:request_failure:rate5m", "tritonkit:request:rate5m"
Query = Callable[[str], str]  # a window ("5m") -> PromQL over it


@dataclass(frozen=True)
class Scope:
    """Which series are the release's.

    Attributes:
        selector: PromQL label matchers of the release's Triton series (``namespace="ml",job="demo"``).
        service: the name its recorded series carry as ``tritonkit_service``, so two releases'
            recordings never collide and the alerts find their own.
        by: the labels the rules and panels aggregate by (one series per model and deployment).
    """

    selector: str
    service: str
    by: tuple[str, ...] = ("namespace", "model")

    def match(self, **labels: str) -> str:
        """``{selector,label="value",…}`` for one metric."""
        extra = [f'{key}="{value}"' for key, value in labels.items()]
        return "{" + ",".join([m for m in [self.selector, *extra] if m]) + "}"

    @property
    def grouping(self) -> str:
        return ", ".join(self.by)


@dataclass(frozen=True)
class Signal:
    """One autoscaling signal: a query summed over the release, and its target per replica.

    ``pod_metric`` is the per-pod name a Prometheus adapter exposes the same series under (for a
    HorizontalPodAutoscaler's ``Pods`` metric; see docs/guides/helm.md for the adapter rules), and
    ``pod_labels`` the labels that pick the signal's series among that metric's (one model's).
    """

    name: str
    query: str
    target: float
    pod_metric: str
    pod_labels: tuple[tuple[str, str], ...] = ()


IN_FLIGHT_WINDOW = "1m"
"""The window the in-flight average is taken over (four 15 s scrapes)."""


def in_flight(scope: Scope, model: str, window: str = IN_FLIGHT_WINDOW) -> str:
    """PromQL for the mean number of ``model``'s requests inside Triton (queued + executing) over
    :data:`IN_FLIGHT_WINDOW`, summed over the release's replicas.

    Triton has no gauge of executing requests: ``nv_inference_pending_request_count`` counts only
    the queued ones (with 26 requests in flight it read a median of 18). Its counter
    ``nv_inference_request_duration_us`` adds each finished request's end-to-end time in the
    server (queue + compute), so its rate is the time-average of the requests present (Little's
    law: in flight = arrival rate × time inside; the rate of summed durations is exactly that, in
    µs per s). That is the quantity a capacity is measured in (requests in flight that held the
    p99), so signal and target speak of the same thing.
    """
    return f"sum(rate(nv_inference_request_duration_us{scope.match(model=model)}[{window}])) / 1e6"


def scaling_signals(spec: Spec, plan: Plan, scope: Scope) -> list[Signal]:
    """The plan's autoscaling signals (none when no model has a measured capacity).

    Every measured model that is not ``llm``: its requests in flight (:func:`in_flight`) per
    replica, aimed at its target concurrency (the capacity's concurrency less the headroom); one
    signal per model, because an ensemble's request is in flight in the ensemble and in each step
    at once (a sum over models would count it several times). An ``llm`` model's engine takes each
    request at once, so its load is the engine's waiting + running sequences per replica (target:
    the smallest target concurrency of the ``llm`` models) and its KV-cache usage
    (:data:`KV_TARGET` per engine instance a replica runs). An autoscaler follows whichever signal
    asks for the most replicas.
    """
    targets = {m.model: m.target_concurrency for m in plan.models if m.target_concurrency is not None}
    llms = [m for m in spec.models if isinstance(m, LlmModel) and m.name in targets]
    signals = [
        Signal(
            f"in-flight-{dns_name(m.name)}",
            in_flight(scope, m.name),
            targets[m.name],
            "tritonkit_requests_in_flight",
            (("model", m.name),),
        )  # fmt: skip
        for m in spec.models
        if m.name in targets and not isinstance(m, LlmModel)
    ]
    if llms:
        match = scope.match()  # only llm models export vllm:* series
        sequences = f"sum({LLM_RUNNING}{match}) + sum({LLM_WAITING}{match})"
        instances = sum(sum(g.count for g in m.instance_group) or 1 for m in llms)
        signals.append(
            Signal("llm-sequences", sequences, min(targets[m.name] for m in llms), "tritonkit_llm_sequences")
        )
        kv = Signal("llm-kv-cache", f"sum({KV_USAGE}{match})", KV_TARGET * instances, "vllm_kv_cache_usage_perc")
        signals.append(kv)
    return signals


def dns_name(name: str) -> str:
    """A spec name as a Kubernetes object name or a KEDA trigger's (lower case; '_' and '.'
    become '-'; spec names are already letters, digits, '_', '.' and '-')."""
    return name.lower().replace("_", "-").replace(".", "-")


def rule_groups(spec: Spec, scope: Scope) -> list[dict[str, Any]]:
    """Recording rules (error ratios per window) and the SLO alerts of every model with an SLO.

    Empty when no model states an objective. A burn-rate threshold is ``burn × error_rate``, so
    an error budget above 1/14.4 (about 7%) makes the fastest alert one no ratio can reach.
    """
    spec = spec.with_slo_defaults()
    alerts = [rule for model in spec.models for rule in _model_alerts(model, scope)]
    if not alerts:
        return []
    alerts.append(_scrape_down(scope))
    return [
        {"name": f"{spec.name}-slo-recordings", "rules": _recordings(scope, llm=_has_llm(spec))},
        {"name": f"{spec.name}-slo-alerts", "rules": alerts},
    ]


def _has_llm(spec: Spec) -> bool:
    """Whether the recordings must count the engine's error responses (one ``llm`` model is enough:
    the recordings cover every model of the scope)."""
    return any(isinstance(m, LlmModel) for m in spec.models)


def prometheus_rule(spec: Spec, scope: Scope, *, namespace: str) -> dict[str, Any]:
    """:func:`rule_groups` as a Prometheus Operator ``PrometheusRule`` object in ``namespace``."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": f"{scope.service}-slo",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/managed-by": "tritonkit"},
        },
        "spec": {"groups": rule_groups(spec, scope)},
    }


def _rates(scope: Scope, window: str, *, llm: bool, **labels: str) -> tuple[str, str]:
    """(failed, all) requests per second over ``window``, per :attr:`Scope.by` group.

    All requests are Triton's successes + failures. With ``llm`` the failures also count the
    engine's error responses (which Triton counted as successes, so the total stays the same),
    except those to requests the client got wrong (``reason="invalid"``: not the server's errors,
    as ``check`` counts them); ``(triton + engine) or triton`` keeps the models that export no
    engine counter, whose sum would otherwise drop out of the ``+``.
    """

    def rate(metric: str, matcher: str = "") -> str:
        selector = scope.match(**labels)
        selector = selector[:-1] + ("," if len(selector) > 2 else "") + matcher + "}" if matcher else selector
        return f"sum by ({scope.grouping}) (rate({metric}{selector}[{window}]))"

    failure = rate("nv_inference_request_failure")
    engine = rate(LLM_FAILURES, f'reason!="{LLM_INVALID}"')
    failed = f"(({failure} + {engine}) or {failure})" if llm else failure
    return failed, f"{rate('nv_inference_request_success')} + {failure}"


def _error_ratio(scope: Scope, window: str, *, llm: bool = False, **labels: str) -> str:
    """Failed / all requests over ``window``, per :attr:`Scope.by` group (see :func:`_rates`)."""
    failed, requests = _rates(scope, window, llm=llm, **labels)
    return f"{failed} / ({requests})"


def _recordings(scope: Scope, *, llm: bool) -> list[dict[str, Any]]:
    """The 5m failure and request rates, then the error ratio over every window an alert reads:
    raw rates up to :data:`FROM_RECORDED_S`, sums of the recorded 5m rates from there on (rules of
    a group run in order, so those read this evaluation's 5m rates)."""
    labels = {"tritonkit_service": scope.service}
    failed, requests = _rates(scope, "5m", llm=llm)
    rules = [
        {"record": FAILURES_5M, "expr": failed, "labels": labels},
        {"record": REQUESTS_5M, "expr": requests, "labels": labels},
    ]
    own = f'{{tritonkit_service="{scope.service}"}}'
    for w in sorted({w for _, long, short, _ in BURN_RATES for w in (long, short)}, key=_seconds):
        if _seconds(w) < FROM_RECORDED_S:
            expr = _error_ratio(scope, w, llm=llm)
        else:
            expr = f"sum_over_time({FAILURES_5M}{own}[{w}]) / sum_over_time({REQUESTS_5M}{own}[{w}])"
        rules.append({"record": f"{ERROR_RATIO}{w}", "expr": expr, "labels": labels})
    return rules


def _model_alerts(model: ModelBase, scope: Scope) -> list[dict[str, Any]]:
    slo = model.slo
    if slo is None:
        return []
    rules = []
    if slo.error_rate is not None:
        rules += [_burn_alert(model.name, scope, slo.error_rate, *burn) for burn in BURN_RATES]
    for sli, query, budget_ms in _latency_slis(model, scope):
        threshold = _num(budget_ms)
        for long, short, severity in LATENCY_WINDOWS:
            expr = f"{query(long)} > {threshold} and {query(short)} > {threshold}"
            summary = (
                f"{sli} p99 of {model.name} over the last {long} and {short} is above its SLO of "
                f'{threshold} ms ({long}: {{{{ $value | printf "%.1f" }}}} ms)'
            )
            rules.append(
                _alert(f"Tritonkit{sli.title()}OverSlo", expr, model.name, severity, f"{long}/{short}", summary)
            )
    if rules:
        rules.append(_absent(model.name, scope))
    return rules


def _absent(model: str, scope: Scope) -> dict[str, Any]:
    """No Triton series of ``model`` at all: every other alert of it reads nothing and stays silent."""
    summary = (
        f"no Triton metrics of {model} for {ABSENT_FOR}: not loaded, not scraped, or the selector "
        f"({scope.selector}) matches nothing; its SLO alerts cannot fire"
    )
    return {
        "alert": "TritonkitMetricsAbsent",
        "expr": f"absent(nv_inference_request_success{scope.match(model=model)})",
        "for": ABSENT_FOR,
        "labels": {"severity": "critical", "model": model},
        "annotations": {"summary": summary},
    }


def _scrape_down(scope: Scope) -> dict[str, Any]:
    """A scrape target of the release's Triton failing: its replicas' SLO alerts are blind."""
    return {
        "alert": "TritonkitScrapeDown",
        "expr": f"up{scope.match()} == 0",
        "for": SCRAPE_DOWN_FOR,
        "labels": {"severity": "critical", "tritonkit_service": scope.service},
        "annotations": {
            "summary": f"Prometheus has not scraped {{{{ $labels.instance }}}} of {scope.service} for "
            f"{SCRAPE_DOWN_FOR}: the SLO alerts see no data from that replica"
        },
    }


def _burn_alert(
    model: str, scope: Scope, budget: float, burn: float, long: str, short: str, severity: str
) -> dict[str, Any]:
    threshold = burn * budget
    match = f'{{tritonkit_service="{scope.service}",model="{model}"}}'  # the recorded series' labels
    expr = f"{ERROR_RATIO}{long}{match} > {_num(threshold)} and {ERROR_RATIO}{short}{match} > {_num(threshold)}"
    summary = (
        f"{model} burns its error budget ({_num(budget)}) over {_num(burn)}x as fast as it may "
        f"over {long} and {short}: error ratio {{{{ $value | humanizePercentage }}}} ({long})"
    )
    return _alert("TritonkitErrorBudgetBurn", expr, model, severity, f"{long}/{short}", summary)


def _alert(name: str, expr: str, model: str, severity: str, window: str, summary: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "labels": {"severity": severity, "model": model, "slo_window": window},
        "annotations": {"summary": summary},
    }


def _latency_slis(model: ModelBase, scope: Scope) -> list[tuple[str, Query, float]]:
    """(SLI, window → PromQL p99 in ms, budget in ms) for each latency objective the model states."""
    slo = model.slo
    if slo is None:
        return []
    if isinstance(model, LlmModel):
        return [
            (sli, _histogram_p99(scope, model.name, metric), budget_ms)
            for sli, metric, budget_ms in (
                ("ttft", f"{TTFT}_bucket", slo.ttft_p99_ms),
                ("tpot", f"{TPOT}_bucket", slo.tpot_p99_ms),
            )
            if budget_ms is not None
        ]
    if slo.p99_ms is None:
        return []
    return [("latency", _summary_p99(scope, model.name), slo.p99_ms)]


def _histogram_p99(scope: Scope, model: str, metric: str) -> Query:
    def query(window: str) -> str:
        inner = f"sum by ({scope.grouping}, le) (rate({metric}{scope.match(model=model)}[{window}]))"
        return f"1000 * histogram_quantile(0.99, {inner})"  # the engine's histograms are in seconds

    return query


def _summary_p99(scope: Scope, model: str) -> Query:
    def query(window: str) -> str:
        series = f"nv_inference_request_summary_us{scope.match(model=model, quantile='0.99')}"
        return f"max by ({scope.grouping}) (avg_over_time({series}[{window}])) / 1000"  # µs

    return query


def _seconds(window: str) -> int:
    return int(window[:-1]) * {"m": 60, "h": 3600, "d": 86400}[window[-1]]


def _num(value: float) -> str:
    """A threshold as PromQL reads it, without float noise (0.0144, not 0.014400000000000001)."""
    text = f"{value:.6g}"
    return text if "e" not in text else repr(value)


# ---------------------------------------------------------------------------------- dashboard


def dashboard(spec: Spec, scope: Scope, plan: Plan | None = None) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) for the release: one row of panels per model."""
    spec = spec.with_slo_defaults()
    plan = plan or plan_spec(spec, None)
    planned = {m.model: m for m in plan.models}
    panels: list[dict[str, Any]] = []
    for model in spec.models:
        if model.slo is None and model.name not in planned:
            continue
        panels.append({"type": "row", "title": model.name, "collapsed": False, "panels": []})
        panels += _model_panels(model, scope, plan, planned.get(model.name))
    _lay_out(panels)
    return {
        "uid": f"tritonkit-{spec.name}"[:40],
        "title": f"tritonkit · {spec.name}",
        "tags": ["tritonkit", "triton"],
        "schemaVersion": 39,
        "editable": False,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }


def _lay_out(panels: list[dict[str, Any]]) -> None:
    """Ids and grid positions: a full-width row header, then its panels three to a line."""
    y, column = 0, 0
    for index, panel in enumerate(panels):
        panel["id"] = index + 1
        if panel["type"] == "row":
            y += 8 if column else 0
            panel["gridPos"] = {"x": 0, "y": y, "w": 24, "h": 1}
            y, column = y + 1, 0
            continue
        panel["gridPos"] = {"x": column * 8, "y": y, "w": 8, "h": 8}
        column = (column + 1) % 3
        y += 8 if column == 0 else 0


def _panel(title: str, unit: str, targets: list[tuple[str, str]], thresholds: float | None = None) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if thresholds is not None:
        steps = [{"color": "green", "value": None}, {"color": "red", "value": thresholds}]
        panel["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": steps}
        panel["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return panel


def _model_panels(model: ModelBase, scope: Scope, plan: Plan, planned: ModelPlan | None) -> list[dict[str, Any]]:
    slo, match, llm = model.slo, scope.match(model=model.name), isinstance(model, LlmModel)

    def rate(metric: str, window: str = "5m") -> str:
        return f"sum by ({scope.grouping}) (rate({metric}{match}[{window}]))"

    queued = f"{rate('nv_inference_queue_duration_us')} / {rate('nv_inference_request_duration_us')}"
    panels = [
        _latency_panel(model, scope),
        _panel("throughput vs planned capacity", "reqps", _throughput(rate, slo, plan, planned)),
        _panel("queue-time share", "percentunit", [(queued, "queued")]),
        _panel("error / rejection rate", "percentunit", _errors(scope, model.name, llm),
               slo.error_rate if slo else None),
        _panel("requests in flight and pending", "short", _pending(model, scope)),
    ]  # fmt: skip
    if slo is not None and slo.error_rate:
        burn = [
            (f"({_error_ratio(scope, w, llm=llm, model=model.name)}) / {_num(slo.error_rate)}", f"burn {w}")
            for w in ("5m", "1h", "6h")
        ]
        panels.append(_panel("error-budget burn rate", "x", burn, BURN_RATES[0][0]))
    return panels


def _latency_panel(model: ModelBase, scope: Scope) -> dict[str, Any]:
    """The p99 the alerts judge (over 5 minutes), with the (first) budget as a line and a threshold."""
    slis = _latency_slis(model, scope)
    lines = [(query("5m"), "p99" if sli == "latency" else f"{sli.upper()} p99") for sli, query, _ in slis]
    if not slis and not isinstance(model, LlmModel):  # no latency objective: still draw Triton's p99
        lines = [(_summary_p99(scope, model.name)("5m"), "p99")]
    budget = slis[0][2] if slis else None
    if budget is not None:
        lines.append((f"vector({_num(budget)})", "SLO"))
    return _panel("p99 latency vs SLO", "ms", lines, budget)


def _throughput(
    rate: Callable[..., str], slo: Slo | None, plan: Plan, planned: ModelPlan | None
) -> list[tuple[str, str]]:
    lines = [(rate("nv_inference_request_success", "1m"), "answered/s")]
    if planned is not None and planned.capacity_rps is not None:
        capacity = _num(planned.capacity_rps * plan.replicas)
        lines.append((f"vector({capacity})", f"planned capacity ({plan.replicas} replicas)"))
    if slo is not None and slo.peak_rps is not None:
        lines.append((f"vector({_num(slo.peak_rps)})", "expected peak"))
    return lines


def _errors(scope: Scope, model: str, llm: bool) -> list[tuple[str, str]]:
    """Failed requests (with ``llm``, the engine's error responses too), and the share refused by
    the queue policy (Triton's reason="REJECTED")."""

    def rate(metric: str, **labels: str) -> str:
        return f"sum by ({scope.grouping}) (rate({metric}{scope.match(model=model, **labels)}[5m]))"

    requests = f"({rate('nv_inference_request_success')} + {rate('nv_inference_request_failure')})"
    refused = f"{rate('nv_inference_request_failure', reason='REJECTED')} / {requests}"
    return [(_error_ratio(scope, "5m", llm=llm, model=model), "failed"), (refused, "rejected by the queue policy")]


def _pending(model: ModelBase, scope: Scope) -> list[tuple[str, str]]:
    def total(metric: str) -> str:
        return f"sum by ({scope.grouping}) ({metric}{scope.match(model=model.name)})"

    lines = [(total("nv_inference_pending_request_count"), "pending")]
    if not isinstance(model, LlmModel):  # what the autoscaler reads (in_flight), per replica here
        duration = f"nv_inference_request_duration_us{scope.match(model=model.name)}"
        lines.insert(0, (f"sum by ({scope.grouping}) (rate({duration}[{IN_FLIGHT_WINDOW}])) / 1e6", "in flight"))
    if isinstance(model, LlmModel):  # the engine queues inside the model: Triton's count stays near 0
        lines += [(total(LLM_WAITING), "waiting sequences"), (total(LLM_RUNNING), "running sequences")]
    return lines
