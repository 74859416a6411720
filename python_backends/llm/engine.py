"""An in-flight (iteration-level) batching engine for Hugging Face causal language models.

Runs inside Triton's Python stub next to ``model.py``, and in plain Python for tests: it
imports only torch and transformers, never ``triton_python_backend_utils`` or ``tritonkit``.
Split like vLLM v1's engine core, one module per job, each loaded beside this file:

- ``scheduler.py`` (pure): the waiting queue and the running batch, and each step's plan —
  which sequences are dropped (cancelled), prefilled (first come, first served within the
  running, per-step token and KV budgets), preempted (the newest, by recompute, when the next
  decode would not fit) — with the KV accounting (``rows × (columns + 1)``) written once;
- ``runner.py``: the model passes over one shared KV cache (a prefill per admitted sequence,
  batch 1, exactly what ``generate()`` does for that prompt; then one batched decode pass
  over every running sequence) and sampling; ``kv_cache.py`` keeps the cache's rows in slots;
- ``output.py`` (pure): each sampled token to text, stop conditions and the sink's events;
- ``sequences.py`` (pure): sampling parameters, a sequence's state, events;
- ``static.py``: ``mode: static``, the benchmark baseline.

This module owns the thread: it takes submitted sequences, asks the scheduler for a plan each
step, has the runner execute it and the output processor emit what it produced, and reports back
to the scheduler. A preempted sequence waits at the head of the queue; when readmitted its
prompt plus the tokens it already produced are prefilled again and it continues where it
stopped (nothing is re-sent). ``preemption="no_evict"`` instead admits a sequence only when
the worst case of every running sequence reaching its ``max_tokens`` fits, and never preempts.

Events go to ``Sink.emit`` from the engine thread; the Triton glue queues them for a separate
sender thread so that sending never stalls a step.

Example:
    >>> engine = Engine(model, ByteTokenizer(), Budgets(max_running=8))
    >>> engine.start()
    >>> engine.submit(Sequence(id="r1", prompt="Hello", params=SamplingParams(max_tokens=8), sink=sink))
"""

from __future__ import annotations

import collections
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

import torch


def _sibling(name: str) -> Any:
    """Load ``<name>.py`` beside this file. engine.py is itself loaded by path (Triton's stub
    does not put the version directory on ``sys.path``), so its siblings are too, under names
    derived from this module's so that two copies never share one."""
    key = f"{__name__}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, os.path.join(os.path.dirname(__file__), f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[key]


_tokens = _sibling("tokens")
_kv = _sibling("kv_cache")
_sequences = _sibling("sequences")
_scheduler = _sibling("scheduler")
_output = _sibling("output")
_runner = _sibling("runner")
static = _sibling("static")
ByteTokenizer, HFTokenizer, load_tokenizer = _tokens.ByteTokenizer, _tokens.HFTokenizer, _tokens.load_tokenizer
ParameterError, SamplingParams, Sink = _sequences.ParameterError, _sequences.SamplingParams, _sequences.Sink
Event, Sequence = _sequences.Event, _sequences.Sequence
Budgets, KvBudget, Scheduler, StepPlan = (
    _scheduler.Budgets,
    _scheduler.KvBudget,
    _scheduler.Scheduler,
    _scheduler.StepPlan,
)


# --------------------------------------------------------------------------- engine


class QueueFull(RuntimeError):
    """The waiting queue is at ``max_queue``; the caller should retry later."""


class EngineFailed(RuntimeError):
    """The engine thread died (the model raised); every later request is refused with the cause."""


@dataclass
class Stats:
    """Counters and gauges the engine keeps (read by the metrics thread, off the hot path)."""

    running: int = 0
    waiting: int = 0
    kv_used: int = 0
    kv_capacity: int = 0
    preemptions: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    steps: int = 0
    max_batch: int = 0


