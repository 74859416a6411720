"""An in-flight (iteration-level) batching engine for Hugging Face causal language models.

Runs inside Triton's Python stub next to ``model.py``, and in plain Python for tests: it
imports only torch and transformers, never ``triton_python_backend_utils`` or ``tritonkit``.

One engine thread owns the model. Every step it

1. drops cancelled sequences (``Sink.cancelled()`` is asked once per sequence per step);
2. admits waiting sequences first come, first served while the running-sequence, per-step
   token and KV-cache budgets allow, and runs each one's prefill (batch 1, exactly what
   ``generate()`` does for that prompt), so its first token goes out right away;
3. advances every running sequence by one token in **one batched forward pass** over a
   shared KV cache: per layer one ``[batch, heads, columns, head_dim]`` tensor in which every
   row is right-aligned at the last column and left-padded, with an attention mask that hides
   the padding and per-row position ids;
4. retires finished sequences at once and trims padding columns no row needs any more
   (rows live in slots of per-layer buffers with spare room: ``kv_cache.py``).

When the next step would not fit the KV budget (``rows × columns`` of the padded cache, the
memory it really takes), the newest sequence is preempted by recompute: its cache rows are
dropped and it waits at the head of the queue; when readmitted its prompt plus the tokens it
already produced are prefilled again and it continues where it stopped (nothing is re-sent).
``preemption="no_evict"`` instead admits a sequence only when the worst case of every running
sequence reaching its ``max_tokens`` fits, and never preempts.

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
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

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
ByteTokenizer, HFTokenizer, load_tokenizer = _tokens.ByteTokenizer, _tokens.HFTokenizer, _tokens.load_tokenizer


# --------------------------------------------------------------------------- requests


class ParameterError(ValueError):
    """A request's sampling parameters are invalid; only that request fails."""


_PARAMS = {
    "max_tokens": int,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "seed": int,
    "stop": list,
    "ignore_eos": bool,
}


@dataclass(frozen=True)
class SamplingParams:
    """The subset of vLLM's ``SamplingParams`` this engine honours (vLLM's defaults).

    ``temperature == 0`` is greedy. ``top_k`` ≤ 0 and ``top_p == 1`` switch those filters
    off. ``stop`` strings end the sequence and are not included in the output.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    @classmethod
    def from_json(cls, text: str, default_max_tokens: int = 16) -> SamplingParams:
        """Parse the ``sampling_parameters`` JSON string (values may be strings, as with vLLM)."""
        try:
            raw = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise ParameterError(f"sampling_parameters is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ParameterError("sampling_parameters must be a JSON object")
        unknown = sorted(set(raw) - set(_PARAMS))
        if unknown:
            raise ParameterError(f"unknown sampling parameter(s) {unknown}; supported: {sorted(_PARAMS)}")
        values: dict[str, Any] = {"max_tokens": default_max_tokens}
        for key, value in raw.items():
            values[key] = _coerce(key, value)
        params = cls(**values)
        params.check()
        return params

    def check(self) -> None:
        if self.max_tokens < 1:
            raise ParameterError(f"max_tokens must be >= 1 (got {self.max_tokens})")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ParameterError(f"temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ParameterError(f"top_p must be in (0, 1] (got {self.top_p})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _coerce(key: str, value: Any) -> Any:
    kind = _PARAMS[key]
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if kind is list:
            stops = [value] if isinstance(value, str) else list(value)
            if not all(isinstance(s, str) and s for s in stops):
                raise ValueError(value)
            return tuple(stops)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        return float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"sampling parameter '{key}' must be {kind.__name__} (got {value!r})") from None


class Sink(Protocol):
    """Where a sequence's events go (the Triton glue, or a test)."""

    def emit(self, event: Event) -> None: ...

    def cancelled(self) -> bool: ...


