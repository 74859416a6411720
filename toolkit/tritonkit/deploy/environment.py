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
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tritonkit.artifact.lock import read_lock
from tritonkit.deploy.canary import Side, Step, walk
from tritonkit.deploy.transaction import EnvironmentLock, Journal
from tritonkit.errors import PromoteError, UsageError, VerifyError
from tritonkit.events import Event, Progress, emit
from tritonkit.release.store import Release, ReleaseStore, parse_release
from tritonkit.slo.analysis import Intent, Reads
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


@dataclass
class Rollout:
    """What one environment does for the walk of an analysed promotion (its effects; the walk
    and its outcome are :meth:`Environment._analysed`'s, the same for every environment).

    ``shift(percent)`` puts that share of the traffic on the new release (0: all back),
    ``restore()`` serves the previous release again after a failure at 100 %, ``read(side)`` is
    each model's window on the new or previous release, ``sleep`` the window's wait (a no-op
    where ``read`` itself watches forward). ``entries`` collects the history entries of the
    switches (the last is the promotion), ``undone`` the outcome of each return of traffic.
    """

    steps: list[int]
    shift: Callable[[int], None]
    restore: Callable[[], None]
    read: Callable[[Side], Reads]
    sleep: Callable[[float], None] = time.sleep
    entries: list[Promotion] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    stuck_hint: str = ""


def evidence(number: int, step: Step) -> str:
    """The history's action for a rollback after a failed analysis: where, and why."""
    broken = "; ".join(f"{v.model}: {', '.join(v.violations)}" for v in step.verdicts if not v.ok)
    return f"rollback (analysis of v{number} at {step.percent}%: {broken})"


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
    traffic: list[str] = field(default_factory=list)  # a KServe walk's traffic split, while one runs


class Environment(ABC):
    """One deployment target: its append-only promotion history and the one interface.

    Subclasses implement :meth:`_switch`; :meth:`promote` and :meth:`rollback` are the same
    everywhere.
    """

    name: str
    analysable: bool = False  # whether promote(analysis_s=...) can watch this environment's traffic

    lock_timeout: float = 120.0
    """Seconds a promote, rollback or repair waits for another one to finish (:meth:`lock`)."""

    def __init__(self, store: ReleaseStore, name: str) -> None:
        self.store, self.name = store, name
        self.root = store.root / "envs" / name
        self.journal = Journal(self.root)  # an unfinished step (local: a switch; KServe: a walk)

    def lock(self, what: str, *, timeout: float | None = None) -> EnvironmentLock:
        """The environment's lock (a context manager); see :class:`.transaction.EnvironmentLock`."""
        return EnvironmentLock(self.root, what, timeout=self.lock_timeout if timeout is None else timeout, user=_user())

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

        With ``analysis_s``, the one walk of :mod:`tritonkit.deploy.canary` runs: the new release
        is watched under its real traffic for that long at each traffic step and judged against
        each model's SLO (the ``slo`` its lock carries) and the previous release's numbers
        (:func:`tritonkit.slo.analysis.analyse`); on a violation the previous release gets the
        traffic back at once and the step fails with the evidence, which the history records.
        ``steps`` (traffic percentages) need an environment that splits traffic (KServe
        Serverless); elsewhere the walk has one step, ``[100]``: a whole switch, then its window.

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
        previous = self.current()  # a damaged record is refused before any server or cluster is touched
        if not analysis_s:
            return self._switch(number, canary=canary, progress=progress, action="promote")
        self._check_analysable(canary, steps)
        intent = self.intent(number)
        if previous is None or not intent:
            report = self._reporter(progress, "analysis")
            report("nothing served before: nothing to compare" if previous is None else f"v{number} declares no SLO")
            return self._switch(number, canary=None, progress=progress, action="promote")
        return self._analysed(number, previous, analysis_s, steps, intent, progress)

    def intent(self, number: int) -> Intent:
        """Release ``number``'s models that declare an SLO: their SLO and measured capacity, as
        its lock records them."""
        return {
            name: (Slo(**entry["slo"]), Capacity(**entry["capacity"]) if "capacity" in entry else None)
            for name, entry in read_lock(self.store.path(number)).models.items()
            if "slo" in entry
        }

    def _check_analysable(self, canary: int | None, steps: Sequence[int] | None) -> None:
        """Refuse, before any change, an analysis this environment cannot run.

        Raises:
            UsageError: no analysis here (the base case).
        """
        raise UsageError(
            f"promotion analysis is not available for environment '{self.name}' yet",
            hint="promote without analysis, and gate with 'tritonkit check' against its metrics",
        )

    def _rollout(
        self, number: int, previous: Release, seconds: float, steps: Sequence[int] | None, intent: Intent,
        judged: list[Step], progress: Progress | None,
    ) -> Rollout:  # fmt: skip
        """This environment's effects for the walk (how traffic moves, how counters are read)."""
        raise NotImplementedError(f"environment '{self.name}' has no rollout for analysis")

    def _analysed(
        self,
        number: int,
        previous: Release,
        seconds: float,
        steps: Sequence[int] | None,
        intent: Intent,
        progress: Progress | None,
    ) -> Promotion:
        """The one analysed promotion: :func:`~tritonkit.deploy.canary.walk` over this
        environment's :class:`Rollout`, the outcome recorded and raised the same everywhere."""
        report = self._reporter(progress, "analysis")
        judged: list[Step] = []
        rollout = self._rollout(number, previous, seconds, steps, intent, judged, progress)

        def on_step(step: Step) -> None:
            judged.append(step)
            verdict = "passed" if step.ok else "failed"
            emit(progress, Event("analysis", self.name, f"{step.percent}%: {verdict}", data={"step": step.as_dict()}))

        outcome = walk(rollout.steps, shift=rollout.shift, restore=rollout.restore, read=rollout.read, intent=intent,
                       seconds=seconds, sleep=rollout.sleep, report=report, on_step=on_step)  # fmt: skip
        if outcome.ok:
            report(f"v{number} met its SLO and kept up with {previous.name} for {seconds:.0f}s at each step")
            return rollout.entries[-1]
        where = f"at {outcome.failed_at}% of the traffic" if len(rollout.steps) > 1 else "under traffic"
        if rollout.undone and rollout.undone[-1] != "ok":
            raise PromoteError(
                f"v{number} broke its SLO {where} ({outcome.evidence}), and sending the traffic back to "
                f"{previous.name} did not finish: {rollout.undone[-1]}",
                hint=rollout.stuck_hint,
            )
        raise PromoteError(
            f"v{number} broke its SLO {where} and was rolled back to {previous.name}: {outcome.evidence}",
            hint=f"{previous.name} serves; 'tritonkit status' shows the evidence in the history",
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