class Engine:
    """Owns a causal LM and schedules sequences over it at the iteration level (one thread)."""

    def __init__(self, model: Any, tokenizer: Any, budgets: Budgets, *, device: str = "cpu", max_positions: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.budgets = budgets
        self.device = torch.device(device)
        self.max_positions = max_positions or int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.stats = Stats(kv_capacity=budgets.kv_cache_tokens)
        self.scheduler = Scheduler(budgets)
        self.runner = _runner.Runner(model, device=device, kv=_kv)
        self.output = _output.OutputProcessor(tokenizer, self.stats, Event)
        self._inbox: collections.deque[Sequence] = collections.deque()
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # ---------------------------------------------------------------- public

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop; every unfinished sequence gets a final ``cancelled`` event."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, sequence: Sequence) -> None:
        """Queue a sequence (tokenized here, on the caller's thread).

        Raises:
            QueueFull: ``max_queue`` sequences are already waiting.
            ParameterError: the prompt plus ``max_tokens`` exceeds the model's positions.
        """
        sequence.prompt_ids = self.tokenizer.encode(sequence.prompt)
        sequence.detok = self.tokenizer.detokenizer()
        if not sequence.prompt_ids:
            raise ParameterError("text_input is empty and the tokenizer adds no BOS token")
        total = len(sequence.prompt_ids) + sequence.params.max_tokens
        if total > self.max_positions:
            raise ParameterError(
                f"prompt ({len(sequence.prompt_ids)} tokens) + max_tokens ({sequence.params.max_tokens}) "
                f"exceeds the model's {self.max_positions} positions"
            )
        if total > self.budgets.kv_cache_tokens:
            raise ParameterError(
                f"prompt + max_tokens ({total}) exceeds the KV cache budget ({self.budgets.kv_cache_tokens} tokens)"
            )
        if sequence.params.seed is not None:
            sequence.generator = torch.Generator(device=self.device).manual_seed(sequence.params.seed)
        elif not sequence.params.greedy:
            sequence.generator = torch.Generator(device=self.device)
            sequence.generator.seed()
        with self._wake:
            if self.error is not None:
                raise EngineFailed(f"the engine stopped after {type(self.error).__name__}: {self.error}")
            if self._stop:
                raise QueueFull("the engine is shutting down")
            if len(self._inbox) + len(self.scheduler.waiting) >= self.budgets.max_queue:
                raise QueueFull(f"{self.budgets.max_queue} requests are already waiting (max_queue)")
            self._inbox.append(sequence)
            self.stats.waiting = len(self._inbox) + len(self.scheduler.waiting)
            self._wake.notify()

    def collect(self) -> bool:
        """Hand the submitted sequences to the scheduler; whether there is work for a step
        (tests drive the engine with ``collect`` and :meth:`step`, without its thread)."""
        with self._wake:
            self.scheduler.waiting.extend(self._inbox)
            self._inbox.clear()
        return not self.scheduler.idle

    # ---------------------------------------------------------------- loop

    def _loop(self) -> None:
        scheduler = self.scheduler
        try:
            while True:
                with self._wake:
                    while not self._stop and not self._inbox and scheduler.idle:
                        self._wake.wait()
                    if self._stop:
                        break
                self.collect()
                self.step()
        except BaseException as exc:  # the model failed: fail every sequence, loudly
            with self._wake:  # from here on submit() refuses, so nothing can slip in unanswered
                self.error = exc
                pending = [*scheduler.running, *scheduler.waiting, *self._inbox]
                self._inbox.clear()
            for seq in pending:
                self.output.finish(seq, "error", error=f"engine failed: {type(exc).__name__}: {exc}")
            scheduler.running.clear()
            scheduler.waiting.clear()
            self.runner.reset()
            return  # self.error says why; the Triton glue logs it
        for seq in [*scheduler.running, *scheduler.waiting, *self._inbox]:
            self.output.finish(seq, "cancelled", error="the model is being unloaded")
        scheduler.running.clear()
        scheduler.waiting.clear()
        self._inbox.clear()
        self.runner.reset()

    @torch.inference_mode()
    def step(self) -> None:
        """One iteration: the scheduler's plan, executed (public so tests can drive the engine)."""
        scheduler, output = self.scheduler, self.output
        plan = scheduler.schedule()
        for seq in plan.cancelled:
            scheduler.drop(seq)
            output.finish(seq, "cancelled")
        for index in plan.cancelled_rows:
            output.finish(scheduler.running[index], "cancelled")
        self._remove_rows(plan.cancelled_rows)
        for seq in plan.prefill:  # still queued while it runs: a model error then fails it too
            fresh = not seq.generated
            token, cache = self.runner.prefill(seq)
            if fresh:
                self.stats.prompt_tokens += len(seq.prompt_ids)
            if token is not None:
                output.accept(seq, token)
            if seq.finished:
                scheduler.drop(seq)
                continue
            self.runner.merge(cache)
            scheduler.admit(seq)
        for seq in plan.preempt:
            if seq not in scheduler.running:
                continue  # it finished in its prefill
            self._remove_rows([scheduler.running.index(seq)])
            scheduler.preempt(seq)
            self.stats.preemptions += 1
        if scheduler.running:
            rows = list(scheduler.running)
            self.stats.max_batch = max(self.stats.max_batch, len(rows))
            for seq, token in zip(rows, self.runner.decode(rows)):
                output.accept(seq, token)
            self._remove_rows([i for i, seq in enumerate(rows) if seq.finished])
        self.stats.steps += 1
        self._update_gauges()

    def _remove_rows(self, indices: list[int]) -> None:
        if indices:
            self.scheduler.reorder(self.runner.remove_rows(self.scheduler.running, indices))

    def _update_gauges(self) -> None:
        s, scheduler = self.stats, self.scheduler
        s.running = len(scheduler.running)
        s.waiting = len(scheduler.waiting) + len(self._inbox)
        s.kv_used = scheduler.kv.used(len(scheduler.running), self.runner.columns)


__all__ = [
    "Budgets",
    "KvBudget",
    "ByteTokenizer",
    "Engine",
    "EngineFailed",
    "Event",
    "HFTokenizer",
    "ParameterError",
    "QueueFull",
    "SamplingParams",
    "Sequence",
    "Sink",
    "Stats",
    "StepPlan",
    "Scheduler",
    "load_tokenizer",
]
