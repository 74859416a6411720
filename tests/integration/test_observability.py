"""The SLO rules, the dashboard's queries and the scaling signals, run for real: promtool checks and
unit-tests the rules, and Debian's prometheus evaluates every expression against the embedded Triton
(and the LLM engine) it scrapes."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.integration.prometheus_server import classifier_traffic, running_prometheus
from tritonkit import Endpoints, Spec, TritonServer, build_repository, load_spec
from tritonkit.manifests.observability import Scope, dashboard, in_flight, rule_groups, scaling_signals
from tritonkit.serve.llm_client import generate
from tritonkit.serve.prometheus import query
from tritonkit.slo.plan import plan_spec
from tritonkit.spec.intent import Capacity, Slo

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian's prometheus (with promtool) is not installed ('make sysdeps' installs it)",
)

LOCAL = Scope('job="triton"', service="demo", by=("job", "model"))
# a latency budget nothing meets (so the latency alert must fire), an error budget, traffic to plan
SLO = Slo(p99_ms=0.001, error_rate=0.001, peak_rps=50)


def _with_intent(spec: Spec, capacity_for: str) -> Spec:
    models = [
        m.model_copy(update={"capacity": Capacity(rps=100, concurrency=4, p99_ms=5)}) if m.name == capacity_for else m
        for m in spec.models
    ]
    return spec.model_copy(update={"slo": SLO, "models": models}).with_slo_defaults()


def _expressions(spec: Spec, scope: Scope) -> dict[str, str]:
    """Every PromQL expression tritonkit renders for ``spec``: rules, dashboard targets, signals."""
    found = {}
    for group in rule_groups(spec, scope):
        for rule in group["rules"]:
            labels = rule.get("labels", {})
            name = rule.get("record") or f"{rule['alert']} {labels.get('model')} {labels.get('slo_window')}"
            found[name] = rule["expr"]
    for panel in dashboard(spec, scope)["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']} {target['legendFormat']} #{panel['id']}"] = target["expr"]
    for signal in scaling_signals(spec, plan_spec(spec, None), scope):
        found[f"signal {signal.name}"] = signal.query
    return found


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


# ------------------------------------------------------------------------------------ promtool


def test_promtool_accepts_the_rules_of_every_model_kind(example_copy: Path, tmp_path: Path) -> None:
    spec = _with_intent(load_spec(example_copy / "tritonkit.yaml").spec, "classifier")
    chat = load_spec(example_copy / "llm.yaml").spec
    llm = chat.models[0].model_copy(update={"slo": Slo(ttft_p99_ms=500, tpot_p99_ms=50, error_rate=0.01)})
    spec = spec.model_copy(update={"models": [*spec.models, llm]})
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(spec, LOCAL)}))
    result = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    assert "TritonkitTtftOverSlo" in (tmp_path / "rules.yaml").read_text()


FAST_BURN_TEST = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # 10 requests/s answered; from minute 10 on, 1 request/s fails (9%: a 91x burn of a 0.1% budget)
      - series: 'nv_inference_request_success{namespace="ml",job="demo",model="m",version="1"}'
        values: '0+600x30'
      - series: 'nv_inference_request_failure{namespace="ml",job="demo",model="m",version="1",reason="BACKEND"}'
        values: '0x10 0+60x20'
    alert_rule_test:
      - {alertname: TritonkitErrorBudgetBurn, eval_time: 9m, exp_alerts: []}
      - alertname: TritonkitErrorBudgetBurn
        eval_time: 20m
        exp_alerts:
"""


