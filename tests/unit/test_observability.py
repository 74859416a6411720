"""Scaling signals, SLO rules, the dashboard and the chart's values: thresholds follow the SLO. Pure."""

from __future__ import annotations

from typing import Any

from tests.unit.test_deploy import IMAGE, REFERENCE, RELEASE
from tritonkit import Spec
from tritonkit.manifests.chart import chart_values
from tritonkit.manifests.observability import Scope, dashboard, prometheus_rule, rule_groups, scaling_signals
from tritonkit.slo.plan import plan_spec

SCOPE = Scope('namespace="ml",job="demo"', service="demo")
CAPACITY = {"rps": 1000, "concurrency": 12, "p99_ms": 9}
LLM = {
    "name": "chat",
    "kind": "llm",
    "random_init": {"family": "gpt2", "layers": 2, "hidden_size": 128, "heads": 4},
    "instance_group": [{"count": 2}],
    "capacity": {"rps": 20, "concurrency": 6, "p99_ms": 400},
    "slo": {"ttft_p99_ms": 500, "tpot_p99_ms": 50},
}


def spec(*models: dict[str, Any], slo: dict[str, Any] | None = None, prometheus: bool = True) -> Spec:
    env = {"name": "prod", "namespace": "ml", "runtime_image": IMAGE}
    if prometheus:
        env["prometheus_url"] = "http://prometheus.monitoring:9090"
    document = {"name": "demo", "models": list(models), "environments": [env]}
    return Spec.model_validate({**document, "slo": slo} if slo else document)


def python_model(name: str = "m", **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "python", "path": name, "inputs": [], "outputs": [], **extra}


def alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_error_budget_burns_at_the_workbooks_rates_over_two_windows_each() -> None:
    groups = rule_groups(spec(python_model(), slo={"error_rate": 0.001}), SCOPE)
    burns = [a for a in alerts(groups) if a["alert"] == "TritonkitErrorBudgetBurn"]
    assert [(a["labels"]["slo_window"], a["labels"]["severity"]) for a in burns] == [
        ("1h/5m", "critical"), ("6h/30m", "critical"), ("1d/2h", "warning"), ("3d/6h", "warning")
    ]  # fmt: skip
    assert burns[0]["expr"] == (
        'tritonkit:request_error:ratio_rate1h{tritonkit_service="demo",model="m"} > 0.0144 and '
        'tritonkit:request_error:ratio_rate5m{tritonkit_service="demo",model="m"} > 0.0144'
    )
    assert " > 0.006 and " in burns[1]["expr"] and burns[2]["expr"] == (
        'tritonkit:request_error:ratio_rate1d{tritonkit_service="demo",model="m"} > 0.003 and '
        'tritonkit:request_error:ratio_rate2h{tritonkit_service="demo",model="m"} > 0.003'
    )
    assert burns[3]["expr"].endswith('ratio_rate6h{tritonkit_service="demo",model="m"} > 0.001')


def test_recordings_cover_every_window_the_alerts_read_and_keep_releases_apart() -> None:
    recordings = rule_groups(spec(python_model(), slo={"error_rate": 0.01}), SCOPE)[0]["rules"]
    names = [r["record"] for r in recordings]
    assert names[:2] == ["tritonkit:request_failure:rate5m", "tritonkit:request:rate5m"]
    assert [n.rsplit("ratio_rate", 1)[1] for n in names[2:]] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
    assert all(r["labels"] == {"tritonkit_service": "demo"} for r in recordings)
    failures = 'sum by (namespace, model) (rate(nv_inference_request_failure{namespace="ml",job="demo"}[5m]))'
    assert recordings[0]["expr"] == failures and recordings[2]["expr"].startswith(f"{failures} / (")
    # a day and more: traffic-weighted sums of the recorded 5m rates, not rate(…[3d]) on raw counters
    own = '{tritonkit_service="demo"}'
    assert recordings[-1]["expr"] == (
        f"sum_over_time(tritonkit:request_failure:rate5m{own}[3d]) / sum_over_time(tritonkit:request:rate5m{own}[3d])"
    )
    assert not any("[1d]" in r["expr"] or "[3d]" in r["expr"] for r in recordings if "nv_inference" in r["expr"])


