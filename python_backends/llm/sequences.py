"""What the LLM engine schedules: a request's sampling parameters, its generation state, its events.

Pure Python (no torch, no transformers, no Triton), so the scheduler and the output processor
that use it are tested without a model.

Example:
    >>> params = SamplingParams.from_json('{"max_tokens": "8", "temperature": 0}')
    >>> Sequence(id="r1", prompt="Hello", params=params, sink=sink).params.greedy
    True
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


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
    """One request's generation state.

    ``admitted`` is the scheduler's admission number (preemption takes the newest), ``detok``
    the tokenizer's detokenizer and ``generator`` the sampling RNG, both set by the engine when
    the sequence is submitted; ``sent_chars`` is how much of the text has been emitted.
    """

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
    sent_chars: int = 0
    admitted: int = 0
    detok: Any = None
    generator: Any = None  # a torch.Generator, or None when greedy

    @property
    def tokens(self) -> list[int]:
        return self.prompt_ids + self.generated

    @property
    def cached(self) -> int:
        """KV columns this sequence needs: every token but the newest, not yet fed."""
        return len(self.prompt_ids) + len(self.generated) - 1

    @property
    def prefill_tokens(self) -> int:
        """Tokens its prefill feeds: the prompt, or (readmitted after a preemption) every token
        but the newest, which the next decode feeds. That is also its KV columns afterwards."""
        return len(self.tokens) - (1 if self.generated else 0)