def _fast_burn_test(spec: Spec, tmp_path: Path, test_text: str) -> list[dict[str, Any]]:
    """Run ``promtool test rules`` on ``spec``'s rules with the test ``test_text``, whose second
    alert test gets every fast-burn alert the rules have as expected; returns the alert rules."""
    scope = Scope('namespace="ml",job="demo"', service="demo")
    groups = rule_groups(spec, scope)
    for rule in groups[1]["rules"]:  # promtool compares annotations literally, and $value differs per window
        del rule["annotations"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    # at 20m every burn rate is exceeded: 9-10% failing over 5m, ~4% over the longer windows (all > 14.4 x 0.1%)
    expected = [
        {"exp_labels": {**rule["labels"], "namespace": "ml", "tritonkit_service": "demo"}}
        for rule in groups[1]["rules"]
        if rule["alert"] == "TritonkitErrorBudgetBurn"
    ]
    test = yaml.safe_load(test_text)
    test["tests"][0]["alert_rule_test"][1]["exp_alerts"] = expected
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    result = _promtool("test", "rules", "test.yaml", cwd=tmp_path)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    return [r for r in groups[1]["rules"] if r["alert"] == "TritonkitErrorBudgetBurn"]


def test_promtool_unit_test_fires_the_fast_burn_alert_only_after_errors_start(tmp_path: Path) -> None:
    spec = Spec.model_validate(
        {"name": "demo", "slo": {"error_rate": 0.001},
         "models": [{"name": "m", "kind": "python", "path": "m", "inputs": [], "outputs": []}]}
    )  # fmt: skip
    rules = _fast_burn_test(spec, tmp_path, FAST_BURN_TEST)
    assert [r["labels"]["slo_window"] for r in rules] == ["1h/5m", "6h/30m", "1d/2h", "3d/6h"]


BLIND_TEST = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # one replica scraped until minute 5, then failing; the other never exported model m
      - series: 'up{namespace="ml",job="demo",instance="pod-a"}'
        values: '1x5 0x25'
      - series: 'up{namespace="ml",job="demo",instance="pod-b"}'
        values: '1x30'
      - series: 'nv_inference_request_success{namespace="ml",job="demo",model="other",version="1"}'
        values: '0+600x30'
    alert_rule_test:
      - {alertname: TritonkitScrapeDown, eval_time: 8m, exp_alerts: []}
      - alertname: TritonkitScrapeDown
        eval_time: 12m
        exp_alerts:
          - exp_labels: {severity: critical, tritonkit_service: demo, namespace: ml, job: demo, instance: pod-a}
      - {alertname: TritonkitMetricsAbsent, eval_time: 9m, exp_alerts: []}
      - alertname: TritonkitMetricsAbsent
        eval_time: 12m
        exp_alerts:
          - exp_labels: {severity: critical, model: m, namespace: ml, job: demo}
      # what they guard against: over no data, the burn alert of m stays silent however bad things are
      - {alertname: TritonkitErrorBudgetBurn, eval_time: 30m, exp_alerts: []}
"""


def test_promtool_unit_test_fires_the_blind_alerts_a_target_down_and_a_model_without_series(tmp_path: Path) -> None:
    spec = Spec.model_validate(
        {"name": "demo", "slo": {"error_rate": 0.001},
         "models": [{"name": "m", "kind": "python", "path": "m", "inputs": [], "outputs": []}]}
    )  # fmt: skip
    groups = rule_groups(spec, Scope('namespace="ml",job="demo"', service="demo"))
    for rule in groups[1]["rules"]:
        del rule["annotations"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "test.yaml").write_text(BLIND_TEST)
    result = _promtool("test", "rules", "test.yaml", cwd=tmp_path)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


LLM_FAST_BURN_TEST = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # 10 requests/s, every one a success to Triton (a decoupled model's error response is one);
      # from minute 10 on, the engine ends 1 request/s with an error response (10%: a 100x burn),
      # and refuses 1 more a second as invalid: the client's mistake, not an error (not counted)
      - series: 'nv_inference_request_success{namespace="ml",job="demo",model="chat",version="1"}'
        values: '0+600x30'
      - series: 'nv_inference_request_failure{namespace="ml",job="demo",model="chat",version="1",reason="BACKEND"}'
        values: '0x30'
      - series: 'tritonkit_llm_request_failure_total{namespace="ml",job="demo",model="chat",reason="invalid"}'
        values: '0x10 0+60x20'
      - series: 'tritonkit_llm_request_failure_total{namespace="ml",job="demo",model="chat",reason="error"}'
        values: '0x10 0+60x20'
    alert_rule_test:
      - {alertname: TritonkitErrorBudgetBurn, eval_time: 9m, exp_alerts: []}
      - alertname: TritonkitErrorBudgetBurn
        eval_time: 20m
        exp_alerts:
    promql_expr_test:
      # the ratio is 1 in 10, not 1 in 11: the error responses are not counted again as requests
      - expr: >-
          (tritonkit:request_error:ratio_rate5m > bool 0.0999)
          * (tritonkit:request_error:ratio_rate5m < bool 0.1001)
        eval_time: 20m
        exp_samples:
          - {labels: '{model="chat",namespace="ml",tritonkit_service="demo"}', value: 1}
"""


def test_promtool_unit_test_fires_the_fast_burn_alert_on_an_llm_engines_error_responses(
    example_copy: Path, tmp_path: Path
) -> None:
    chat = load_spec(example_copy / "llm.yaml").spec
    model = chat.models[0].model_copy(update={"name": "chat", "slo": Slo(ttft_p99_ms=500, error_rate=0.001)})
    spec = chat.model_copy(update={"name": "demo", "models": [model]})
    rules = _fast_burn_test(spec, tmp_path, LLM_FAST_BURN_TEST)
    assert [r["labels"]["slo_window"] for r in rules] == ["1h/5m", "6h/30m", "1d/2h", "3d/6h"]


# ------------------------------------------------------------------------ a real Prometheus


def _api(url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{url}/api/v1/{path}", timeout=10) as response:
        return json.loads(response.read())["data"]


@pytest.fixture(scope="module")
def demo_intent(example_copy: Path) -> Spec:
    return _with_intent(load_spec(example_copy / "tritonkit.yaml").spec, "classifier")


@pytest.fixture(scope="module")
def ruled_prometheus(
    demo_server: TritonServer, demo_intent: Spec, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Prometheus with tritonkit's rules loaded, after ~10 s of traffic to the classifier (ten
    scrapes: every rate has samples to work on)."""
    root = tmp_path_factory.mktemp("prometheus-rules")
    (root / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(demo_intent, LOCAL)}))
    with running_prometheus(demo_server.endpoints.metrics_url, root, [root / "rules.yaml"]) as url:
        classifier_traffic(demo_server.endpoints.grpc_url, 10).join()
        yield url


def test_prometheus_loads_and_evaluates_every_rule_without_error(ruled_prometheus: str, demo_intent: Spec) -> None:
    groups = _api(ruled_prometheus, "rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in rule_groups(demo_intent, LOCAL))
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]
    ratio = query(ruled_prometheus, 'tritonkit:request_error:ratio_rate5m{tritonkit_service="demo",model="classifier"}')
    assert ratio == 0.0  # recorded: requests were answered, none failed
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the p99 is above a 1 µs budget: the latency alert is on
        alerts = _api(ruled_prometheus, "alerts")["alerts"]
        if any(a["labels"]["alertname"] == "TritonkitLatencyOverSlo" and a["labels"]["model"] == "classifier"
               for a in alerts):  # fmt: skip
            break
        time.sleep(1)
    else:
        pytest.fail(f"no latency alert for the classifier: {alerts}")


def test_every_expression_runs_and_the_classifiers_panels_have_data(ruled_prometheus: str, demo_intent: Spec) -> None:
    expressions = _expressions(demo_intent, LOCAL)
    values = {name: query(ruled_prometheus, expr) for name, expr in expressions.items()}  # raises on any error
    classifier = dashboard(demo_intent, LOCAL)["panels"]
    row = next(i for i, p in enumerate(classifier) if p["type"] == "row" and p["title"] == "classifier")
    for panel in classifier[row + 1 : row + 7]:
        for target in panel["targets"]:
            name = f"panel {panel['title']} {target['legendFormat']} #{panel['id']}"
            assert values[name] == values[name], f"{name}: no data for {target['expr']}"  # not NaN
    assert values["signal in-flight-classifier"] >= 0  # reported (NaN would fail: no series)
    p99 = values["panel p99 latency vs SLO p99 #" + str(classifier[row + 1]["id"])]
    assert 0 < p99 < 10_000  # milliseconds


SLOW_MODEL = """
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            time.sleep(0.2)  # the server's time per request, whatever the host's load
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))
        return responses
