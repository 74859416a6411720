"""What every deployment environment shares: the promotion history and the one interface.

An environment (``local``, or a KServe environment declared in the spec) serves one release at
a time. Each promotion or rollback appends one line to ``releases/envs/<name>/history.jsonl``,
never rewritten; what the environment serves is the target of its last successful step.

Every environment has the same three operations, so callers never switch on its type:

- ``promote(number, *, canary=None, progress=None, analysis_s=None, steps=None)``: serve release
  ``number`` (or send ``canary`` percent of the traffic to it, where the environment can split
  traffic); with ``analysis_s``, watch it under real traffic against each model's SLO and the
  previous release's baseline, in traffic ``steps`` where the environment can split traffic
  (:mod:`tritonkit.deploy.canary`), and undo it on a violation;
- ``rollback(*, progress=None)``: serve the release served before the current one;
- ``status()``: what the environment serves and its history (and, where it can tell, every
  difference between what it actually serves and the record);
- ``repair(*, progress=None)``: make what it serves match the record again (local).

A step that fails is undone and recorded, and raises :class:`~tritonkit.errors.PromoteError`.
Progress goes through the one event contract (:mod:`tritonkit.events`), stage ``promote`` or
``rollback``, subject the environment's name.

Example:
    >>> env = open_environment(ReleaseStore(Path("releases")), "local")
    >>> env.promote(2)
    >>> env.status().current.name
    'v2'
"""

from __future__ import annotations

import getpass
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tritonkit.artifact.lock import read_lock
from tritonkit.deploy.canary import Step, plan_steps
from tritonkit.errors import PromoteError, UsageError, VerifyError
from tritonkit.events import Event, Progress, emit
from tritonkit.release.store import Release, ReleaseStore, parse_release
from tritonkit.slo.analysis import Intent, Verdict, Window
from tritonkit.spec.intent import Capacity, Slo

HISTORY = "history.jsonl"
DAMAGED = "history.damaged.jsonl"


@dataclass(frozen=True)
class Promotion:
    """One line of an environment's history."""

    env: str
    action: str  # "promote" | "rollback"
    from_release: str | None
    to_release: str
    from_digest: str | None
    to_digest: str
    user: str
    at: str
    outcome: str  # "ok" or "failed: <reason>"
    step: str = ""  # the journal id of the step (local), so recovery knows whether it was recorded

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


_PROMOTION_FIELDS = frozenset(Promotion.__dataclass_fields__)


@dataclass(frozen=True)
class Status:
    """What an environment serves, by its history, and the history itself (oldest first).

    ``differences`` lists, one line each, where what the environment actually serves disagrees
    with the record (empty: they agree, or the environment cannot tell); ``note`` says what could
    not be checked.
    """

    env: str
    current: Release | None
    history: list[Promotion]
    differences: list[str] = field(default_factory=list)
    note: str = ""