def test_with_an_llm_model_the_engines_error_responses_are_failures_and_not_successes() -> None:
    recordings = rule_groups(spec(python_model(slo={"error_rate": 0.01}), LLM), SCOPE)[0]["rules"]

    def rate(metric: str, more: str = "") -> str:
        return f'sum by (namespace, model) (rate({metric}{{namespace="ml",job="demo"{more}}}[5m]))'

    triton = rate("nv_inference_request_failure")
    engine = rate("tritonkit_llm_request_failure_total", ',reason!="invalid"')  # the client's are not errors
    # all requests = Triton's successes + failures (an error response is one of its successes)
    assert recordings[2]["expr"] == (
        f"(({triton} + {engine}) or {triton}) / ({rate('nv_inference_request_success')} + {triton})"
    )
    raw = [r for r in recordings if "nv_inference" in r["expr"] and r["record"] != "tritonkit:request:rate5m"]
    assert len(raw) == 6 and all("tritonkit_llm_request_failure_total" in r["expr"] for r in raw)
    plain = rule_groups(spec(python_model(slo={"error_rate": 0.01})), SCOPE)[0]["rules"]
    assert not any("tritonkit_llm" in r["expr"] for r in plain)  # no engine, no engine counter
    board = dashboard(spec(python_model(slo={"error_rate": 0.01}), {**LLM, "slo": {"error_rate": 0.01}}), SCOPE)
    errors = [p for p in board["panels"] if p["title"] in ("error / rejection rate", "error-budget burn rate")]
    assert [("tritonkit_llm" in _targets(p)[0]) for p in errors] == [False, False, True, True]  # m, then chat


def test_latency_alerts_compare_the_p99_with_the_budget_in_milliseconds() -> None:
    (page, ticket, absent, scrape) = alerts(rule_groups(spec(python_model(slo={"p99_ms": 12.5})), SCOPE))
    assert page["alert"] == "TritonkitLatencyOverSlo" and page["labels"]["slo_window"] == "1h/5m"
    p99 = 'nv_inference_request_summary_us{namespace="ml",job="demo",model="m",quantile="0.99"}'
    assert page["expr"] == (
        f"max by (namespace, model) (avg_over_time({p99}[1h])) / 1000 > 12.5 and "
        f"max by (namespace, model) (avg_over_time({p99}[5m])) / 1000 > 12.5"
    )
    assert ticket["labels"] == {"severity": "warning", "model": "m", "slo_window": "6h/30m"}
    assert (absent["alert"], scrape["alert"]) == ("TritonkitMetricsAbsent", "TritonkitScrapeDown")


def test_blind_alerts_say_so_a_target_down_or_a_model_without_series() -> None:
    """An SLO alert over no data stays silent: the health alerts fire instead (issue 25, defect 12)."""
    rules = alerts(
        rule_groups(spec(python_model(slo={"p99_ms": 5}), python_model("n", slo={"error_rate": 0.01})), SCOPE)
    )
    absent = [r for r in rules if r["alert"] == "TritonkitMetricsAbsent"]
    assert [(r["labels"]["model"], r["for"]) for r in absent] == [("m", "10m"), ("n", "10m")]
    assert absent[0]["expr"] == 'absent(nv_inference_request_success{namespace="ml",job="demo",model="m"})'
    (scrape,) = [r for r in rules if r["alert"] == "TritonkitScrapeDown"]  # one per release, not per model
    assert scrape["expr"] == 'up{namespace="ml",job="demo"} == 0' and scrape["for"] == "5m"
    assert scrape["labels"] == {"severity": "critical", "tritonkit_service": "demo"}


def test_llm_latency_is_judged_on_the_engines_ttft_and_tpot_histograms() -> None:
    rules = alerts(rule_groups(spec(LLM), SCOPE))
    assert [r["alert"] for r in rules] == ["TritonkitTtftOverSlo"] * 2 + ["TritonkitTpotOverSlo"] * 2 + [
        "TritonkitMetricsAbsent", "TritonkitScrapeDown"
    ]  # fmt: skip
    assert rules[0]["expr"].startswith(
        "1000 * histogram_quantile(0.99, sum by (namespace, model, le) "
        '(rate(vllm:time_to_first_token_seconds_bucket{namespace="ml",job="demo",model="chat"}[1h]))) > 500 and '
    )
    assert rules[2]["expr"].endswith("[5m]))) > 50")


def test_models_without_an_slo_get_no_rules() -> None:
    assert rule_groups(spec(python_model(capacity=CAPACITY)), SCOPE) == []
    rule = prometheus_rule(spec(python_model(slo={"p99_ms": 5})), SCOPE, namespace="ml")
    assert (rule["kind"], rule["metadata"]["namespace"]) == ("PrometheusRule", "ml")
    assert [g["name"] for g in rule["spec"]["groups"]] == ["demo-slo-recordings", "demo-slo-alerts"]


IN_FLIGHT_M = 'sum(rate(nv_inference_request_duration_us{namespace="ml",job="demo",model="m"}[1m])) / 1e6'


def test_plain_models_scale_on_their_requests_in_flight() -> None:
    """The capacity is requests in flight (queued + executing): so is the signal (issue 25 defect 8;
    the pending count is only the queued part). One signal per model: an ensemble's request is in
    flight in the ensemble and its steps at once."""
    loaded = spec(python_model(capacity=CAPACITY), slo={"peak_rps": 3000})
    (signal,) = scaling_signals(loaded, plan_spec(loaded, None), SCOPE)
    assert signal.query == IN_FLIGHT_M
    assert (signal.name, signal.target) == ("in-flight-m", 10)  # 12 / 1.2
    assert (signal.pod_metric, signal.pod_labels) == ("tritonkit_requests_in_flight", (("model", "m"),))
    two = spec(python_model(capacity=CAPACITY), python_model(name="Odd_Name", capacity={**CAPACITY, "concurrency": 24}))
    assert [(s.name, s.target) for s in scaling_signals(two, plan_spec(two, None), SCOPE)] == [
        ("in-flight-m", 10),
        ("in-flight-odd-name", 20),
    ]


