"""Triton's Prometheus metrics, read straight from its metrics port (no Prometheus needed).

:func:`scrape` parses the text exposition format into samples; :func:`model_counters` picks one
model's counters and latency quantiles out of them. ``tritonkit serve`` starts Triton with
``--metrics-config=summary_latencies=true``, so the request and queue latency *summaries*
(p50/p90/p95/p99/p999 over Triton's sliding window) are there as well as the cumulative counters.

An ``llm`` model's engine (``python_backends/llm/``) adds vLLM's series through the Python
backend's custom metrics: the TTFT and TPOT histograms (:data:`TTFT`, :data:`TPOT`), the
waiting / running sequences and KV-cache usage gauges, and its error responses
(:data:`LLM_FAILURES`: Triton counts those as successes, so ``success`` and ``failure`` are
corrected with them).

A :class:`Histogram` is one read of cumulative buckets (merged over instances); the difference
of two reads is what the window observed, and :meth:`Histogram.quantile` interpolates a
quantile from it exactly as PromQL's ``histogram_quantile`` does, so a p99 computed here and
one computed from Prometheus's bucket rates (:mod:`tritonkit.serve.prometheus`) are the same
number. :func:`watch` scrapes through a window, and :func:`window_counters` turns the scrapes
into two reads a window apart, with the gauges at their peak over the window.

Example:
    >>> counters = model_counters(scrape("http://127.0.0.1:8002/metrics"), "classifier")
    >>> counters.success, counters.p99_us
    >>> before, after = window_counters(watch("http://127.0.0.1:8002/metrics", 30), "chat")
    >>> 1000 * after.ttft.minus(before.ttft).quantile(0.99)  # TTFT p99 over the window, ms
"""

from __future__ import annotations

import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from tritonkit.errors import ServerError

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]
Labels = frozenset[tuple[str, str]]

