"""Triton's metrics through Prometheus: the PromQL a cluster would use, over its HTTP API.

:func:`query_window` asks Prometheus for one model's rates over a window and the worst p99
any replica reports, and returns them as two :class:`~tritonkit.serve.metrics.ModelCounters`
a window apart, so the same pure analysis judges a local Triton (two scrapes) and a cluster
(one PromQL round). The queries::

    sum(rate(nv_inference_request_success{model="m"}[5m]))          requests/s
    sum(rate(nv_inference_request_failure{model="m"}[5m]))          failures/s
    sum(rate(nv_inference_request_duration_us{model="m"}[5m]))      request time, µs/s
    sum(rate(nv_inference_queue_duration_us{model="m"}[5m]))        queue time, µs/s
    sum(rate(nv_inference_count{model="m"}[5m])) / sum(rate(nv_inference_exec_count{…}[5m]))
    max(max_over_time(nv_inference_request_summary_us{model="m",quantile="0.99"}[W-60s]))
                                            p99: the worst replica (summaries cannot be merged
                                            across pods) in the worst minute of the window (a
                                            summary covers the 60 s before it: SUMMARY_SPAN_S);
                                            under 90 s, max(…) now: the last minute

``selector`` narrows every query to some of the pods (more label matchers, e.g. one KServe
revision's: ``namespace="prod",pod=~"clf-predictor-00002-deployment-.+"``).

and for an ``llm`` model the engine's series (names in :mod:`tritonkit.serve.metrics`)::

    sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{model="m"}[5m]))   TTFT buckets/s,
    sum by (le) (rate(vllm:time_per_output_token_seconds_bucket{…}[5m]))         TPOT buckets/s
    sum(rate(tritonkit_llm_request_failure_total{model="m"}[5m]))   error responses/s (Triton
                                                                    counts them as successes; those
                                                                    with reason="invalid", the
                                                                    client's, are counted apart)
    sum(rate(vllm:prompt_tokens_total{…}[5m])) + …generation…      tokens/s, prompt + generated
    sum(max_over_time(vllm:num_requests_waiting{model="m"}[5m]))    waiting, each replica's peak
    sum(max_over_time(vllm:num_requests_running{model="m"}[5m]))    running, likewise
    max(max_over_time(vllm:kv_cache_usage_perc{model="m"}[5m]))     the fullest KV cache

The bucket rates times the window are the window's bucket counts (histograms merge across
replicas), and the p99 comes from them through the same
:meth:`~tritonkit.serve.metrics.Histogram.quantile` a direct read uses — the number PromQL's
``histogram_quantile`` gives over the same rates.

Example:
    >>> before, after = query_window("http://prometheus:9090", "classifier", 300)
    >>> before, after = query_window("http://prometheus:9090", "chat", 300, llm=True)
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace

from tritonkit.errors import ServerError
from tritonkit.serve.metrics import (
    GENERATION_TOKENS,
    KV_USAGE,
    LLM_FAILURES,
    LLM_INVALID,
    LLM_RUNNING,
    LLM_WAITING,
    PROMPT_TOKENS,
    SUMMARY_SPAN_S,
    TPOT,
    TTFT,
    Histogram,
    ModelCounters,
)


def query(base_url: str, promql: str, *, timeout: float = 10.0, at: float | None = None) -> float:
    """One instant query's scalar result (NaN when the result is empty), evaluated at ``at``
    (Unix seconds; default: when Prometheus handles it).

    Raises:
        ServerError: Prometheus cannot be reached or refuses the query.
    """
    result = query_vector(base_url, promql, timeout=timeout, at=at)
    return result[0][1] if result else math.nan


def query_vector(
    base_url: str, promql: str, *, timeout: float = 10.0, at: float | None = None
) -> list[tuple[dict[str, str], float]]:
    """One instant query's series: ``(labels, value)`` each, evaluated at ``at`` like :func:`query`.

    Raises:
        ServerError: Prometheus cannot be reached or refuses the query.
    """
    parameters = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode(parameters)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            document = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ServerError(
            f"cannot query Prometheus at {base_url}: {exc}", hint="give its base URL (port 9090)"
        ) from exc
    if document.get("status") != "success":
        raise ServerError(f"Prometheus refused '{promql}': {document.get('error', document)}")
    return [(series.get("metric", {}), float(series["value"][1])) for series in document["data"]["result"]]


def query_window(
    base_url: str, model: str, window_s: float, *, selector: str = "", llm: bool = False
) -> tuple[ModelCounters, ModelCounters]:
    """``model``'s counters as two reads ``window_s`` apart, computed from Prometheus rates over
    the window that just ended (with ``llm``, the engine's TTFT/TPOT buckets and its gauges' peaks
    over the window too); ``selector``: more label matchers (``a="b",c=~"d.*"``).

    Raises:
        ServerError: Prometheus cannot be reached or refuses a query.
    """
    selector = f'model="{model}"' + (f",{selector}" if selector else "")
    window = f"{max(1, int(window_s))}s"
    now = time.time()  # every query over the same window, however long Prometheus takes to answer

    def rate(metric: str) -> float:
        value = query(base_url, f"sum(rate({metric}{{{selector}}}[{window}]))", at=now)
        return 0.0 if math.isnan(value) else value

    def histogram(metric: str) -> Histogram | None:
        rows = query_vector(base_url, f"sum by (le) (rate({metric}_bucket{{{selector}}}[{window}]))", at=now)
        buckets = sorted((float(labels["le"]), value * window_s) for labels, value in rows if "le" in labels)
        return Histogram(tuple(buckets)) if buckets else None

    def peak(metric: str, combine: str) -> float:
        return query(base_url, f"{combine}(max_over_time({metric}{{{selector}}}[{window}]))", at=now)

    success, failure = rate("nv_inference_request_success"), rate("nv_inference_request_failure")
    invalid = tokens = 0.0
    if llm:  # the engine's error responses, which Triton counts as successes; the client's apart
        refused = rate(LLM_FAILURES)
        invalid = query(base_url, f'sum(rate({LLM_FAILURES}{{{selector},reason="{LLM_INVALID}"}}[{window}]))', at=now)
        invalid = 0.0 if math.isnan(invalid) else invalid
        success, failure = max(0.0, success - refused), failure + refused - invalid
        tokens = rate(PROMPT_TOKENS) + rate(GENERATION_TOKENS)
    inferences, executions = rate("nv_inference_count"), rate("nv_inference_exec_count")
    request_us, queue_us = rate("nv_inference_request_duration_us"), rate("nv_inference_queue_duration_us")
    # Each sample is the p99 of the 60 s before it (SUMMARY_SPAN_S): the worst sample whose 60 s lie in
    # the window is the window's worst minute; a window too short for that reads the last minute.
    summary = f'nv_inference_request_summary_us{{{selector},quantile="0.99"}}'
    inside = int(window_s - SUMMARY_SPAN_S)
    p99 = query(base_url, f"max(max_over_time({summary}[{inside}s]))" if inside >= 30 else f"max({summary})", at=now)
    before = ModelCounters(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    after = ModelCounters(
        at=window_s,
        success=success * window_s,
        failure=failure * window_s,
        inferences=inferences * window_s,
        executions=executions * window_s,
        request_us=request_us * window_s,
        queue_us=queue_us * window_s,
        quantiles_us={0.99: p99},
        invalid=invalid * window_s,
        tokens=tokens * window_s,
    )
    if llm:
        after = replace(
            after,
            ttft=histogram(TTFT),
            tpot=histogram(TPOT),
            waiting=peak(LLM_WAITING, "sum"),
            running=peak(LLM_RUNNING, "sum"),
            kv_usage=peak(KV_USAGE, "max"),
        )
    return before, after
