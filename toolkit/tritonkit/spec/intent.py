"""Intent: one service-level objective per model, and the capacity tune measured against it.

An ``slo:`` block states what "good" means for a model (repository-level ``slo:`` gives the
defaults; a model's own keys win)::

    slo:
      p99_ms: 10          # end-to-end latency budget
      peak_rps: 2000      # expected peak traffic
      max_queue_ms: 4     # queue time beyond which a request is refused, not queued
      error_rate: 0.001   # error budget
      headroom: 0.2       # spare capacity the plan keeps (default 20%)
      # llm models: ttft_p99_ms, tpot_p99_ms instead of p99_ms
      accuracy:           # a variant's budget against the original model, on real inputs
        min_cosine: 0.99  # every request's outputs, flattened: cosine similarity to the original's
        max_abs_error: 0.05
        min_top1: 0.99    # classifiers: share of requests whose arg-max agrees with the original's
        mask: attention_mask  # an input whose zeros mark output positions nothing reads (padding)

``capacity:`` is written by ``tritonkit tune`` (never by hand): the requests/s one replica
sustained within the budget, the concurrency that gave it, and where it was measured. The build
turns the two into Triton's queue policy (:func:`queue_policy`), and ``tritonkit plan`` into
replicas and an autoscaling target (:mod:`tritonkit.slo.plan`).

Example:
    >>> slo = Slo(p99_ms=10, max_queue_ms=4)
    >>> queue_policy(slo, Capacity(rps=2500, concurrency=24, p99_ms=9.1), max_batch_size=8)
    QueuePolicyPlan(timeout_us=4000, max_queue_size=0, note='')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_HEADROOM = 0.2
"""The spare capacity a plan keeps when an SLO states none (and when a model has no SLO)."""


class AccuracyBudget(BaseModel):
    """How far a variant of a model (int8, fp16, an optimized graph) may drift from the original,
    measured on real inputs (:class:`Accuracy`). Every key optional; an empty budget admits only
    variants that keep the original's numerics.

    ``mask`` names an input whose zero entries mark positions nothing downstream reads — a
    transformer's ``attention_mask``, as its exporters name it, over padding tokens. An output
    whose leading dimensions (per request) are the mask's is compared only where the mask is
    non-zero; other outputs count whole. Without it every output value counts: a padded
    position's output is computed too, and int8 moves it further than the real tokens' (MiniLM,
    int8 per-channel, 26 padded sentences: worst-request cosine 0.904 over every position,
    0.986 over the real tokens). Off by default: which positions a consumer reads is the user's
    to say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_cosine: float | None = Field(default=None, ge=-1, le=1)
    max_abs_error: float | None = Field(default=None, ge=0)
    min_top1: float | None = Field(default=None, ge=0, le=1)
    mask: str | None = Field(default=None, min_length=1)

    def misses(self, measured: Accuracy) -> str:
        """Why ``measured`` is outside this budget ("" when it holds)."""
        reasons = []
        if self.min_cosine is not None and measured.cosine < self.min_cosine:
            reasons.append(f"cosine {measured.cosine:.4f} < {self.min_cosine:g}")
        if self.max_abs_error is not None and measured.max_abs_error > self.max_abs_error:
            reasons.append(f"max abs error {measured.max_abs_error:.3g} > {self.max_abs_error:g}")
        if self.min_top1 is not None:
            if measured.top1 is None:
                reasons.append("top-1 agreement asked for, but no output has classes (a last dimension > 1)")
            elif measured.top1 < self.min_top1:
                reasons.append(f"top-1 agreement {measured.top1:.4f} < {self.min_top1:g}")
        if not self.model_dump(exclude_none=True, exclude={"mask"}) and not measured.exact:
            reasons.append("the budget is empty, so only the original's exact outputs are admitted")
        return "; ".join(reasons)