class Environment(ABC):
    """One deployment target: its append-only promotion history and the one interface.

    Subclasses implement :meth:`_switch`; :meth:`promote` and :meth:`rollback` are the same
    everywhere.
    """

    name: str
    analysable: bool = False  # whether promote(analysis_s=...) can watch this environment's traffic

    def __init__(self, store: ReleaseStore, name: str) -> None:
        self.store, self.name = store, name
        self.root = store.root / "envs" / name

    def history(self) -> list[Promotion]:
        """Every promotion and rollback, oldest first.

        Raises:
            VerifyError: a line is damaged (torn by a crash mid-write, or edited): the record
                cannot be trusted as is; :meth:`repair_history` sets it aside.
        """
        entries, damaged = self._read_history()
        if damaged:
            number, reason = damaged[0]
            more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
            raise VerifyError(
                f"{self.root / HISTORY}: line {number} is damaged{more}: {reason}",
                hint=f"run 'tritonkit repair --env {self.name}': it moves damaged lines to {DAMAGED} "
                "and makes the environment serve what the remaining record says",
            )
        return entries

    def _read_history(self) -> tuple[list[Promotion], list[tuple[int, str]]]:
        """The readable entries, and (line number, reason) for each damaged line."""
        path = self.root / HISTORY
        if not path.is_file():
            return [], []
        entries: list[Promotion] = []
        damaged: list[tuple[int, str]] = []
        for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                document = json.loads(line)
                if not isinstance(document, dict):
                    raise TypeError("not a JSON object")
                unknown = sorted(set(document) - _PROMOTION_FIELDS)
                if unknown:
                    raise TypeError(f"unknown key '{unknown[0]}'")
                entries.append(Promotion(**document))
            except (ValueError, TypeError) as exc:
                damaged.append((number, str(exc).splitlines()[0][:120]))
        return entries, damaged

    def repair_history(self) -> list[str]:
        """Move the damaged lines of ``history.jsonl`` to ``history.damaged.jsonl`` (appended, kept
        for a person to read) and rewrite the history atomically without them.

        Returns:
            One line per line set aside (empty when the history was intact).
        """
        entries, damaged = self._read_history()
        if not damaged:
            return []
        path = self.root / HISTORY
        lines = path.read_bytes().split(b"\n")
        with open(self.root / DAMAGED, "ab") as aside:
            for number, _ in damaged:
                aside.write(lines[number - 1].rstrip(b"\r") + b"\n")
            aside.flush()
            os.fsync(aside.fileno())
        temp = path.with_name(f".{HISTORY}.repair")
        with open(temp, "w") as handle:
            handle.writelines(json.dumps(asdict(entry), sort_keys=True) + "\n" for entry in entries)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        return [f"history line {number} set aside in {DAMAGED}: {reason}" for number, reason in damaged]

    def current(self) -> Release | None:
        """The release the environment serves: the target of the last successful step."""
        done = [p for p in self.history() if p.ok]
        return self.store.get(parse_release(done[-1].to_release)) if done else None

    def rollback_target(self) -> int:
        """The release served before the current one.

        Raises:
            UsageError: nothing to roll back to.
        """
        done = [p for p in self.history() if p.ok]
        if not done or done[-1].from_release is None:
            raise UsageError(f"{self.name} has no earlier release to roll back to", hint="see 'tritonkit status'")
        return parse_release(done[-1].from_release)

    def status(self) -> Status:
        """The release served (by the history) and every promotion and rollback."""
        history = self.history()
        done = [p for p in history if p.ok]
        current = self.store.get(parse_release(done[-1].to_release)) if done else None
        if current is not None:
            self.store.verified(current.number)  # the digest reported is still what the release holds
        return Status(self.name, current, history)

    def promote(
        self,
        number: int,
        *,
        canary: int | None = None,
        progress: Progress | None = None,
        analysis_s: float | None = None,
        steps: Sequence[int] | None = None,
    ) -> Promotion:
        """Serve release ``number`` (or ``canary`` percent of the traffic, where supported).

        With ``analysis_s``, the new release is then watched under its real traffic for that long
        and judged against each model's SLO (the ``slo`` its lock carries) and against the
        previous release's numbers (:func:`tritonkit.slo.analysis.analyse`); on a violation
        the previous release is put back at once and the step fails with the evidence, which the
        history records. ``steps`` (traffic percentages, analysed one after the other) need an
        environment that splits traffic (KServe Serverless); elsewhere only ``[100]``.

        Raises:
            UsageError: unknown release, the release already served, a canary or traffic steps
                here are impossible, or steps without an analysis window.
            ServerError, ClusterError: the server or cluster cannot be reached.
            VerifyError: the release's lock no longer matches its index entry (nothing changed).
            PromoteError: the step failed and was undone, or the new release broke its SLO under
                analysis and was rolled back; the previous release still serves.
        """
        self.store.path(number)  # every environment: the release is the one recorded, before any change
        require_window(analysis_s, steps)
        if analysis_s and not self.analysable:
            raise UsageError(
                f"promotion analysis is not available for environment '{self.name}' yet",
                hint="promote without analysis, and gate with 'tritonkit check' against its metrics",
            )
        if analysis_s:
            plan_steps(steps, split=False)  # only a whole switch here: refuse steps before any change
        previous = self.current()
        baseline = self._baseline(number, previous.number) if analysis_s and previous is not None else {}
        entry = self._switch(number, canary=canary, progress=progress, action="promote")
        if analysis_s and previous is not None:
            self._gate(number, previous.number, analysis_s, progress, baseline)
        return entry

    def intent(self, number: int) -> Intent:
        """Release ``number``'s models that declare an SLO: their SLO and measured capacity, as
        its lock records them."""
        return {
            name: (Slo(**entry["slo"]), Capacity(**entry["capacity"]) if "capacity" in entry else None)
            for name, entry in read_lock(self.store.path(number)).models.items()
            if "slo" in entry
        }

    def _baseline(self, number: int, previous: int) -> dict[str, Window]:
        """The previous release's recent numbers for release ``number``'s models, read before
        the switch (none where the environment cannot tell)."""
        return {}

    def _gate(
        self, number: int, previous: int, seconds: float, progress: Progress | None, baseline: dict[str, Window]
    ) -> None:
        """Watch release ``number`` for ``seconds``; roll back to ``previous`` when it breaks its
        SLO or falls behind ``baseline`` (the previous release's numbers)."""
        report = self._reporter(progress, "analysis")
        verdicts = self._watch(number, seconds, report, baseline)
        step = Step(100, verdicts)  # a whole switch: one step, all the traffic
        emit(progress, Event("analysis", self.name, "passed" if step.ok else "failed", data={"step": step.as_dict()}))
        broken = [v for v in verdicts if not v.ok]
        if not broken:
            report(f"v{number} met its SLO and kept up with v{previous} for {seconds:.0f}s")
            return
        evidence = "; ".join(f"{v.model}: {', '.join(v.violations)}" for v in broken)
        report(f"v{number} broke its SLO ({evidence}): rolling back to v{previous}")
        self._switch(previous, canary=None, progress=progress, action=f"rollback (analysis of v{number}: {evidence})")
        raise PromoteError(
            f"v{number} broke its SLO under traffic and was rolled back to v{previous}: {evidence}",
            hint=f"v{previous} serves; 'tritonkit status' shows the evidence in the history",
        )

    def _watch(
        self, number: int, seconds: float, report: Callable[[str], None], baseline: dict[str, Window]
    ) -> list[Verdict]:
        """Judge release ``number``'s models under live traffic for ``seconds`` (against the SLO
        and ``baseline``).

        Raises:
            UsageError: this environment cannot be analysed from here.
        """
        raise UsageError(
            f"promotion analysis is not available for environment '{self.name}' yet",
            hint="promote without analysis, and gate with 'tritonkit check' against its metrics",
        )

    def rollback(self, *, progress: Progress | None = None) -> Promotion:
        """Serve the release that served before the current one (gated like any promotion).

        Raises:
            UsageError: nothing to roll back to.
            VerifyError: the target's lock no longer matches its index entry (nothing changed).
            PromoteError: the step failed and was undone.
        """
        target = self.rollback_target()
        self.store.path(target)
        return self._switch(target, canary=None, progress=progress, action="rollback")

    def serving_root(self) -> Path:
        """The repository a Triton on this machine serves for this environment.

        Raises:
            UsageError: the environment is served elsewhere (a cluster), not by a local Triton.
        """
        raise UsageError(
            f"environment '{self.name}' is served by its cluster, not by a Triton on this machine",
            hint="serve the local environment, or a release by name (vN)",
        )

    @abstractmethod
    def _switch(self, number: int, *, canary: int | None, progress: Progress | None, action: str) -> Promotion:
        """Do one promotion or rollback step and record it."""

    def _reporter(self, progress: Progress | None, action: str) -> Callable[[str], None]:
        """A ``report(message)`` that emits :class:`~tritonkit.events.Event` values."""
        return lambda message: emit(progress, Event(action, self.name, message))

    def recover(self, *, progress: Progress | None = None) -> str | None:
        """Finish or undo a step a killed process left unfinished; what was done, or None.

        The base environment keeps no journal (a cluster finishes its own rollouts).
        """
        return None

    def repair(self, *, progress: Progress | None = None) -> list[str]:
        """Make what the environment serves match its record; returns the differences found.

        The base case repairs the record only (damaged history lines are set aside).

        Raises:
            UsageError: the record was intact and the environment cannot be repaired by tritonkit.
        """
        set_aside = self.repair_history()
        if set_aside:
            return set_aside
        raise UsageError(f"{self.name} has no repair of its own", hint="promote the release it should serve again")

    def record(
        self, action: str, previous: Release | None, target: Release, outcome: str, *, step: str = ""
    ) -> Promotion:
        """Append one line to ``history.jsonl`` (flushed and fsynced)."""
        entry = Promotion(
            env=self.name,
            action=action,
            from_release=previous.name if previous else None,
            to_release=target.name,
            from_digest=previous.digest if previous else None,
            to_digest=target.digest,
            user=_user(),
            at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            outcome=outcome,
            step=step,
        )
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / HISTORY, "a") as handle:  # append-only: one line per step
            handle.write(json.dumps(asdict(entry), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return entry


def require_window(analysis_s: float | None, steps: Sequence[int] | None) -> None:
    """Traffic steps are the steps of an analysis: refuse them without its window.

    Raises:
        UsageError: steps without an analysis window.
    """
    if steps is not None and not analysis_s:
        raise UsageError(
            "traffic steps are analysed one after the other, and no analysis window was given",
            hint="give the analysis window too (60s, say), or promote with a single canary percentage",
        )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