"""
SLOW_SPEC = """
name: slow
models:
  - name: slow
    kind: python
    path: slow
    max_batch_size: 0
    inputs: [{name: x, dtype: FP32, dims: [1]}]
    outputs: [{name: y, dtype: FP32, dims: [1]}]
    instance_group: [{count: 2, kind: KIND_CPU}]
"""


def test_the_in_flight_signal_counts_the_requests_executing(tmp_path: Path) -> None:
    """Issue 25 defect 8, with the query the renderer produces (its window shortened for a test):
    two closed-loop clients of a model with two instances that each take 200 ms keep two requests
    executing and none queued. Triton's pending count, the old signal, counts only queued requests
    (``infer_request.cc``: PENDING until the instance starts it) and reads about 0, so the
    autoscaler never saw this load; the signal reads the requests inside Triton. Not all of each
    client's time: the frontend's and the Python backend's own overhead fall outside Triton's
    request duration, more so on a loaded host — hence a floor, not an equality."""
    import tritonclient.grpc as grpcclient

    from tests.helpers import Background

    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "model.py").write_text(SLOW_MODEL)
    (tmp_path / "tritonkit.yaml").write_text(SLOW_SPEC)
    built = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "dist", cache_dir=tmp_path / "cache")
    clients = 2

    class Closed(Background):
        def run(self) -> None:
            client = grpcclient.InferenceServerClient(server.endpoints.grpc_url)
            tensor = grpcclient.InferInput("x", [1], "FP32")
            tensor.set_data_from_numpy(np.ones(1, dtype=np.float32))
            while not self.stop.is_set():
                client.infer("slow", [tensor])
            client.close()

    with TritonServer(built.path, endpoints=Endpoints.allocate()) as server:
        rendered = in_flight(LOCAL, "slow", window="8s")
        assert rendered.replace("[8s]", "[1m]") == in_flight(LOCAL, "slow")  # the signal's query, one window apart
        with running_prometheus(server.endpoints.metrics_url, tmp_path) as url, Closed(clients):
            time.sleep(11)  # the 8 s window full of steady traffic
            signal = query(url, rendered)
            pending = query(
                url, f"avg_over_time(sum(nv_inference_pending_request_count{LOCAL.match(model='slow')})[8s:1s])"
            )
    assert 1.0 <= signal <= clients + 0.2 and pending <= 0.5, (signal, pending)


# ------------------------------------------------------------------------------- the LLM engine


@pytest.fixture(scope="module")
def llm_prometheus(
    example_copy: Path, tmp_path_factory: pytest.TempPathFactory, model_cache: Path
) -> Iterator[tuple[str, Spec]]:
    """The example's tiny LLM served and scraped, after a few generations (TTFT/TPOT observed)."""
    loaded = load_spec(example_copy / "llm.yaml")
    root = tmp_path_factory.mktemp("llm-observability")
    built = build_repository(loaded, root / "dist", cache_dir=model_cache)
    server = TritonServer(built.path, endpoints=Endpoints.allocate())
    server.start()
    try:
        spec = loaded.spec.model_copy(
            update={"slo": Slo(ttft_p99_ms=5000, tpot_p99_ms=1000, error_rate=0.01)}
        ).with_slo_defaults()
        model = spec.models[0].model_copy(update={"capacity": Capacity(rps=2, concurrency=4, p99_ms=900)})
        spec = spec.model_copy(update={"models": [model]})
        with running_prometheus(server.endpoints.metrics_url, root) as url:
            _scraped(url, 'sum(up{job="triton"})', 1)  # rates need a sample from before the generations
            for _ in range(3):
                generate(server.endpoints.grpc_url, model.name, "Hello", {"max_tokens": 8, "ignore_eos": True})
            _scraped(url, 'sum(vllm:time_to_first_token_seconds_count{job="triton"})', 3)
            time.sleep(2)  # and one more scrape, so every rate has two samples after the generations
            yield url, spec
    finally:
        server.stop()


def _scraped(url: str, promql: str, at_least: float) -> None:
    value, deadline = math.nan, time.monotonic() + 30
    while not value >= at_least and time.monotonic() < deadline:
        time.sleep(0.5)
        value = query(url, promql)
    assert value >= at_least, f"{promql} = {value} after 30 s"


def test_llm_signals_rules_and_panels_run_on_the_engines_metrics(llm_prometheus: tuple[str, Spec]) -> None:
    url, spec = llm_prometheus
    expressions = _expressions(spec, LOCAL)
    assert {"signal llm-sequences", "signal llm-kv-cache"} <= set(expressions)
    assert not [name for name in expressions if name.startswith("signal in-flight-")]  # the engine's own signals
    values = {name: query(url, expr) for name, expr in expressions.items()}
    assert values["signal llm-sequences"] == 0.0 and values["signal llm-kv-cache"] >= 0.0  # idle, but reported
    ttft = next(v for name, v in values.items() if name.startswith("panel p99 latency vs SLO TTFT p99"))
    assert 0 < ttft < 5000, values  # ms, from the engine's histogram
    for name in ("waiting sequences", "running sequences"):
        assert next(v for n, v in values.items() if n.startswith(f"panel requests in flight and pending {name}")) == 0.0
