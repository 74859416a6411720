"""The LLM engine's output processor: a sampled token to text, stop conditions, and the sink's events.

Pure Python: it needs the tokenizer's ``eos_token_id`` and per-sequence detokenizer (``tokens.py``),
nothing of the model. Each accepted token is detokenized, checked against EOS, ``max_tokens`` and
the stop strings (text that may still become a stop string is held back), and emitted to the
sequence's sink; a finished sequence gets exactly one ``final`` event and nothing after it.

Example:
    >>> output = OutputProcessor(tokenizer, stats, Event)
    >>> output.accept(sequence, token)   # the sink gets a "token" (or the "final") event
"""

from __future__ import annotations

import time
from typing import Any


class OutputProcessor:
    """Turns sampled tokens into the events a sequence's sink receives."""

    def __init__(self, tokenizer: Any, stats: Any, event: type):
        self.tokenizer = tokenizer
        self.stats = stats  # counts generation tokens
        self.event = event  # sequences.Event, as the engine loaded it

    def accept(self, seq: Any, token: int) -> None:
        """``seq`` produced ``token``: record it and emit what it adds (or its end)."""
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
        seq.detok.push(token)
        text = seq.detok.finish() if reason is not None else seq.detok.text
        if params.stop:
            hit = min(
                (i for i in (text.find(s, max(0, seq.sent_chars - len(s))) for s in params.stop) if i >= 0), default=-1
            )
            if hit >= 0:
                text, reason = text[:hit], "stop"
        if reason is not None:
            delta = text[seq.sent_chars :]
            seq.sent_chars = len(text)
            self.finish(seq, reason, text=delta, tokens=(token,))
            return
        # Hold back text that may still become a stop string (the detokenizer holds back
        # characters that are not complete yet).
        hold = max((len(s) - 1 for s in params.stop), default=0)
        delta = text[seq.sent_chars : max(len(text) - hold, seq.sent_chars)]
        seq.sent_chars += len(delta)
        seq.sink.emit(self.event(seq, "token", text=delta, tokens=(token,), time=now))

    def finish(
        self, seq: Any, reason: str, *, text: str = "", tokens: tuple[int, ...] = (), error: str | None = None
    ) -> None:
        """End ``seq`` with one ``final`` event (a second call does nothing)."""
        if seq.finished:
            return
        seq.finished = True
        seq.sink.emit(
            self.event(
                seq, "final", text=text, tokens=tokens, finish_reason=reason, error=error, time=time.perf_counter()
            )
        )
