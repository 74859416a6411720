"""Triton's metrics through Prometheus: the PromQL a cluster would use, over its HTTP API.

:func:`window_counters` asks Prometheus for one model's rates over a window and the worst p99
any replica reports, and returns them as two :class:`~tritonkit.serve.metrics.ModelCounters`
a window apart, so the same pure analysis judges a local Triton (two scrapes) and a cluster
(one PromQL round). The queries::

    sum(rate(nv_inference_request_success{model="m"}[5m]))          requests/s
    sum(rate(nv_inference_request_failure{model="m"}[5m]))          failures/s
    sum(rate(nv_inference_request_duration_us{model="m"}[5m]))      request time, µs/s
    sum(rate(nv_inference_queue_duration_us{model="m"}[5m]))        queue time, µs/s
    sum(rate(nv_inference_count{model="m"}[5m])) / sum(rate(nv_inference_exec_count{…}[5m]))
    max(nv_inference_request_summary_us{model="m",quantile="0.99"}) p99 (worst replica: summaries
                                                                    cannot be merged across pods)

``selector`` narrows every query to some of the pods (more label matchers, e.g. one KServe
revision's: ``namespace="prod",pod=~"clf-predictor-00002-deployment-.+"``).

Example:
    >>> before, after = window_counters("http://prometheus:9090", "classifier", 300)
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request

from tritonkit.errors import ServerError
from tritonkit.serve.metrics import ModelCounters


def query(base_url: str, promql: str, *, timeout: float = 10.0, at: float | None = None) -> float:
    """One instant query's scalar result (NaN when the result is empty), evaluated at ``at``
    (Unix seconds; default: when Prometheus handles it).

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
    result = document["data"]["result"]
    return float(result[0]["value"][1]) if result else math.nan


def window_counters(
    base_url: str, model: str, window_s: float, *, selector: str = ""
) -> tuple[ModelCounters, ModelCounters]:
    """``model``'s counters as two reads ``window_s`` apart, computed from Prometheus rates over
    the window that just ended; ``selector``: more label matchers (``a="b",c=~"d.*"``).

    Raises:
        ServerError: Prometheus cannot be reached or refuses a query.
    """
    selector = f'model="{model}"' + (f",{selector}" if selector else "")
    window = f"{max(1, int(window_s))}s"
    now = time.time()  # every query over the same window, however long Prometheus takes to answer

    def rate(metric: str) -> float:
        value = query(base_url, f"sum(rate({metric}{{{selector}}}[{window}]))", at=now)
        return 0.0 if math.isnan(value) else value

    success, failure = rate("nv_inference_request_success"), rate("nv_inference_request_failure")
    inferences, executions = rate("nv_inference_count"), rate("nv_inference_exec_count")
    request_us, queue_us = rate("nv_inference_request_duration_us"), rate("nv_inference_queue_duration_us")
    p99 = query(base_url, f'max(nv_inference_request_summary_us{{{selector},quantile="0.99"}})', at=now)
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
    )
    return before, after
