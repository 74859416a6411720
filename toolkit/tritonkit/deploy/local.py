"""Promotion of releases to the local environment: a transaction on a running Triton.

The **local** target switches a running Triton from one release to another without a restart
and without failing requests. The environment lives in the release store::

    releases/envs/local/
      live/            the repository the local Triton serves (a mutable view of immutable releases)
      history.jsonl    one JSON line per promotion or rollback, never rewritten
      lock             held while a step runs (who: pid, user, since) — :mod:`.transaction`
      journal.json     exists only while a step is unfinished — :mod:`.transaction`
      serve.lock       held by the one ``serve --env local`` that serves live/ (:meth:`claim_serving`)

A promotion of ``vN``:

1. takes the environment's lock (a second promote or rollback waits, then names the holder),
   and finishes any step a killed process left in the journal (:meth:`recover`);
2. **proves** ``vN`` where no client can reach it: a scratch Triton on free ports loads and warms
   up every model of the release, laid out as ``live/`` will hold it during the switch (live
   configs, and the old step versions that stay loaded beside the new ones: :meth:`_scratch`); a
   model that fails there fails the promotion before anything clients see has changed (zero
   requests answered by a release that fails);
3. writes the journal (target, previous, then one line per change);
4. switches Triton (:meth:`reconcile`, :meth:`_reload`): each model whose served version or config
   differs gets the release's version directory ``N`` hard-linked into ``live/``, its config
   written there (with ``version_policy: specific [N]``) and is reloaded through
   ``POST v2/repository/models/<m>/load``: Triton loads and warms up version N while the old
   version keeps serving, then retires it, so clients that do not pin a version never see an
   error. An old step version that a served ensemble runs stays loaded until the ensembles are
   reloaded with their steps pinned to version N (``model_version: N``) -- beside N where Triton
   keeps it as it is, else as a stand-in under its own config (:class:`Holdover`) -- so one
   ensemble request never runs steps of two releases, nor an old step under the new config;
5. records the outcome in the history, then settles ``live/`` (old versions, dropped models) and
   removes the journal.

If a load fails in step 4, :meth:`reconcile` puts Triton and ``live/`` back to the previous release
and the failure is recorded. If the process is killed anywhere, the journal remains: the next
promote, rollback, status or repair (or ``serve --env local`` at start) records the step as
interrupted unless its outcome was already recorded, and reconciles to whatever the history says
is served. :meth:`status` compares what Triton actually serves — versions and configs of every
model, and ``live/`` on disk — with the record (:mod:`.drift`); :meth:`repair` makes Triton match
the record again.

KServe environments are in :mod:`tritonkit.deploy.kserve`; :func:`environment` picks one by name.

Example:
    >>> env = LocalEnvironment(ReleaseStore(Path("releases")), url="127.0.0.1:8000")
    >>> env.promote(2)
    >>> env.status().differences
    []

Length: about 590 lines: the transaction's steps (prove, switch, settle, undo,
recover) share the journal and the lock, and read best in one place; the scratch server,
live/ bookkeeping (the switch's layout and stand-ins included) and drift checks already live in
transaction.py, live.py and drift.py.
"""

from __future__ import annotations

import fcntl
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import IO, Any

from tritonkit.artifact.layout import remove_tree
from tritonkit.build.verify import require_verified
from tritonkit.deploy.canary import Side, Step, plan_steps
from tritonkit.deploy.drift import differences
from tritonkit.deploy.environment import HISTORY, Environment, Promotion, Rollout, Status, evidence
from tritonkit.deploy.live import (
    Holdover,
    config_json,
    connect,
    ensembles_running,
    holdovers,
    install_stand_in,
    kill_scratch,
    link_tree,
    live_config,
    read_bytes,
    repoint,
    served,
    switch_layout,
    try_connect,
    write_config,
)
from tritonkit.errors import PromoteError, ServerError, TritonkitError, UsageError
from tritonkit.events import Progress
from tritonkit.release.store import Release, ReleaseStore
from tritonkit.serve.endpoints import Endpoints
from tritonkit.serve.loadcheck import load_check
from tritonkit.serve.metrics import ModelCounters, model_counters, scrape, watch, window_counters
from tritonkit.serve.models import repository_models
from tritonkit.serve.repository_api import load_model, unload_model
from tritonkit.slo.analysis import Intent, Reads