def test_llm_models_scale_on_sequences_and_kv_cache_usage() -> None:
    loaded = spec(python_model(capacity=CAPACITY), LLM)
    in_flight, sequences, kv = scaling_signals(loaded, plan_spec(loaded, None), SCOPE)
    assert in_flight.target == 10  # the plain model's target
    assert sequences.query == (
        'sum(vllm:num_requests_running{namespace="ml",job="demo"}) + '
        'sum(vllm:num_requests_waiting{namespace="ml",job="demo"})'
    )
    assert sequences.target == 5  # 6 sequences / 1.2 headroom
    assert kv.query == 'sum(vllm:kv_cache_usage_perc{namespace="ml",job="demo"})'
    assert kv.target == 1.6  # 0.8 per engine instance, two instances per replica
    alone = spec(LLM)
    assert [s.name for s in scaling_signals(alone, plan_spec(alone, None), SCOPE)] == ["llm-sequences", "llm-kv-cache"]


def test_no_capacity_means_no_signal() -> None:
    loaded = spec(python_model(slo={"p99_ms": 5}))
    assert scaling_signals(loaded, plan_spec(loaded, None), SCOPE) == []


def _targets(panel: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in panel["targets"]]


def test_dashboard_draws_the_slo_and_the_planned_capacity() -> None:
    loaded = spec(python_model(capacity=CAPACITY), slo={"p99_ms": 10, "peak_rps": 3000, "error_rate": 0.001})
    board = dashboard(loaded, SCOPE)
    row, *panels = board["panels"]
    assert row["title"] == "m" and row["type"] == "row"
    assert [p["title"] for p in panels] == [
        "p99 latency vs SLO", "throughput vs planned capacity", "queue-time share",
        "error / rejection rate", "requests in flight and pending", "error-budget burn rate",
    ]  # fmt: skip
    latency, throughput, queue, errors, pending, burn = panels
    assert _targets(latency)[1] == "vector(10)"
    assert latency["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 10
    assert _targets(throughput)[1:] == ["vector(4000)", "vector(3000)"]  # 1000/s x 4 replicas; the peak
    assert "nv_inference_queue_duration_us" in _targets(queue)[0]
    assert "nv_inference_request_failure" in _targets(errors)[0]
    assert _targets(pending) == [
        "sum by (namespace, model) "
        '(rate(nv_inference_request_duration_us{namespace="ml",job="demo",model="m"}[1m])) / 1e6',
        'sum by (namespace, model) (nv_inference_pending_request_count{namespace="ml",job="demo",model="m"})',
    ]
    assert _targets(burn)[0].endswith(" / 0.001")
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    positions = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in board["panels"]}
    assert len(positions) == len(board["panels"])  # no two panels on top of each other


def test_llm_dashboard_shows_ttft_tpot_and_the_engines_queue() -> None:
    row, latency, *_, pending = dashboard(spec(LLM), SCOPE)["panels"]
    assert [t["legendFormat"] for t in latency["targets"]] == ["TTFT p99", "TPOT p99", "SLO"]
    assert [t["legendFormat"] for t in pending["targets"]] == ["pending", "waiting sequences", "running sequences"]


def test_chart_values_carry_the_plan_the_rules_and_the_dashboard() -> None:
    loaded = spec(python_model(capacity=CAPACITY), slo={"p99_ms": 10, "peak_rps": 3000, "error_rate": 0.001})
    values = chart_values(loaded, loaded.environment("prod"), RELEASE, REFERENCE)
    assert values["fullnameOverride"] == "demo"
    assert values["release"] == {"image": REFERENCE.removeprefix("oci://"), "name": "v3"}
    assert values["replicas"] == 4
    scaling = values["autoscaling"]
    assert scaling["enabled"] is True and (scaling["minReplicas"], scaling["maxReplicas"]) == (1, 6)
    assert scaling["signals"] == [
        {"name": "in-flight-m", "query": IN_FLIGHT_M, "target": "10",
         "podMetric": "tritonkit_requests_in_flight", "podSelector": {"model": "m"}}
    ]  # fmt: skip
    assert values["prometheusRule"]["groups"] == rule_groups(loaded, SCOPE)
    assert values["dashboard"]["json"]["uid"] == "tritonkit-demo"
    assert not values["prometheusRule"]["enabled"] and not values["dashboard"]["enabled"]


def test_chart_autoscaling_stays_off_without_a_prometheus_to_read() -> None:
    loaded = spec(python_model(capacity=CAPACITY), prometheus=False)
    values = chart_values(loaded, loaded.environment("prod"), RELEASE, REFERENCE)
    assert values["autoscaling"]["enabled"] is False and values["autoscaling"]["signals"]