class Accuracy(BaseModel):
    """A variant's outputs against the original's on ``samples`` real requests: the lowest
    per-request cosine similarity (all float outputs flattened), the largest absolute difference,
    and the share of requests whose arg-max over the last dimension agrees (None when no output
    has one longer than 1); ``mask``: the input whose zero positions were left out (see
    :class:`AccuracyBudget`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(ge=1)
    cosine: float
    max_abs_error: float = Field(ge=0)
    top1: float | None = Field(default=None, ge=0, le=1)
    mask: str | None = None

    @property
    def exact(self) -> bool:
        return self.max_abs_error == 0

    def describe(self) -> str:
        top1 = "" if self.top1 is None else f", top-1 {self.top1:.4f}"
        where = f" where {self.mask} is non-zero" if self.mask else ""
        figures = f"cosine {self.cosine:.4f}, max abs error {self.max_abs_error:.3g}{top1}"
        return f"{figures} on {self.samples} requests{where}"


class Slo(BaseModel):
    """A model's service-level objective (every key optional; see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p99_ms: float | None = Field(default=None, gt=0)
    peak_rps: float | None = Field(default=None, gt=0)
    # an llm model's peak in tokens/s (prompt + generated): its requests differ too much in size
    # for requests/s to say how much work they are
    peak_tokens_per_s: float | None = Field(default=None, gt=0)
    max_queue_ms: float | None = Field(default=None, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    ttft_p99_ms: float | None = Field(default=None, gt=0)
    tpot_p99_ms: float | None = Field(default=None, gt=0)
    headroom: float | None = Field(default=None, ge=0, le=10)
    accuracy: AccuracyBudget | None = None

    def over(self, default: Slo | None) -> Slo:
        """This SLO with the keys it leaves unset taken from ``default`` (the repository's). A key
        this SLO sets to null stays null: how a model opts out of a repository-wide
        ``max_queue_ms`` (admission) or ``accuracy``."""
        if default is None:
            return self
        mine = self.model_dump(exclude_unset=True)
        return Slo(**{**default.model_dump(exclude_none=True), **mine})

    @property
    def spare(self) -> float:
        """The headroom fraction the plan keeps (:data:`DEFAULT_HEADROOM` when unset)."""
        return DEFAULT_HEADROOM if self.headroom is None else self.headroom


class Capacity(BaseModel):
    """What ``tritonkit tune`` measured one replica to sustain within the SLO (evidence for review).

    ``p99_ms`` is the request latency at that load; an ``llm`` model's capacity has the TTFT and
    TPOT p99 instead, and the request it was measured with (``prompt_chars`` of prompt, exactly
    ``output_tokens`` generated): requests/s of an LLM mean nothing without the request's size.
    ``tokens_per_s`` is what an LLM's requests are planned in: the prompt and generated tokens the
    engine processed per second at that load (its own counters).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rps: float = Field(gt=0)
    concurrency: int = Field(ge=1)
    p99_ms: float | None = Field(default=None, gt=0)
    ttft_p99_ms: float | None = Field(default=None, gt=0)
    tpot_p99_ms: float | None = Field(default=None, gt=0)
    prompt_chars: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=1)
    tokens_per_s: float | None = Field(default=None, gt=0)
    measured_on: dict[str, str] = {}


@dataclass(frozen=True)
class MeasuredOn:
    """Where and with what a capacity was measured: the one record ``tune`` (every kind) writes
    into ``capacity.measured_on``, the build copies into the lock and ``plan`` checks.

    Attributes:
        host: the server's host: this machine's name when the server listens on it (loopback or
            its own name), else the host part of the address measured.
        cores: the server's CPU count when it runs on this machine, else ``unknown`` (Triton does
            not report it).
        gpu: ``none`` when the measured model ran on CPU instances, ``gpu`` (with the devices the
            config names, ``gpu 0,1``) when on GPU instances: read from the config the server
            served, not from the client's ``CUDA_VISIBLE_DEVICES``.
        tritonkit, triton: the versions (Triton's as the server reports it).
        date: the day (UTC).
        meter: what measured it (``perf_analyzer``, ``llm_client``).
        settings: :meth:`~tritonkit.spec.schema.ModelBase.settings_digest` of the model's spec as
            tune left it; ``plan`` flags a capacity whose model has changed since (empty in
            capacities recorded before tritonkit kept it: those are not checked).
    """

    host: str = ""
    cores: str = ""
    gpu: str = ""
    tritonkit: str = ""
    triton: str = ""
    date: str = ""
    meter: str = ""
    settings: str = ""

    def as_dict(self) -> dict[str, str]:
        """The spec's ``measured_on:`` mapping (empty fields left out)."""
        return {name: value for name, value in asdict(self).items() if value}

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> MeasuredOn:
        """Read a ``measured_on:`` mapping; keys it does not know are ignored (older records)."""
        return cls(**{name: str(data[name]) for name in cls.__dataclass_fields__ if name in data})


@dataclass(frozen=True)
class QueuePolicyPlan:
    """Triton queue settings derived from an SLO (microseconds; a queue size of 0 = unbounded).

    ``note`` says why the SLO cannot be held as stated (empty when it can).
    """

    timeout_us: int
    max_queue_size: int
    note: str = ""


def queue_policy(
    slo: Slo | None, capacity: Capacity | None, *, max_batch_size: int = 1, instances: int = 1
) -> QueuePolicyPlan | None:
    """The admission policy that keeps accepted requests within the SLO under any load.

    The policy is a timeout on Triton's queue (REJECT: "Request timeout expired", UNAVAILABLE)
    and no bound on its size. Why, from ``benchmarks/slo_admission.py`` and Triton's source
    (core ``dynamic_batch_scheduler.cc``, 2.51 and later):

    - With any queue policy Triton stops prefetching batches: the batcher forms the next batch
      only when an instance waits for one, so a request's queue time is everything it waits,
      and an accepted request takes at most ``timeout + T`` (``T``, one round of batches, is
      ``max_batch_size × instances / capacity``). The timeout is therefore ``max_queue_ms``,
      but no more than ``p99_ms − T``; under overload the oldest requests still within the
      timeout are served in full batches, and the rest are refused when they reach it.
    - A request that arrives while a batch runs waits up to ``T`` for it, so a timeout below
      ``T`` refuses requests at any load (20 ms at T = 27 ms refused 23% at half the capacity);
      it is raised to ``T`` and ``note`` says so.
    - A bounded queue stalls Triton under overload: the batcher misses the wake-up at the end
      of a batch (it looks before the instance waits again) and is woken by the next request
      it *accepts* or a 500 ms timer. A full queue accepts none, so the instance idles up to
      500 ms per batch (max_queue_size 8 at twice the capacity: 20 batches in 6 s instead of
      ~220). With the timeout alone the queue never exceeds what arrives within
      ``timeout + T``, so ``max_queue_size`` stays 0 (unbounded).
    - The same missed wake-up costs at every load, which is why the policy is opt-in: after each
      batch the queued requests wait for the next arrival. A timeout no request reached raised
      the p99 at half the capacity from 69 to 102 ms (1.6 s at 0.9×), and the 40 ms timeout
      refused that wait: 7% of the requests at half the capacity (docs: "Known limits").
      :func:`tritonkit.slo.plan.plan_model` doubts a capacity tune measured without the policy.

    Without a measured capacity only ``max_queue_ms`` applies. ``None`` when the SLO sets no
    ``max_queue_ms``.
    """
    if slo is None or slo.max_queue_ms is None:
        return None
    if capacity is None:
        return QueuePolicyPlan(timeout_us=int(slo.max_queue_ms * 1000), max_queue_size=0)
    round_ms = 1000 * max(1, max_batch_size) * max(1, instances) / capacity.rps
    budget_ms = slo.max_queue_ms if slo.p99_ms is None else min(slo.max_queue_ms, slo.p99_ms - round_ms)
    note = ""
    if budget_ms < round_ms:
        note = (
            f"a batch takes {round_ms:.1f} ms at the measured capacity: a queue budget of {budget_ms:.1f} ms "
            f"would refuse requests that only wait for the batch running, so the timeout is {round_ms:.1f} ms"
        )
        if slo.p99_ms is not None and slo.p99_ms < 2 * round_ms:
            note += f" and accepted requests may take {2 * round_ms:.1f} ms, more than p99_ms {slo.p99_ms:g}"
        budget_ms = round_ms
    return QueuePolicyPlan(timeout_us=math.ceil(budget_ms * 1000), max_queue_size=0, note=note)
