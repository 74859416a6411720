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
    QueuePolicyPlan(timeout_us=4000, max_queue_size=10)
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
    """What ``tritonkit tune`` measured one replica to sustain within the SLO (evidence for review)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rps: float = Field(gt=0)
    concurrency: int = Field(ge=1)
    p99_ms: float = Field(gt=0)
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

    A request may wait at most ``max_queue_ms`` in Triton's queue (then it is rejected), and the
    queue holds at most what one replica drains in that time (``capacity.rps × wait``; Triton
    refuses requests beyond that at once, UNAVAILABLE). Two floors keep the policy from refusing
    requests a replica would serve in time: the wait is never shorter than one full batch takes
    at the measured capacity (``max_batch_size × instances / rps``: a request that arrives while
    every instance runs a batch must be allowed to wait for one), and the queue always holds one
    full batch per instance. Without a measured capacity only the timeout applies. ``None`` when
    the SLO sets no ``max_queue_ms``.
    """
    if slo is None or slo.max_queue_ms is None:
        return None
    if capacity is None:
        return QueuePolicyPlan(timeout_us=int(slo.max_queue_ms * 1000), max_queue_size=0)
    batch_ms = 1000 * max(1, max_batch_size) * max(1, instances) / capacity.rps
    wait_ms = max(slo.max_queue_ms, batch_ms)
    size = max(math.ceil(capacity.rps * wait_ms / 1000), max(1, max_batch_size) * max(1, instances))
    return QueuePolicyPlan(timeout_us=math.ceil(wait_ms * 1000), max_queue_size=size)
