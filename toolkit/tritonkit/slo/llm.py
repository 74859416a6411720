"""An llm model's latency objectives (TTFT and TPOT p99) and whether a measurement holds them. Pure.

``tritonkit tune`` on an llm model (:mod:`tritonkit.perf.tune_llm`) judges each closed-loop level
with :func:`level_within` (the client's view: no error, something finished, both p99s within) and
:func:`engine_within` (the engine's own histograms over the same window).

Example:
    >>> slo = LlmSlo(ttft_p99_ms=500, tpot_p99_ms=50)
    >>> level_within(slo, ttft_p99_ms=420, tpot_p99_ms=31, errors=0, completed=12)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LlmSlo:
    """The latency objectives of an llm model (either may be None: not judged)."""

    ttft_p99_ms: float | None
    tpot_p99_ms: float | None

    def describe(self) -> str:
        parts = [f"TTFT p99 ≤ {self.ttft_p99_ms:g} ms" if self.ttft_p99_ms else "",
                 f"TPOT p99 ≤ {self.tpot_p99_ms:g} ms" if self.tpot_p99_ms else ""]  # fmt: skip
        return ", ".join(p for p in parts if p)


def level_within(slo: LlmSlo, *, ttft_p99_ms: float, tpot_p99_ms: float, errors: int, completed: int) -> bool:
    """Whether a level is within ``slo``: no error, something finished, both p99s within budget
    (a NaN p99 — no sample — is never within)."""
    if errors or completed <= 0:
        return False
    for measured, budget in ((ttft_p99_ms, slo.ttft_p99_ms), (tpot_p99_ms, slo.tpot_p99_ms)):
        if budget is not None and not measured <= budget:
            return False
    return True


def engine_within(slo: LlmSlo, ttft_p99_ms: float, tpot_p99_ms: float) -> bool:
    """Whether the engine's p99s are within ``slo`` (a NaN one — no observation — is not judged)."""
    pairs = ((ttft_p99_ms, slo.ttft_p99_ms), (tpot_p99_ms, slo.tpot_p99_ms))
    return all(budget is None or math.isnan(measured) or measured <= budget for measured, budget in pairs)
