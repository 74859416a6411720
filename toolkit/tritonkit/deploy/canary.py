"""Promotion in traffic steps under analysis: the plan of steps and the walk.

A KServe Serverless promotion with an analysis window is a canary in steps (10 → 50 → 100 % by
default). At each step the new revision gets that share of the traffic and KServe's status gate
passes (``shift``); then the walk waits the analysis window and judges, per model with an SLO,
the new revision's counters over that window against the SLO *and* against the previous
revision's counters over the same window (its baseline), with the one pure
:func:`tritonkit.slo.analysis.analyse`. The first violation ends the walk and sends the
traffic back: ``shift(0)`` below 100 % (KServe's ``canaryTrafficPercent: 0``: the previous
revision is still running), ``restore()`` at 100 % (KServe has moved its ``prev`` pin to the new
revision by then, so the previous release is applied again).

The baseline of each model is the previous revision's last window with enough traffic to
compare (:data:`~tritonkit.slo.analysis.MIN_REQUESTS` answered): at 10 % it is the 90 % it
serves beside the canary; at 100 %, where it serves nothing, the window before. The first one is
read before any traffic moves, so a one-step walk (``[100]``: a blue/green switch, or the local
environment) still compares with the release it replaced.

Everything that touches a cluster, a server or Prometheus is a callable the caller passes (pure
core, effects at the edges): :func:`plan_steps` and :func:`~tritonkit.slo.analysis.judge_models`
are pure, and :func:`walk` only orders calls, so a test walks a real Prometheus with a recording ``shift``.

Example:
    >>> plan_steps(None, split=True)
    [10, 50, 100]
    >>> outcome = walk([10, 50, 100], shift=set_canary_percent, restore=apply_previous,
    ...                read=read_counters, intent=intent, seconds=60)
    >>> outcome.ok, outcome.failed_at, outcome.evidence
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from tritonkit.errors import UsageError
from tritonkit.slo.analysis import MIN_REQUESTS, Intent, Reads, Verdict, Window, judge_models

DEFAULT_STEPS = (10, 50, 100)
"""The canary steps of a Serverless promotion under analysis when none are given."""

Side = Literal["new", "previous"]


def plan_steps(steps: Sequence[int] | None, *, split: bool) -> list[int]:
    """The traffic percentages to walk: strictly increasing, ending at 100.

    Args:
        steps: what the caller asked for (``None``: :data:`DEFAULT_STEPS` where traffic can be
            split, else ``[100]``); a last step below 100 gets 100 added.
        split: whether the environment can split traffic between two releases (KServe
            Serverless); without it only ``[100]`` is possible.

    Raises:
        UsageError: a step outside 1..100, steps not strictly increasing, or steps below 100
            where traffic cannot be split.
    """
    if steps is None:
        return list(DEFAULT_STEPS) if split else [100]
    plan = list(steps)
    if not plan or any(not 0 < p <= 100 for p in plan):
        raise UsageError(f"traffic steps must be percentages from 1 to 100, got {plan}", hint="e.g. 10,50,100")
    if any(a >= b for a, b in zip(plan, plan[1:], strict=False)):
        raise UsageError(f"traffic steps must increase, got {plan}", hint="e.g. 10,50,100")
    if plan[-1] != 100:
        plan.append(100)
    if len(plan) > 1 and not split:
        raise UsageError(
            f"this environment cannot split traffic between two releases, so it cannot step through {plan}",
            hint="promote under analysis without steps (a whole switch, watched, undone on a violation), "
            "or use a KServe Serverless environment",
        )
    return plan


@dataclass(frozen=True)
class Step:
    """One step of the walk: the share of traffic on the new release and the verdicts there."""

    percent: int
    verdicts: list[Verdict]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def as_dict(self) -> dict[str, object]:
        return {"percent": self.percent, "ok": self.ok, "verdicts": [v.as_dict() for v in self.verdicts]}


@dataclass(frozen=True)
class Outcome:
    """The steps walked, the last one the failing one when the walk stopped."""

    steps: list[Step]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def failed_at(self) -> int | None:
        """The traffic percentage whose analysis failed (None: every step passed)."""
        return next((s.percent for s in self.steps if not s.ok), None)

    @property
    def evidence(self) -> str:
        """One line: each broken model and its violations ('' when every step passed)."""
        broken = [v for s in self.steps for v in s.verdicts if not v.ok]
        return "; ".join(f"{v.model}: {', '.join(v.violations)}" for v in broken)


def walk(
    steps: Sequence[int],
    *,
    shift: Callable[[int], None],
    restore: Callable[[], None],
    read: Callable[[Side], Reads],
    intent: Intent,
    seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = lambda message: None,
    on_step: Callable[[Step], None] = lambda step: None,
) -> Outcome:
    """Walk ``steps``: shift the traffic, watch ``seconds``, judge; send it back on a violation.

    Args:
        steps: traffic percentages on the new release (:func:`plan_steps`).
        shift: put ``percent`` of the traffic on the new release and wait until the environment
            says it is so (raising when it cannot); ``shift(0)`` sends it all back.
        restore: serve the previous release again after a violation at 100 %.
        read: each model's counters over the last ``seconds`` on the ``"new"`` or the
            ``"previous"`` release.
        intent: the models to judge (:data:`Intent`).
        seconds: the analysis window of each step.
        sleep, report, on_step: the clock, progress lines, and each judged step as it ends.

    Returns:
        The steps walked; when one failed it is the last, and the traffic has been sent back.
    """
    baseline = _with_traffic(read("previous"), {})
    walked: list[Step] = []
    for percent in steps:
        shift(percent)
        report(f"{percent}% of the traffic on the new release: watching for {seconds:.0f}s")
        sleep(seconds)
        new = read("new")
        if percent < 100:  # at 100% the previous release serves nothing: keep its last window
            baseline = _with_traffic(read("previous"), baseline)
        step = Step(percent, judge_models(intent, new, baseline))
        walked.append(step)
        on_step(step)
        if not step.ok:
            report(f"analysis failed at {percent}%: sending the traffic back to the previous release")
            if percent < 100:
                shift(0)
            else:
                restore()
            break
        report(f"{percent}%: every model met its SLO and its baseline")
    return Outcome(walked)


def _with_traffic(reads: Reads, baseline: Reads) -> dict[str, Window]:
    """``baseline`` updated with the models in ``reads`` that answered enough requests to compare."""
    updated = dict(baseline)
    for name, (before, after) in reads.items():
        if (after.success + after.failure) - (before.success + before.failure) >= MIN_REQUESTS:
            updated[name] = (before, after)
    return updated