#: The LLM engine's series, named as vLLM's (histograms in seconds; KV usage 0-1 per instance).
TTFT = "vllm:time_to_first_token_seconds"
TPOT = "vllm:time_per_output_token_seconds"
LLM_WAITING = "vllm:num_requests_waiting"
LLM_RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
#: Requests the engine ended with an error response (overloaded, invalid, failed). Triton counts a
#: decoupled request whose answer is an error as a success, so the readers move these from
#: Triton's successes to its failures.
LLM_FAILURES = "tritonkit_llm_request_failure_total"
LLM_INVALID = "invalid"
"""The reason label of the engine's error responses to requests the client got wrong (a bad
parameter, a prompt over the context): counted apart, neither served nor a server failure."""
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts ``(upper bound, count)``, sorted by bound, ``+Inf`` last."""

    buckets: tuple[tuple[float, float], ...]

    @property
    def count(self) -> float:
        """Observations in all buckets (the ``+Inf`` bucket's count)."""
        return self.buckets[-1][1] if self.buckets else 0.0

    def minus(self, earlier: Histogram | None) -> Histogram:
        """What was observed since ``earlier``, bucket by bucket.

        A bucket that went down means the counters restarted (a reload): everything in this read
        is then new, as Prometheus's ``rate`` treats a counter reset.
        """
        if earlier is None:
            return self
        before = dict(earlier.buckets)
        delta = tuple((le, count - before.get(le, 0.0)) for le, count in self.buckets)
        return self if any(count < 0 for _, count in delta) else Histogram(delta)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, interpolated linearly inside its bucket, as PromQL's
        ``histogram_quantile``: NaN without observations; the lowest bucket starts at 0; a rank in
        the ``+Inf`` bucket answers the highest finite bound."""
        if len(self.buckets) < 2 or self.buckets[-1][0] != math.inf or self.count <= 0:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for index, (upper, count) in enumerate(self.buckets):
            if count >= rank:
                if upper == math.inf:
                    return self.buckets[-2][0]
                if index == 0 and upper <= 0:
                    return upper
                return lower + (upper - lower) * (rank - below) / (count - below) if count > below else upper
            lower, below = upper, count
        return self.buckets[-2][0]  # pragma: no cover - the +Inf bucket holds every observation


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
    # llm models (None / NaN for the others): the engine's histograms and gauges
    ttft: Histogram | None = None
    tpot: Histogram | None = None
    waiting: float = math.nan  # sequences waiting for a slot (summed over instances)
    running: float = math.nan  # sequences in the running batch (summed over instances)
    kv_usage: float = math.nan  # KV-cache fraction in use (the fullest instance)
    invalid: float = 0.0  # error responses to requests the client got wrong (not in success or failure)
    tokens: float = 0.0  # prompt + generated tokens the engine processed

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


def watch(url: str, seconds: float, *, every: float = 1.0) -> list[Scrape]:
    """Scrape ``url`` now, every ``every`` seconds, and once more ``seconds`` after the first.

    Raises:
        ServerError: the endpoint cannot be reached.
    """
    reads = [scrape(url)]
    end = reads[0].at + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(every, left))
        reads.append(scrape(url))
    return reads


SUMMARY_SPAN_S = 60.0
"""How far back Triton's latency summaries (``nv_inference_request_summary_us``, p50…p99) reach.
prometheus-cpp's ``Summary`` keeps observations for ``max_age`` 60 s (in 5 buckets of 12 s), and
Triton passes none of its own (core ``metric_model_reporter.cc``:
``CreateMetric<prometheus::Summary>(family, labels, quantiles)``): a summary read at time t is the
p99 of the requests of ``[t - 60 s, t]``, whatever window it is read in."""


def window_quantiles(reads: Sequence[Scrape], model: str, *, version: int | None = None) -> dict[float, float]:
    """``model``'s latency quantiles over the window ``reads`` span, as near as Triton's summaries
    allow (:data:`SUMMARY_SPAN_S`): over a window of at least 60 s, the worst of the reads whose
    60 s lie inside it (the worst p99 of any 60 s of the window, not the last minute's); over a
    shorter one, the last read's, which also covers requests from before the window (analysis says
    so)."""
    inside = [r for r in reads if r.at - reads[0].at >= SUMMARY_SPAN_S - 1e-6] or [reads[-1]]
    worst: dict[float, float] = {}
    for read in inside:
        for q, value in model_counters(read, model, version=version).quantiles_us.items():
            worst[q] = max(worst.get(q, 0.0), value)
    return worst


def window_counters(
    reads: Sequence[Scrape], model: str, *, version: int | None = None
) -> tuple[ModelCounters, ModelCounters]:
    """``model``'s counters at the first and the last of ``reads``, with the window's latency
    quantiles (:func:`window_quantiles`); the last read's gauges (waiting, running, KV usage) are
    their peaks over all of them (per instance, then summed or the fullest), so a burst inside the
    window is seen."""
    mine = _selector(model, version)
    after = replace(
        model_counters(reads[-1], model, version=version),
        quantiles_us=window_quantiles(reads, model, version=version),
        waiting=_gauge(reads, LLM_WAITING, mine, sum),
        running=_gauge(reads, LLM_RUNNING, mine, sum),
        kv_usage=_gauge(reads, KV_USAGE, mine, max),
    )
    return model_counters(reads[0], model, version=version), after


def model_counters(read: Scrape, model: str, *, version: int | None = None) -> ModelCounters:
    """``model``'s counters in ``read`` (zeros when Triton has not served it yet); all versions
    summed, or only ``version``'s."""
    mine = _selector(model, version)

    def total(name: str, reason: str | None = None) -> float:
        return sum(
            v
            for (n, labels), v in read.samples.items()
            if n == name and mine(labels) and (reason is None or ("reason", reason) in labels)
        )

    def quantiles(name: str) -> dict[float, float]:
        found: dict[float, float] = {}
        for (n, labels), value in read.samples.items():
            label = dict(labels)
            if n == name and mine(labels) and "quantile" in label and not math.isnan(value):
                found[float(label["quantile"])] = max(found.get(float(label["quantile"]), 0.0), value)
        return found

    return ModelCounters(
        at=read.at,
        success=total("nv_inference_request_success") - total(LLM_FAILURES),
        failure=total("nv_inference_request_failure") + total(LLM_FAILURES) - total(LLM_FAILURES, LLM_INVALID),
        invalid=total(LLM_FAILURES, LLM_INVALID),
        tokens=total(PROMPT_TOKENS) + total(GENERATION_TOKENS),
        inferences=total("nv_inference_count"),
        executions=total("nv_inference_exec_count"),
        request_us=total("nv_inference_request_duration_us"),
        queue_us=total("nv_inference_queue_duration_us"),
        quantiles_us=quantiles("nv_inference_request_summary_us"),
        queue_quantiles_us=quantiles("nv_inference_queue_summary_us"),
        pending=total("nv_inference_pending_request_count"),
        ttft=_histogram(read, TTFT, mine),
        tpot=_histogram(read, TPOT, mine),
        waiting=_gauge([read], LLM_WAITING, mine, sum),
        running=_gauge([read], LLM_RUNNING, mine, sum),
        kv_usage=_gauge([read], KV_USAGE, mine, max),
    )


def _selector(model: str, version: int | None) -> Callable[[Labels], bool]:
    def mine(labels: Labels) -> bool:
        return ("model", model) in labels and (version is None or ("version", str(version)) in labels)

    return mine


def _histogram(read: Scrape, name: str, mine: Callable[[Labels], bool]) -> Histogram | None:
    """``name``'s buckets in ``read``, summed over instances (None when it has none)."""
    buckets: dict[float, float] = {}
    for (n, labels), value in read.samples.items():
        label = dict(labels)
        if n == f"{name}_bucket" and "le" in label and mine(labels):
            le = float(label["le"])  # "+Inf" parses as inf
            buckets[le] = buckets.get(le, 0.0) + value
    return Histogram(tuple(sorted(buckets.items()))) if buckets else None


def _gauge(
    reads: Sequence[Scrape], name: str, mine: Callable[[Labels], bool], combine: Callable[[Iterable[float]], float]
) -> float:
    """Each instance's peak of gauge ``name`` over ``reads``, combined (NaN when none reports it)."""
    peaks: dict[Labels, float] = {}
    for read in reads:
        for (n, labels), value in read.samples.items():
            if n == name and mine(labels) and not math.isnan(value):
                peaks[labels] = max(peaks.get(labels, -math.inf), value)
    return combine(peaks.values()) if peaks else math.nan