@dataclass(frozen=True)
class Event:
    """One thing that happened to a sequence.

    ``kind`` is ``"token"`` (``text`` is the new text, possibly empty, ``tokens`` the new ids)
    or ``"final"`` (``finish_reason`` is ``"stop"``, ``"length"``, ``"cancelled"`` or
    ``"error"``; ``text`` is whatever text was held back, e.g. while it might start a stop
    string). Exactly one final event is emitted per sequence, and nothing after it.
    """

    sequence: Sequence
    kind: str
    text: str = ""
    tokens: tuple[int, ...] = ()
    finish_reason: str | None = None
    error: str | None = None
    time: float = 0.0


@dataclass(eq=False)
class Sequence:
    """One request's generation state."""

    id: str
    prompt: str
    params: SamplingParams
    sink: Sink
    arrival: float = field(default_factory=time.perf_counter)
    prompt_ids: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    first_token_at: float | None = None
    preemptions: int = 0
    finished: bool = False
    _sent_chars: int = 0
    _admitted: int = 0  # admission number (preemption takes the newest)
    _detok: Any = None  # the tokenizer's detokenizer for this sequence, set by Engine.submit
    _generator: torch.Generator | None = None

    @property
    def tokens(self) -> list[int]:
        return self.prompt_ids + self.generated

    @property
    def cached(self) -> int:
        """KV columns this sequence needs: every token but the newest, not yet fed."""
        return len(self.prompt_ids) + len(self.generated) - 1