Report = Callable[[str], None]
SERVE_LOCK = "serve.lock"
SCRATCH = "scratch"
"""The directory (in the environment) the proof's scratch Triton serves: the release laid out as
``live/`` will hold it while the switch runs."""
DEFAULT_URL = "127.0.0.1:8000"
"""The local Triton's HTTP address when none is given and no ``serve --env local`` runs."""
_SERVED_AT = re.compile(r"at (\S+) \(metrics (\S+)\)")


class LocalEnvironment(Environment):
    """The ``local`` environment of a release store: a tritonkit-served Triton on this machine.

    Args:
        store: the release store.
        url: HTTP address of the Triton that serves :attr:`live` (default: the address the running
            ``tritonkit serve --env local`` recorded, :meth:`served_at`; else :data:`DEFAULT_URL`).
        metrics_url: its metrics endpoint, for promotion analysis (default: the recorded one, else
            port 8002 on its host).
        lock_timeout: seconds a promote, rollback or repair waits for another one to finish.
        prove: load every model on a scratch Triton before switching (off only for tests of
            what happens without it).
    """

    analysable = True

    def __init__(
        self,
        store: ReleaseStore,
        *,
        url: str | None = None,
        metrics_url: str | None = None,
        lock_timeout: float = 120.0,
        prove: bool = True,
    ) -> None:
        super().__init__(store, "local")
        self.live = self.root / "live"
        served = self.served_at() if url is None else None
        self.url = url or (served[0] if served else DEFAULT_URL)
        self.metrics_url = metrics_url or (served[1] if served else f"http://{self.url.rsplit(':', 1)[0]}:8002/metrics")
        self.lock_timeout = lock_timeout
        self.prove = prove
        self._serving: IO[str] | None = None  # serve.lock, while this process serves live/

    def prepare(self) -> Path:
        """Create ``live/`` (empty until the first promotion) and return it."""
        self.live.mkdir(parents=True, exist_ok=True)
        return self.live

    def serving_root(self) -> Path:
        """``live/``: what ``tritonkit serve --env local`` serves and promotions switch."""
        return self.prepare()

    def claim_serving(self) -> None:
        """Claim ``live/`` for one serving Triton: an exclusive lock on ``serve.lock`` held as long
        as this object (or the process, however it ends). Two servers on one ``live/`` would load
        each other's promotions half-way and disagree with the record.

        Raises:
            UsageError: another process serves this environment (names its pid and address).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / SERVE_LOCK, "a+")  # noqa: SIM115 (held open: the lock is the open file)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UsageError(
                f"{self.name} is already served ({holder}) from {self.live}",
                hint="stop that 'tritonkit serve --env local' first, or serve another store (--store)",
            ) from None
        handle.seek(0)
        handle.truncate()
        # after the lock: never truncated unheld; served_at() reads the addresses back
        handle.write(f"pid {os.getpid()} at {self.url} (metrics {self.metrics_url})\n")
        handle.flush()
        self._serving = handle

    def served_at(self) -> tuple[str, str] | None:
        """The HTTP address and metrics URL of the ``serve --env local`` that serves ``live/`` right
        now (what :meth:`claim_serving` recorded), or None when no process holds ``serve.lock``.

        Commands that talk to the local Triton use it when no ``--url`` is given: the default
        address (Triton's 8000) may be another server altogether — comparing the record with it,
        or loading models into it, would be wrong either way.
        """
        path = self.root / SERVE_LOCK
        if not path.is_file():
            return None
        with path.open() as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: a serve runs (this process's own claim counts too)
                found = _SERVED_AT.search(handle.read())
                return (found.group(1), found.group(2)) if found else None
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

    def release_serving(self) -> None:
        """Give up the claim of :meth:`claim_serving` (a no-op without one)."""
        if self._serving is not None:
            self._serving.close()
            self._serving = None

    # ------------------------------------------------------------------ the interface

    def _switch(self, number: int, *, canary: int | None, progress: Progress | None, action: str) -> Promotion:
        """Switch the Triton at :attr:`url` (serving :attr:`live`) to release ``number``.

        Raises:
            UsageError: unknown release, already served, a canary (the local target switches
                whole), or another step holds the lock for longer than the timeout.
            ServerError: the server cannot be reached.
            PromoteError: a model failed to load or warm up (the previous release serves on).
        """
        if canary is not None:
            raise UsageError(
                "a canary needs a KServe Serverless environment", hint="the local environment switches whole releases"
            )
        report = self._reporter(progress, action)
        self.store.get(number)  # an unknown release is refused before anything is waited for
        with self.lock(f"{action} v{number}"):
            client = connect(self.url)
            try:
                self._recover(client, report)
                return self._switch_locked(client, number, action, report)
            finally:
                client.close()

    def rollback(self, *, progress: Progress | None = None) -> Promotion:
        """Serve the release that served before the current one, read under the lock: a promotion
        that finishes while this rollback waits for the lock changes what "before" means.

        Raises:
            UsageError: nothing to roll back to.
            VerifyError: the target's lock no longer matches its index entry (nothing changed).
            PromoteError: the step failed and was undone.
        """
        report = self._reporter(progress, "rollback")
        # Nothing to roll back to, a damaged record or a tampered target: refused before any wait.
        self.store.path(self.rollback_target())
        with self.lock("rollback"):
            client = connect(self.url)
            try:
                self._recover(client, report)
                return self._switch_locked(client, self.rollback_target(), "rollback", report)
            finally:
                client.close()

    def status(self) -> Status:
        """The recorded release, history, and every difference between the record and Triton.

        Finishes or undoes a step a killed process left behind first (unless one is running).
        Differences include ``live/`` on disk; when Triton cannot be reached, that is said in
        ``note`` and only ``live/`` is compared.
        """
        client = try_connect(self.url)
        try:
            note = ""
            try:
                with self.lock("status (recovery)", timeout=0):
                    self._recover(client, lambda _: None)
            except UsageError as exc:
                note = exc.message  # a step is running right now: report, do not wait
            base = super().status()
            found = self.drift(base.current, client)
            if client is None:
                note = note or f"the local Triton at {self.url} is not reachable; only {self.live} was compared"
            return replace(base, differences=found, note=note)
        finally:
            if client is not None:
                client.close()

    def repair(self, *, progress: Progress | None = None) -> list[str]:
        """Make Triton and ``live/`` serve exactly the recorded release again.

        Returns:
            The differences found before the repair (empty: nothing needed doing).

        Raises:
            ServerError: the local Triton cannot be reached (``live/`` is repaired anyway).
        """
        report = self._reporter(progress, "repair")
        with self.lock("repair"):
            client = try_connect(self.url)
            try:
                set_aside = self.repair_history()
                self._recover(client, report)
                current = self.current()
                found = set_aside + self.drift(current, client)
                self.reconcile(current, client, report)
            finally:
                if client is not None:
                    client.close()
        if client is None:
            connect(self.url)  # raises the usual "cannot reach" error, after fixing live/
        return found

    def recover(self, *, progress: Progress | None = None) -> str | None:
        """Finish or undo a step a killed process left in the journal; None when there was none.

        Called by ``serve --env local`` before Triton starts (it then loads what ``live/`` holds).
        """
        with self.lock("recovery"):
            return self._recover(try_connect(self.url), self._reporter(progress, "recover"))

    # ------------------------------------------------------------------ the transaction

    def _switch_locked(self, client: Any, number: int, action: str, report: Report) -> Promotion:
        target = self.store.get(number)
        previous = self.current()
        if previous is not None and previous.number == number:
            raise UsageError(f"{self.name} already serves {target.name}", hint="nothing to do")
        source = self.store.path(number)
        require_verified(
            source,
            subject=f"{target.name} in {self.store.root}",
            consequence="not promoted",
            hint="the release store was modified; restore it or release a fresh build",
            error=PromoteError,
        )
        step = uuid.uuid4().hex
        scratch = Endpoints.allocate()
        self.journal.begin(
            {
                "id": step,
                "action": action,
                "target": number,
                "previous": previous.number if previous else None,
                "scratch": {"repository": str((self.root / SCRATCH).resolve()), "http_port": scratch.http_port},
            }
        )
        report("journal written")
        try:
            if self.prove:
                report(f"proving {target.name} on a scratch Triton (clients cannot reach it)")
                held = holdovers(self.live, source, number, repository_models(source), served(client)[0])
                self._prove(source, number, held, scratch, report)
                self.journal.step(f"proved {target.name}")
            self.reconcile(target, client, report, journal=True)
        except TritonkitError as exc:
            report(f"{target.name} failed; putting {previous.name if previous else 'nothing'} back")
            undone = True
            try:
                self.reconcile(previous, client, report)
            except TritonkitError:  # the failure to report is the first one; the journal stays for recovery
                undone = False
            self.record(action, previous, target, f"failed: {exc.message}", step=step)
            if undone:
                self.journal.clear()
            raise PromoteError(
                f"{target.name} was not promoted to {self.name}: {exc.message}",
                hint=f"{previous.name if previous else 'nothing'} still serves; history: {self.root / HISTORY}",
            ) from exc
        entry = self.record(action, previous, target, "ok", step=step)
        report("settling live/")
        self.reconcile(target, client, report)
        self.journal.clear()
        return entry

    def _prove(self, source: Path, number: int, held: list[Holdover], scratch: Endpoints, report: Report) -> None:
        """Load and ask every model of release ``number`` on a scratch Triton at ``scratch``, laid
        out as the switch will hold it (:meth:`_scratch`), with ``verify --load``'s check.

        A scratch Triton that dies before any model is loaded is no model's doing (seen once in
        a CI run beside a CPU hog: ``Epoll1Poller … epoll_wait error: Bad file descriptor``, exit
        -6, in Triton's own gRPC event engine): it is started once more.

        Raises:
            ServerError: a model failed to load or to answer (with Triton's reason), or the
                scratch Triton did not start twice.
        """
        for attempt in range(2):
            try:
                proof = load_check(self._scratch(source, number, held), endpoints=scratch)
                break
            except ServerError as exc:
                if attempt:
                    raise
                report(f"the scratch Triton did not start ({exc.message}): starting it once more")
            finally:
                remove_tree(self.root / SCRATCH)
        if not proof.ok:
            bad = proof.failed[0]
            what = "failed to load" if not bad.loaded else "did not answer its request"
            raise ServerError(
                f"{bad.name} {what} on the scratch Triton: {bad.detail}", hint=f"Triton's log: {proof.log_file}"
            )

    def _recover(self, client: Any | None, report: Report) -> str | None:
        """Under the lock: close the journal's step (recording it as interrupted if its outcome
        never reached the history) and reconcile to what the history says is served."""
        entry = self.journal.read()
        if entry is None:
            return None
        kill_scratch(entry.get("scratch"))
        if (self.root / SCRATCH).exists():
            remove_tree(self.root / SCRATCH)
        outcome = next((p for p in reversed(self.history()) if entry.get("id") and p.step == entry["id"]), None)
        target = entry.get("target")
        what = f"{entry.get('action', 'step')} of v{target} by pid {entry.get('pid', '?')}"
        if outcome is None and isinstance(target, int) and target in {r.number for r in self.store.releases()}:
            previous = self.current()
            self.record(
                str(entry.get("action", "promote")),
                previous,
                self.store.get(target),
                f"failed: interrupted ({len(entry.get('steps', []))} changes made); undone by pid {os.getpid()}",
                step=str(entry.get("id", "")),
            )
            done = f"undid the interrupted {what}"
        else:
            done = f"finished the interrupted {what}"
        report(done)
        self.reconcile(self.current(), client, report)
        self.journal.clear()
        return done

    def reconcile(self, release: Release | None, client: Any | None, report: Report, *, journal: bool = False) -> None:
        """Make ``live/`` (and Triton, when ``client`` is given) serve exactly ``release``.

        Loads only models whose served version or config differs, so reconciling a Triton that
        already matches changes nothing it serves. A promotion is this with the target release;
        undoing one is this with the previous release. ``journal`` adds each change to the journal.

        Raises:
            ServerError: a load or unload failed.
            VerifyError: the release's files no longer match its lock (nothing is loaded).
        """
        number = release.number if release is not None else None
        # Re-hashed, not only its lock compared: live/ hard-links the release's files, so an edit
        # made in place in live/ is an edit of the store's copy, and must not be loaded again.
        source = self.store.verified(number) if number is not None else None
        wanted = repository_models(source) if source is not None else []
        if client is not None:
            self._reload(client, release, wanted, report, journal)
        for model in wanted:  # what was not reloaded (already served right, or no server) gets its files
            assert source is not None and number is not None
            self._install(source, model, number, [number])
        if self.live.exists():
            for directory in sorted(self.live.iterdir()):
                if directory.name not in wanted:
                    remove_tree(directory) if directory.is_dir() else directory.unlink()
                    continue
                for entry in directory.iterdir():
                    if entry.is_dir() and entry.name != str(number):
                        remove_tree(entry)

    def _reload(self, client: Any, release: Release | None, wanted: list[str], report: Report, journal: bool) -> None:
        """Switch Triton to ``release`` so that one ensemble request never runs steps of two
        releases, nor an old step under the new release's config.

        (0) each old step version a served ensemble runs and Triton would re-create under the
        new config gets a stand-in (:class:`Holdover`), and the served ensembles run the
        stand-ins; (1) models that differ load the release's version -- an old step version that
        Triton keeps as it is stays loaded beside it; (2) the ensembles load, their steps pinned
        to the release's version; (3) the old versions kept in (1) are retired. Then models
        outside the release, stand-ins included, are unloaded. Unversioned requests to a model go
        to its newest loaded version, so each is answered by one release too.

        Each model's files and config go into ``live/`` just before its own load, never earlier:
        Triton re-reads the configs on disk of an ensemble's steps (and reloads the ensembles over
        a step) whenever it loads one of them."""
        versions, configs = served(client)
        expected = self._expected(release)
        number = release.number if release is not None else 0
        source = self.store.path(number) if release is not None else self.live
        ensembles = [m for m in wanted if expected[m].get("platform") == "ensemble"]
        held = holdovers(self.live, source, number, wanted, versions)
        stand_ins = {(h.model, h.version): h.stand_in for h in held if h.stand_in}
        kept: dict[str, list[int]] = {}
        for holdover in held:
            if holdover.stand_in is None:
                kept.setdefault(holdover.model, []).append(holdover.version)

        def load(model: str, loaded: list[int], message: str, install: Callable[[], None]) -> None:
            report(message)
            install()
            load_model(client, model, context=f"version {', '.join(str(v) for v in loaded)}")
            if journal:
                self.journal.step(f"loaded {model}/{loaded}")
            report(f"loaded {model} version {', '.join(str(v) for v in loaded)}")

        def changed(model: str) -> bool:  # this model only: the others' versions are not its differences
            return bool(differences({model: expected[model]}, number, {model: versions.get(model, set())}, configs, {}))

        def switch(model: str, loaded: list[int], message: str) -> None:
            load(model, loaded, message, lambda: self._install(source, model, number, loaded))

        for holdover in held:
            if holdover.stand_in is not None:
                message = f"standing in for {holdover.model} version {holdover.version} while it switches"
                load(
                    holdover.stand_in,
                    [holdover.version],
                    message,
                    partial(install_stand_in, self.live, self.live, holdover),
                )
        for model in ensembles_running(self.live, stand_ins):
            text = repoint((self.live / model / "config.pbtxt").read_bytes(), stand_ins)
            point = partial(write_config, text, self.live / model / "config.pbtxt")
            load(model, sorted(versions.get(model, set())), f"pointing ensemble {model} at the stand-ins", point)
        for model in wanted:
            if model in ensembles or not changed(model):
                continue
            switch(model, sorted({number, *kept.get(model, [])}), f"loading {model} version {number}")
        for model in ensembles:
            if changed(model) or held:
                switch(model, [number], f"switching ensemble {model} to version {number}")
        for model in kept:
            switch(model, [number], f"retiring the old versions of {model}")
        outside = [m for m in sorted(versions) if m not in wanted and versions[m] and m not in stand_ins.values()]
        for model in outside + sorted(set(stand_ins.values())):  # stand-ins last: an ensemble may still run them
            report(f"unloading {model}")
            unload_model(client, model)
            if journal:
                self.journal.step(f"unloaded {model}")

    def _scratch(self, source: Path, number: int, held: list[Holdover]) -> Path:
        """An empty :data:`SCRATCH` directory with release ``number`` laid out for the proof."""
        root = self.root / SCRATCH
        if root.exists():
            remove_tree(root)
        root.mkdir()
        return switch_layout(self.live, root, source, number, held)

    def drift(self, release: Release | None, client: Any | None) -> list[str]:
        """Differences between the record (``release``) and Triton (when reachable) and ``live/``."""
        expected = self._expected(release)
        number = release.number if release is not None else None
        live_problems: dict[str, str] = {}
        for model in expected:
            directory = self.live / model
            if not (directory / str(number)).is_dir():
                live_problems[model] = f"{directory / str(number)} is missing"
                continue
            others = sorted(e.name for e in directory.iterdir() if e.is_dir() and e.name != str(number))
            if others:
                live_problems[model] = f"live/ also holds version {', '.join(others)}"
            elif read_bytes(directory / "config.pbtxt") != self._live_text(model, number or 0):
                live_problems[model] = "live/ config.pbtxt is not the release's"
        if self.live.exists():
            for extra in sorted(p.name for p in self.live.iterdir() if p.name not in expected):
                live_problems[extra] = "live/ holds a model that is not part of the record"
        if client is None:
            return differences({}, number, {}, {}, live_problems)
        versions, configs = served(client)
        return differences(expected, number, versions, configs, live_problems)

    def _check_analysable(self, canary: int | None, steps: Sequence[int] | None) -> None:
        """One whole switch only: no canary, no traffic steps below 100 %."""
        if canary is not None:
            raise UsageError(
                "a canary needs a KServe Serverless environment", hint="the local environment switches whole releases"
            )
        plan_steps(steps, split=False)

    def _rollout(
        self, number: int, previous: Release, seconds: float, steps: Sequence[int] | None, intent: Intent,
        judged: list[Step], progress: Progress | None,
    ) -> Rollout:  # fmt: skip
        """A walk of one step at 100 %: the switch; the baseline is the previous release's
        answers since it was loaded, read from Triton just before the switch; the new release's
        window is watched forward from the switch (``read`` scrapes for ``seconds``, so the walk's
        own wait is a no-op)."""

        def shift(percent: int) -> None:
            rollout.entries.append(self._switch(number, canary=None, progress=progress, action="promote"))

        def restore() -> None:
            self._switch(previous.number, canary=None, progress=progress, action=evidence(number, judged[-1]))

        def read(side: Side) -> Reads:
            if side == "previous":
                now = scrape(self.metrics_url)
                since_load = ModelCounters(now.at, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
                return {name: (since_load, model_counters(now, name, version=previous.number)) for name in intent}
            scrapes = watch(self.metrics_url, seconds)
            return {name: window_counters(scrapes, name, version=number) for name in intent}

        rollout = Rollout(steps=plan_steps(steps, split=False), shift=shift, restore=restore, read=read,
                          sleep=lambda _: None)  # fmt: skip
        return rollout

    # ------------------------------------------------------------------ internals

    def _expected(self, release: Release | None) -> dict[str, dict[str, Any]]:
        if release is None:
            return {}
        models = repository_models(self.store.path(release.number))
        return {model: config_json(self._live_text(model, release.number)) for model in models}

    def _live_text(self, model: str, number: int) -> bytes:
        return live_config(self.store.path(number), model, number, [number])

    def _install(self, source: Path, model: str, number: int, versions: list[int]) -> None:
        """Release ``number``'s version directory (hard links) and its config, serving ``versions``,
        in ``live/<model>``; files already right are left alone."""
        version_dir = self.prepare() / model / str(number)
        if not version_dir.exists():
            link_tree(source / model / str(number), version_dir)
        config = self.live / model / "config.pbtxt"
        text = live_config(source, model, number, versions)
        if read_bytes(config) != text:
            write_config(text, config)
