"""Triton's Prometheus metrics, read straight from its metrics port (no Prometheus needed).

:func:`scrape` parses the text exposition format into samples; :func:`model_counters` picks one
model's counters and latency quantiles out of them. ``tritonkit serve`` starts Triton with
``--metrics-config=summary_latencies=true``, so the request and queue latency *summaries*
(p50/p90/p95/p99/p999 over Triton's sliding window) are there as well as the cumulative counters.

Example:
    >>> counters = model_counters(scrape("http://127.0.0.1:8002/metrics"), "classifier")
    >>> counters.success, counters.p99_us
"""

from __future__ import annotations

import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from tritonkit.errors import ServerError

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Scrape:
    """One read of the metrics endpoint: when, and every sample by (name, labels)."""

    at: float
    samples: Samples


@dataclass(frozen=True)
class ModelCounters:
    """One model's cumulative counters (all versions summed) and latency quantiles at one moment."""

    at: float
    success: float
    failure: float
    inferences: float
    executions: float
    request_us: float
    queue_us: float
    quantiles_us: dict[float, float] = field(default_factory=dict)  # request latency, by quantile
    queue_quantiles_us: dict[float, float] = field(default_factory=dict)
    pending: float = 0.0

    @property
    def p99_us(self) -> float:
        return self.quantiles_us.get(0.99, math.nan)


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format → ``{(name, labels): value}`` (comments and blank lines skipped)."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = number
    return samples


def scrape(url: str, *, timeout: float = 10.0) -> Scrape:
    """Read ``url`` (``http://host:8002/metrics``).

    Raises:
        ServerError: the endpoint cannot be reached.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"cannot read Triton's metrics at {url}: {exc}", hint="give the metrics port (8002)") from exc
    return Scrape(time.monotonic(), parse(text))


def model_counters(read: Scrape, model: str, *, version: int | None = None) -> ModelCounters:
    """``model``'s counters in ``read`` (zeros when Triton has not served it yet); all versions
    summed, or only ``version``'s."""

    def mine(labels: frozenset[tuple[str, str]]) -> bool:
        return ("model", model) in labels and (version is None or ("version", str(version)) in labels)

    def total(name: str) -> float:
        return sum(v for (n, labels), v in read.samples.items() if n == name and mine(labels))

    def quantiles(name: str) -> dict[float, float]:
        found: dict[float, float] = {}
        for (n, labels), value in read.samples.items():
            label = dict(labels)
            if n == name and mine(labels) and "quantile" in label and not math.isnan(value):
                found[float(label["quantile"])] = max(found.get(float(label["quantile"]), 0.0), value)
        return found

    return ModelCounters(
        at=read.at,
        success=total("nv_inference_request_success"),
        failure=total("nv_inference_request_failure"),
        inferences=total("nv_inference_count"),
        executions=total("nv_inference_exec_count"),
        request_us=total("nv_inference_request_duration_us"),
        queue_us=total("nv_inference_queue_duration_us"),
        quantiles_us=quantiles("nv_inference_request_summary_us"),
        queue_quantiles_us=quantiles("nv_inference_queue_summary_us"),
        pending=total("nv_inference_pending_request_count"),
    )