# --------------------------------------------------------------------------- engine


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
    """Owns a causal LM and schedules sequences over it at the iteration level."""

    def __init__(self, model: Any, tokenizer: Any, budgets: Budgets, *, device: str = "cpu", max_positions: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.budgets = budgets
        self.device = torch.device(device)
        self.max_positions = max_positions or int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.stats = Stats(kv_capacity=budgets.kv_cache_tokens)
        self._inbox: collections.deque[Sequence] = collections.deque()
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []
        self._cache: Any = None  # DynamicCache shared by the running rows, or None
        self._columns = 0
        self._admitted = 0
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
        sequence._detok = self.tokenizer.detokenizer()
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
            sequence._generator = torch.Generator(device=self.device).manual_seed(sequence.params.seed)
        elif not sequence.params.greedy:
            sequence._generator = torch.Generator(device=self.device)
            sequence._generator.seed()
        with self._wake:
            if self.error is not None:
                raise EngineFailed(f"the engine stopped after {type(self.error).__name__}: {self.error}")
            if self._stop:
                raise QueueFull("the engine is shutting down")
            if len(self._inbox) + len(self._waiting) >= self.budgets.max_queue:
                raise QueueFull(f"{self.budgets.max_queue} requests are already waiting (max_queue)")
            self._inbox.append(sequence)
            self.stats.waiting = len(self._inbox) + len(self._waiting)
            self._wake.notify()

    # ---------------------------------------------------------------- loop

    def _loop(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._stop and not self._inbox and not self._waiting and not self._running:
                        self._wake.wait()
                    if self._stop:
                        break
                    self._waiting.extend(self._inbox)
                    self._inbox.clear()
                self.step()
        except BaseException as exc:  # the model failed: fail every sequence, loudly
            with self._wake:  # from here on submit() refuses, so nothing can slip in unanswered
                self.error = exc
                pending = [*self._running, *self._waiting, *self._inbox]
                self._inbox.clear()
            for seq in pending:
                self._finish(seq, "error", error=f"engine failed: {type(exc).__name__}: {exc}")
            self._running.clear()
            self._waiting.clear()
            self._cache = None
            return  # self.error says why; the Triton glue logs it
        for seq in [*self._running, *self._waiting, *self._inbox]:
            self._finish(seq, "cancelled", error="the model is being unloaded")
        self._running, self._cache, self._columns = [], None, 0
        self._waiting.clear()
        self._inbox.clear()

    @torch.inference_mode()
    def step(self) -> None:
        """One scheduler iteration (public so tests can drive the engine without its thread)."""
        self._drop_cancelled()
        budget = self.budgets.max_batched_tokens - len(self._running)
        admitted = 0
        while self._waiting and len(self._running) < self.budgets.max_running:
            seq = self._waiting[0]
            need = len(seq.tokens) - (1 if seq.generated else 0)
            if (admitted or self._running) and need > budget:
                break
            if not self._fits(seq):
                break
            self._prefill(seq)  # still queued while it runs: a model error then fails it too
            self._waiting.popleft()
            budget -= need
            admitted += 1
        if self._running:
            while len(self._running) * (self._columns + 1) > self.budgets.kv_cache_tokens and len(self._running) > 1:
                self._preempt(max(self._running, key=lambda r: r._admitted))  # the newest
            self._decode()
        self.stats.steps += 1
        self._update_gauges()

    # ---------------------------------------------------------------- scheduling

    def _fits(self, seq: Sequence) -> bool:
        rows = len(self._running) + 1
        columns = max(self._columns, len(seq.tokens) - 1) + 1
        if self.budgets.preemption == "no_evict":
            remaining = [s.params.max_tokens - len(s.generated) for s in [*self._running, seq]]
            return rows * (columns + max(remaining)) <= self.budgets.kv_cache_tokens
        return rows * (columns + 1) <= self.budgets.kv_cache_tokens

    def _drop_cancelled(self) -> None:
        for seq in list(self._waiting):
            if seq.sink.cancelled():
                self._waiting.remove(seq)
                self._finish(seq, "cancelled")
        gone = [i for i, seq in enumerate(self._running) if seq.sink.cancelled()]
        if gone:
            for i in gone:
                self._finish(self._running[i], "cancelled")
            self._remove_rows(gone)

    def _preempt(self, seq: Sequence) -> None:
        index = self._running.index(seq)
        self._remove_rows([index])
        seq.preemptions += 1
        self.stats.preemptions += 1
        self._waiting.appendleft(seq)

    # ---------------------------------------------------------------- model passes

    def _prefill(self, seq: Sequence) -> None:
        """Run the sequence's prompt (plus tokens from before a preemption) alone."""
        from transformers import DynamicCache

        fed = seq.tokens if not seq.generated else seq.tokens[:-1]
        ids = torch.tensor([fed], device=self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        if not seq.generated:
            self.stats.prompt_tokens += len(fed)
            self._accept(seq, out.logits[:, -1, :])
            if seq.finished:
                return
        self._merge(seq, out.past_key_values)

    def _decode(self) -> None:
        """Advance every running sequence by one token in one batched forward pass."""
        rows = len(self._running)
        columns = self._columns
        lengths = torch.tensor([s.cached for s in self._running], device=self.device)
        ids = torch.tensor(
            [[s.generated[-1] if s.generated else s.prompt_ids[-1]] for s in self._running], device=self.device
        )
        positions = lengths.unsqueeze(1)
        col = torch.arange(columns + 1, device=self.device).unsqueeze(0)
        mask = (col >= (columns - lengths).unsqueeze(1)).long()
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=self._cache, use_cache=True
        )
        self._cache = out.past_key_values
        self._columns = columns + 1
        self.stats.max_batch = max(self.stats.max_batch, rows)
        logits = out.logits[:, -1, :]
        # One device->host transfer for every greedy row (a per-row .item() is a GPU sync each).
        greedy = logits.argmax(dim=-1).tolist()
        done = []
        for i, seq in enumerate(list(self._running)):
            token = greedy[i] if seq.params.greedy else _sample(logits[i].float(), seq.params, seq._generator)
            self._accept_token(seq, token)
            if seq.finished:
                done.append(i)
        if done:
            self._remove_rows(done)

    def _merge(self, seq: Sequence, cache: Any) -> None:
        """Append a prefilled sequence as a new row, left-padding whichever side is shorter."""
        length = cache.get_seq_length()
        slot = _kv.slot_layer()
        if self._cache is None:
            for layer in cache.layers:
                if type(layer) is slot.__mro__[1]:  # a plain DynamicLayer: same state, slot buffers
                    layer.__class__ = slot
                    layer.adopt()
            self._cache, self._columns = cache, length
        else:
            columns = max(self._columns, length)
            for mine, theirs in zip(self._cache.layers, cache.layers):
                if isinstance(mine, slot):
                    mine.add_row(theirs.keys, theirs.values)
                else:  # e.g. a sliding-window layer: rebuild by concatenation
                    mine.keys = torch.cat([_kv.left_pad(mine.keys, columns), _kv.left_pad(theirs.keys, columns)], dim=0)
                    mine.values = torch.cat(
                        [_kv.left_pad(mine.values, columns), _kv.left_pad(theirs.values, columns)], dim=0
                    )
            self._columns = columns
        self._admitted += 1
        seq._admitted = self._admitted
        self._running.append(seq)

    def _remove_rows(self, indices: list[int]) -> None:
        """Drop rows; the last rows move into the holes (``_running`` is reordered to match)."""
        order = _kv.swap_remove_order(len(self._running), indices)
        self._running = [self._running[i] for i in order]
        if not order:
            self._cache, self._columns = None, 0
            return
        columns = max(s.cached for s in self._running)
        trim = self._columns - columns
        moves = [(slot, old) for slot, old in enumerate(order) if slot != old]
        slot_layer, index = _kv.slot_layer(), None
        for layer in self._cache.layers:
            if isinstance(layer, slot_layer):
                layer.remove_rows(moves, len(order), trim)
            else:
                index = torch.tensor(order, device=self.device) if index is None else index
                layer.keys = layer.keys.index_select(0, index)[:, :, trim:, :]
                layer.values = layer.values.index_select(0, index)[:, :, trim:, :]
        self._columns = columns

    # ---------------------------------------------------------------- tokens

    def _accept(self, seq: Sequence, logits: torch.Tensor) -> None:
        self._accept_token(seq, _sample(logits[0].float(), seq.params, seq._generator))

    def _accept_token(self, seq: Sequence, token: int) -> None:
        now = time.perf_counter()
        if seq.first_token_at is None:
            seq.first_token_at = now
        seq.generated.append(token)
        self.stats.generation_tokens += 1
        params = seq.params
        reason = None
        if token == self.tokenizer.eos_token_id and not params.ignore_eos:
            reason = "stop"
        elif len(seq.generated) >= params.max_tokens:
            reason = "length"
        seq._detok.push(token)
        text = seq._detok.finish() if reason is not None else seq._detok.text
        if params.stop:
            hit = min(
                (i for i in (text.find(s, max(0, seq._sent_chars - len(s))) for s in params.stop) if i >= 0), default=-1
            )
            if hit >= 0:
                text, reason = text[:hit], "stop"
        if reason is not None:
            delta = text[seq._sent_chars :]
            seq._sent_chars = len(text)
            self._finish(seq, reason, text=delta, tokens=(token,))
            return
        # Hold back text that may still become a stop string (the detokenizer holds back
        # characters that are not complete yet).
        hold = max((len(s) - 1 for s in params.stop), default=0)
        delta = text[seq._sent_chars : max(len(text) - hold, seq._sent_chars)]
        seq._sent_chars += len(delta)
        seq.sink.emit(Event(seq, "token", text=delta, tokens=(token,), time=now))

    def _finish(
        self, seq: Sequence, reason: str, *, text: str = "", tokens: tuple[int, ...] = (), error: str | None = None
    ) -> None:
        if seq.finished:
            return
        seq.finished = True
        seq.sink.emit(
            Event(seq, "final", text=text, tokens=tokens, finish_reason=reason, error=error, time=time.perf_counter())
        )

    def _update_gauges(self) -> None:
        s = self.stats
        s.running = len(self._running)
        s.waiting = len(self._waiting) + len(self._inbox)
        s.kv_used = len(self._running) * self._columns


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    if params.greedy:
        return int(torch.argmax(logits).item())
    logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1])).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(ordered, dim=-1) - ordered > params.top_p
        ordered = ordered.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator).item())


__all__ = [
    "Budgets",
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
    "load_tokenizer",
]
