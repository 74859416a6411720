"""The LLM engine's scheduler: which sequences a step prefills, preempts and decodes, as a plan.

Pure Python: it reads sequences' token counts and their sinks' cancellation, and nothing of the
model, so it is tested without one (``tests/unit/test_llm_scheduler.py``). The engine applies
the plan through the runner (the model passes) and the output processor (tokens to text), and
reports back what happened through :meth:`Scheduler.admit`, :meth:`Scheduler.drop`,
:meth:`Scheduler.preempt` and :meth:`Scheduler.reorder` — the split of vLLM v1's engine core.

Each step (:meth:`Scheduler.schedule`):

1. waiting and running sequences whose client cancelled are dropped (their sinks are asked
   once per step);
2. waiting sequences are admitted first come, first served while the running-sequence and
   per-step token budgets allow and the next decode fits the KV budget (:class:`KvBudget`);
   ``preemption="no_evict"`` admits only when every running sequence reaching its
   ``max_tokens`` still fits;
3. while the next decode does not fit, the newest running sequence is preempted (recompute: it
   waits at the head of the queue and is prefilled again when readmitted).

A sequence that finishes in its own prefill (its first token is EOS, or ``max_tokens`` is 1)
still counted against the step it was admitted in: the plan is made before any pass runs.

Example:
    >>> scheduler = Scheduler(Budgets(max_running=8))
    >>> scheduler.waiting.append(sequence)
    >>> plan = scheduler.schedule()
    >>> plan.prefill == [sequence]
    True
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Budgets:
    """Scheduler limits.

    Attributes:
        max_running: sequences decoded together per step.
        max_batched_tokens: tokens one step may process (prefill prompt tokens + one per
            running sequence); a prompt longer than this still runs, alone in its step.
        kv_cache_tokens: cache capacity, counted as rows × columns of the padded cache.
        max_queue: waiting sequences beyond which ``submit`` refuses (``QueueFull``).
        preemption: ``"recompute"`` (preempt the newest) or ``"no_evict"``.
    """

    max_running: int = 8
    max_batched_tokens: int = 2048
    kv_cache_tokens: int = 65536
    max_queue: int = 64
    preemption: str = "recompute"


@dataclass(frozen=True)
class KvBudget:
    """The KV cache's accounting, written once.

    The shared cache holds one row per running sequence and as many columns as the longest row
    caches (shorter rows are left-padded), so it costs ``rows × columns`` whatever the rows' own
    lengths, and a decode step writes one column more: ``rows × (columns + 1)``.
    """

    capacity: int

    @staticmethod
    def columns(rows: Iterable[Any]) -> int:
        """The cache's columns for these running sequences (0 for none)."""
        return max((seq.cached for seq in rows), default=0)

    @staticmethod
    def used(rows: int, columns: int) -> int:
        """Slots the cache holds."""
        return rows * columns

    def step_fits(self, rows: int, columns: int) -> bool:
        """Whether the next decode (one column more) fits."""
        return self.used(rows, columns + 1) <= self.capacity

    def worst_fits(self, rows: int, columns: int, remaining: int) -> bool:
        """Whether the cache still fits after ``remaining`` more decodes of every row."""
        return self.used(rows, columns + remaining) <= self.capacity


@dataclass
class StepPlan:
    """What one step does, in order: drop ``cancelled`` (waiting) and the running rows at
    ``cancelled_rows``, prefill ``prefill`` (the head of the queue), preempt ``preempt``, then
    decode every running sequence (``decode``)."""

    cancelled: list[Any] = field(default_factory=list)
    cancelled_rows: list[int] = field(default_factory=list)
    prefill: list[Any] = field(default_factory=list)
    preempt: list[Any] = field(default_factory=list)
    decode: bool = False


class Scheduler:
    """The waiting queue and the running batch (in the shared cache's row order), and the plan
    for each step."""

    def __init__(self, budgets: Budgets):
        self.budgets = budgets
        self.kv = KvBudget(budgets.kv_cache_tokens)
        self.waiting: collections.deque[Any] = collections.deque()
        self.running: list[Any] = []
        self._admissions = 0

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def schedule(self) -> StepPlan:
        """The next step's plan (changes nothing; see the module docstring)."""
        plan = StepPlan()
        plan.cancelled = [seq for seq in self.waiting if seq.sink.cancelled()]
        plan.cancelled_rows = [i for i, seq in enumerate(self.running) if seq.sink.cancelled()]
        gone = set(plan.cancelled_rows)
        running = [seq for i, seq in enumerate(self.running) if i not in gone]
        columns = self.kv.columns(running)
        budget = self.budgets.max_batched_tokens - len(running)
        for seq in self.waiting:
            if seq in plan.cancelled:
                continue
            if len(running) >= self.budgets.max_running:
                break
            need = seq.prefill_tokens
            if running and need > budget:
                break  # a prompt longer than the step's budget runs alone
            if not self._fits(running, max(columns, need), seq):
                break
            plan.prefill.append(seq)
            running.append(seq)
            columns, budget = max(columns, need), budget - need
        newest = {id(seq): (1, n) for n, seq in enumerate(plan.prefill)}
        while len(running) > 1 and not self.kv.step_fits(len(running), columns):
            victim = max(running, key=lambda seq: newest.get(id(seq), (0, seq.admitted)))
            running.remove(victim)
            plan.preempt.append(victim)
            columns = self.kv.columns(running)
        plan.decode = bool(running)
        return plan

    def _fits(self, running: list[Any], columns: int, seq: Any) -> bool:
        """Whether ``seq`` may join ``running``, the cache then ``columns`` wide."""
        rows = len(running) + 1
        if self.budgets.preemption == "no_evict":
            remaining = max(s.params.max_tokens - len(s.generated) for s in [*running, seq])
            return self.kv.worst_fits(rows, columns, remaining)
        return self.kv.step_fits(rows, columns)

    # ------------------------------------------------------------ what the engine did

    def admit(self, seq: Any) -> None:
        """``seq`` was prefilled and joined the cache as its last row."""
        self.waiting.remove(seq)
        self._admissions += 1
        seq.admitted = self._admissions
        self.running.append(seq)

    def drop(self, seq: Any) -> None:
        """``seq`` left the queue without joining the batch (cancelled, or finished in its prefill)."""
        self.waiting.remove(seq)

    def preempt(self, seq: Any) -> None:
        """``seq``'s row was removed (:meth:`reorder`); it waits at the head of the queue."""
        seq.preemptions += 1
        self.waiting.appendleft(seq)

    def reorder(self, order: list[int]) -> None:
        """Rows left the cache: the running sequence at row ``order[i]`` is now at row ``i``."""
        self.running = [self.running[i] for i in order]
