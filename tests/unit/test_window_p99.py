"""The p99 a check or a walk judges is the window's, as near as Triton's summaries allow, and a
check through Prometheus reads one environment's namespace (issue 25 defect 6).

Triton's ``nv_inference_request_summary_us`` is a prometheus-cpp Summary with its default 60 s
``max_age`` (core ``metric_model_reporter.cc`` passes none): a read at t is the p99 of [t-60s, t].
The last read of a window was judged before: over a 5-minute window, a slow first 4 minutes
passed if the last minute was fast.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tritonkit.cli import main
from tritonkit.serve import prometheus
from tritonkit.serve.metrics import SUMMARY_SPAN_S, Scrape, window_counters


def _read(at: float, p99_us: float, served: float) -> Scrape:
    labels = frozenset({("model", "m"), ("version", "1")})
    return Scrape(
        at,
        {
            ("nv_inference_request_success", labels): served,
            ("nv_inference_request_summary_us", labels | {("quantile", "0.99")}): p99_us,
        },
    )


def test_a_long_windows_p99_is_its_worst_minute_not_its_last() -> None:
    # 5 minutes, read every 10 s: slow (400 ms) until 4 minutes in, fast (5 ms) in the last minute
    reads = [_read(t, 400_000.0 if t < 240 else 5_000.0, served=10.0 * t) for t in range(0, 301, 10)]
    before, after = window_counters(reads, "m")
    assert after.p99_us == 400_000.0  # was 5,000: the last minute's
    # the reads of the first minute also cover requests from before the window: not counted
    early = [_read(0, 900_000.0, 0.0)] + [_read(t, 5_000.0, 10.0 * t) for t in range(10, 121, 10)]
    assert window_counters(early, "m")[1].p99_us == 5_000.0


def test_a_short_window_reads_the_last_minute_and_says_so() -> None:
    reads = [_read(t, 7_000.0 + t, 10.0 * t) for t in range(0, 11)]
    assert window_counters(reads, "m")[1].p99_us == 7_010.0
    assert SUMMARY_SPAN_S == 60.0


def test_prometheus_takes_the_worst_minute_inside_the_window_in_the_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    def query(base_url: str, promql: str, at: float | None = None) -> float:
        asked.append(promql)
        return 1.0

    monkeypatch.setattr(prometheus, "query", query)
    monkeypatch.setattr(prometheus, "query_vector", lambda *a, **k: [])
    prometheus.query_window("http://p:9090", "m", 300, selector='namespace="ml-prod"')
    summary = 'nv_inference_request_summary_us{model="m",namespace="ml-prod",quantile="0.99"}'
    assert f"max(max_over_time({summary}[240s]))" in asked, asked
    assert all('namespace="ml-prod"' in q for q in asked), asked
    asked.clear()
    prometheus.query_window("http://p:9090", "m", 30)
    assert 'max(nv_inference_request_summary_us{model="m",quantile="0.99"})' in asked, asked


def test_check_through_prometheus_reads_only_the_environments_namespace(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "tritonkit.yaml"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    spec.write_text(
        "name: d\nmodels:\n  - {name: m, kind: python, path: m, inputs: [{name: x, dtype: FP32, dims: [1]}],"
        " outputs: [{name: y, dtype: FP32, dims: [1]}], slo: {p99_ms: 50}}\n"
        "environments:\n  - {name: prod, namespace: ml-prod, runtime_image: 'i@sha256:" + "0" * 64 + "'}\n"
    )
    selectors: list[str] = []

    def counters(base_url: str, model: str, window_s: float, *, selector: str = "", llm: bool = False):  # type: ignore[no-untyped-def]
        selectors.append(selector)
        raise SystemExit(0)  # the selector is all this test needs

    monkeypatch.setattr(prometheus, "query_window", counters)
    done = CliRunner().invoke(main, ["check", "-f", str(spec), "--prometheus", "http://p:9090", "--env", "prod"])
    assert selectors == ['namespace="ml-prod"'], done.output
    assert selectors == ['namespace="ml-prod"']
