"""Judging against intent (the stage above serve/, below perf/).

Whether a window of metrics meets an SLO (and a baseline), an llm model's TTFT/TPOT objectives,
and the capacity plan. Pure: no server, no cluster.

``tritonkit check`` and ``plan`` use it with no deployment at all; ``tune`` and promotion
analysis judge through it. See docs/architecture.md for what this package may import.
"""
