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

``capacity:`` is written by ``tritonkit tune`` (never by hand): the requests/s one replica
sustained within the budget, the concurrency that gave it, and where it was measured. The build
turns the two into Triton's queue policy (:func:`queue_policy`), and ``tritonkit plan`` into
replicas and an autoscaling target (:mod:`tritonkit.deploy.plan`).

Example:
    >>> slo = Slo(p99_ms=10, max_queue_ms=4)
    >>> queue_policy(slo, Capacity(rps=2500, concurrency=24, p99_ms=9.1), max_batch_size=8)
    QueuePolicyPlan(timeout_us=12800, max_queue_size=16)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class Slo(BaseModel):
    """A model's service-level objective (every key optional; see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p99_ms: float | None = Field(default=None, gt=0)
    peak_rps: float | None = Field(default=None, gt=0)
    max_queue_ms: float | None = Field(default=None, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    ttft_p99_ms: float | None = Field(default=None, gt=0)
    tpot_p99_ms: float | None = Field(default=None, gt=0)
    headroom: float | None = Field(default=None, ge=0, le=10)

    def over(self, default: Slo | None) -> Slo:
        """This SLO with the keys it leaves unset taken from ``default`` (the repository's)."""
        if default is None:
            return self
        mine = self.model_dump(exclude_none=True)
        return Slo(**{**default.model_dump(exclude_none=True), **mine})

    @property
    def spare(self) -> float:
        """The headroom fraction the plan keeps (0.2 when unset)."""
        return 0.2 if self.headroom is None else self.headroom


class Capacity(BaseModel):
    """What ``tritonkit tune`` measured one replica to sustain within the SLO (evidence for review).

    ``p99_ms`` is the request latency at that load; an ``llm`` model's capacity has the TTFT and
    TPOT p99 instead, and the request it was measured with (``prompt_chars`` of prompt, exactly
    ``output_tokens`` generated): requests/s of an LLM mean nothing without the request's size.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rps: float = Field(gt=0)
    concurrency: int = Field(ge=1)
    p99_ms: float | None = Field(default=None, gt=0)
    ttft_p99_ms: float | None = Field(default=None, gt=0)
    tpot_p99_ms: float | None = Field(default=None, gt=0)
    prompt_chars: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=1)
    measured_on: dict[str, str] = {}


@dataclass(frozen=True)
class QueuePolicyPlan:
    """Triton queue settings derived from an SLO (microseconds; a queue size of 0 = unbounded)."""

    timeout_us: int
    max_queue_size: int


def queue_policy(
    slo: Slo | None, capacity: Capacity | None, *, max_batch_size: int = 1, instances: int = 1
) -> QueuePolicyPlan | None:
    """The admission policy that keeps accepted requests within ``slo.max_queue_ms``.

    At the measured capacity ``C`` a replica runs one round of batches (``max_batch_size`` on each
    of ``instances``) every ``T = max_batch_size × instances / C``. Triton's dynamic batcher forms
    the next batch while one runs (with a short queue delay that batch is often small), so a
    request admitted at the tail of a queue of ``Q`` waits for the round running, the round formed
    and the ``Q`` ahead of it: ``2 T + Q / C``. The queue holds what drains within
    ``max_queue_ms`` after those two rounds (``Q = C × (max_queue_ms − 2 T)``; Triton refuses
    requests beyond that at once, UNAVAILABLE), but never less than two rounds (with one, Triton
    refused half the requests at half the capacity in ``benchmarks/slo_admission.py``: the
    small batches it forms eagerly leave the queue full); the timeout is that tail wait, so an
    admitted request is not timed out while the replica works through what is in front of it.
    Without a measured capacity only the timeout applies. ``None`` when the SLO sets no
    ``max_queue_ms``.
    """
    if slo is None or slo.max_queue_ms is None:
        return None
    if capacity is None:
        return QueuePolicyPlan(timeout_us=int(slo.max_queue_ms * 1000), max_queue_size=0)
    round_size = max(1, max_batch_size) * max(1, instances)
    round_ms = 1000 * round_size / capacity.rps
    size = max(2 * round_size, math.floor(capacity.rps * (slo.max_queue_ms - 2 * round_ms) / 1000))
    wait_ms = 2 * round_ms + 1000 * size / capacity.rps
    return QueuePolicyPlan(timeout_us=math.ceil(wait_ms * 1000), max_queue_size=size)
