"""Promotion of releases to the local environment: a transaction on a running Triton.

The **local** target switches a running Triton from one release to another without a restart
and without failing requests. The environment lives in the release store::

    releases/envs/local/
      live/            the repository the local Triton serves (a mutable view of immutable releases)
      history.jsonl    one JSON line per promotion or rollback, never rewritten
      lock             held while a step runs (who: pid, user, since) — :mod:`.transaction`
      journal.json     exists only while a step is unfinished — :mod:`.transaction`

A promotion of ``vN``:

1. takes the environment's lock (a second promote or rollback waits, then names the holder),
   and finishes any step a killed process left in the journal (:meth:`recover`);
2. **proves** ``vN`` where no client can reach it: a scratch Triton on free ports loads and warms
   up every model of the release directory; a model that fails there fails the promotion before
   anything clients see has changed (zero requests answered by a release that fails);
3. writes the journal (target, previous, then one line per change);
4. hard-links each model's version directory ``N`` into ``live/`` and reloads the model through
   ``POST v2/repository/models/<m>/load`` with the release's config and ``version_policy:
   specific [N]``: Triton loads and warms up version N while the old version keeps serving, then
   retires it, so clients that do not pin a version never see an error. Models load before the
   ensembles that run them; each config on disk is replaced just before its load (Triton checks
   an ensemble against its steps' configs on disk);
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
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from tritonkit.artifact.layout import remove_tree
from tritonkit.build.pbtxt import parse
from tritonkit.build.verify import require_verified
from tritonkit.deploy.drift import differences
from tritonkit.deploy.environment import HISTORY, Environment, Promotion, Status, _user
from tritonkit.deploy.transaction import EnvironmentLock, Journal
from tritonkit.errors import PromoteError, ServerError, TritonkitError, UsageError
from tritonkit.events import Progress
from tritonkit.release.store import Release, ReleaseStore
from tritonkit.serve.repository_api import load_model, unload_model
from tritonkit.serve.server import Endpoints, TritonServer, free_port, repository_models

Report = Any  # Callable[[str], None]


class LocalEnvironment(Environment):
    """The ``local`` environment of a release store: a tritonkit-served Triton on this machine.

    Args:
        store: the release store.
        url: HTTP address of the Triton that serves :attr:`live` (``tritonkit serve --env local``).
        lock_timeout: seconds a promote, rollback or repair waits for another one to finish.
        prove: load every model on a scratch Triton before switching (off only for tests of
            what happens without it).
    """

    def __init__(
        self, store: ReleaseStore, *, url: str = "127.0.0.1:8000", lock_timeout: float = 120.0, prove: bool = True
    ) -> None:
        super().__init__(store, "local")
        self.url = url
        self.live = self.root / "live"
        self.journal = Journal(self.root)
        self.lock_timeout = lock_timeout
        self.prove = prove

    def prepare(self) -> Path:
        """Create ``live/`` (empty until the first promotion) and return it."""
        self.live.mkdir(parents=True, exist_ok=True)
        return self.live

    def serving_root(self) -> Path:
        """``live/``: what ``tritonkit serve --env local`` serves and promotions switch."""
        return self.prepare()

    def lock(self, what: str, *, timeout: float | None = None) -> EnvironmentLock:
        """The environment's lock (a context manager); see :class:`.transaction.EnvironmentLock`."""
        return EnvironmentLock(self.root, what, timeout=self.lock_timeout if timeout is None else timeout, user=_user())

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
        with self.lock(f"{action} v{number}"):
            client = _connect(self.url)
            try:
                self._recover(client, report)
                return self._switch_locked(client, number, action, report)
            finally:
                client.close()

    def rollback_target(self) -> int:
        with self.lock("rollback", timeout=self.lock_timeout):
            self._recover(_try_connect(self.url), lambda _: None)
        return super().rollback_target()

    def status(self) -> Status:
        """The recorded release, history, and every difference between the record and Triton.

        Finishes or undoes a step a killed process left behind first (unless one is running).
        Differences include ``live/`` on disk; when Triton cannot be reached, that is said in
        ``note`` and only ``live/`` is compared.
        """
        client = _try_connect(self.url)
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
            client = _try_connect(self.url)
            try:
                self._recover(client, report)
                current = self.current()
                found = self.drift(current, client)
                self.reconcile(current, client, report)
            finally:
                if client is not None:
                    client.close()
        if client is None:
            _connect(self.url)  # raises the usual "cannot reach" error, after fixing live/
        return found

    def recover(self, *, progress: Progress | None = None) -> str | None:
        """Finish or undo a step a killed process left in the journal; None when there was none.

        Called by ``serve --env local`` before Triton starts (it then loads what ``live/`` holds).
        """
        with self.lock("recovery"):
            return self._recover(_try_connect(self.url), self._reporter(progress, "recover"))

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
        scratch = Endpoints("127.0.0.1", free_port(), free_port(), free_port())
        self.journal.begin(
            {
                "id": step,
                "action": action,
                "target": number,
                "previous": previous.number if previous else None,
                "scratch": {"repository": str(source.resolve()), "http_port": scratch.http_port},
            }
        )
        report("journal written")
        models = repository_models(source)  # ensembles last: Triton resolves their steps when loading them
        try:
            if self.prove:
                report(f"proving {target.name} on a scratch Triton (clients cannot reach it)")
                with TritonServer(source, endpoints=scratch):
                    pass
                self.journal.step(f"proved {target.name}")
            for model in models:
                report(f"loading {model} version {number} (with warm-up)")
                self._install(source, model, number)
                self.journal.step(f"installed {model}/{number}")
                _load(client, model, source / model / "config.pbtxt", number)
                self.journal.step(f"loaded {model}/{number}")
                report(f"loaded {model} version {number}")
        except TritonkitError as exc:
            report(f"{target.name} failed; putting {previous.name if previous else 'nothing'} back")
            with contextlib.suppress(TritonkitError):  # the failure to report is the first one
                self.reconcile(previous, client, report)
            self.record(action, previous, target, f"failed: {exc.message}", step=step)
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

    def _recover(self, client: Any | None, report: Report) -> str | None:
        """Under the lock: close the journal's step (recording it as interrupted if its outcome
        never reached the history) and reconcile to what the history says is served."""
        entry = self.journal.read()
        if entry is None:
            return None
        _kill_scratch(entry.get("scratch"))
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

    def reconcile(self, release: Release | None, client: Any | None, report: Report) -> None:
        """Make ``live/`` (and Triton, when ``client`` is given) serve exactly ``release``.

        Loads only models whose served version or config differs, so reconciling a Triton that
        already matches changes nothing it serves.

        Raises:
            ServerError: a load or unload failed.
        """
        number = release.number if release is not None else None
        source = self.store.path(number) if number is not None else None
        wanted = repository_models(source) if source is not None else []
        for model in wanted:
            assert source is not None and number is not None
            self._install(source, model, number)
        if client is not None:
            versions, configs = _served(client)
            expected = self._expected(release)
            for model in wanted:
                assert number is not None
                if differences({model: expected[model]}, number, versions, configs, {}):
                    report(f"reloading {model} at version {number}")
                    _load(client, model, self.live / model / "config.pbtxt", number)
            for model in sorted(set(versions) - set(wanted)):
                if versions[model]:
                    report(f"unloading {model}")
                    unload_model(client, model)
        if self.live.exists():
            for directory in sorted(self.live.iterdir()):
                if directory.name not in wanted:
                    remove_tree(directory) if directory.is_dir() else directory.unlink()
                    continue
                for entry in directory.iterdir():
                    if entry.is_dir() and entry.name != str(number):
                        remove_tree(entry)

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
            elif _read(directory / "config.pbtxt") != _read(self.store.path(number or 0) / model / "config.pbtxt"):
                live_problems[model] = "live/ config.pbtxt is not the release's"
        if self.live.exists():
            for extra in sorted(p.name for p in self.live.iterdir() if p.name not in expected):
                live_problems[extra] = "live/ holds a model that is not part of the record"
        if client is None:
            return differences({}, number, {}, {}, live_problems)
        versions, configs = _served(client)
        return differences(expected, number, versions, configs, live_problems)

    # ------------------------------------------------------------------ internals

    def _expected(self, release: Release | None) -> dict[str, dict[str, Any]]:
        if release is None:
            return {}
        source = self.store.path(release.number)
        return {model: _config_json(source / model / "config.pbtxt") for model in repository_models(source)}

    def _install(self, source: Path, model: str, number: int) -> None:
        """The release's version directory (hard links) and config in ``live/<model>``."""
        version_dir = self.prepare() / model / str(number)
        if not version_dir.exists():
            _link_tree(source / model / str(number), version_dir)
        config = self.live / model / "config.pbtxt"
        if _read(config) != _read(source / model / "config.pbtxt"):
            _install_config(source / model / "config.pbtxt", config)


def _connect(url: str) -> Any:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, network_timeout=300.0)
    try:
        live = client.is_server_live()
    except Exception as exc:
        client.close()
        raise ServerError(
            f"cannot reach the local Triton at {url}: {exc}", hint="start it with 'tritonkit serve --env local'"
        ) from exc
    if not live:
        client.close()
        raise ServerError(f"Triton at {url} is not live", hint="check 'tritonkit serve --env local'")
    return client


def _try_connect(url: str) -> Any | None:
    try:
        return _connect(url)
    except ServerError:
        return None


def _served(client: Any) -> tuple[dict[str, set[int]], dict[str, dict[str, Any]]]:
    """Triton's ready versions per model (repository index) and each ready model's config."""
    versions: dict[str, set[int]] = {}
    for item in client.get_model_repository_index():
        name = item.get("name", "")
        versions.setdefault(name, set())
        if item.get("state") == "READY" and str(item.get("version", "")).isdigit():
            versions[name].add(int(item["version"]))
    configs = {name: client.get_model_config(name) for name, found in versions.items() if found}
    return versions, configs


def _config_json(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        json_format.MessageToJson(parse(path.read_text()), preserving_proto_field_name=True)
    )
    return result


def _load(client: Any, model: str, config_file: Path, version: int) -> None:
    config = _config_json(config_file)
    config["version_policy"] = {"specific": {"versions": [version]}}
    load_model(client, model, config, context=f"version {version}")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _install_config(source: Path, target: Path) -> None:
    """Copy a config.pbtxt into the live repository atomically (read-only)."""
    temp = target.with_name(".config.pbtxt.new")
    temp.unlink(missing_ok=True)
    shutil.copyfile(source, temp)
    os.chmod(temp, 0o444)
    os.replace(temp, target)


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link ``source`` into ``target`` (copy where links cannot cross filesystems), atomically:
    a killed copy leaves a hidden temporary directory, never a half-filled version directory."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    temp = target.with_name(f".{target.name}.new")
    if temp.exists():
        remove_tree(temp)
    shutil.copytree(source, temp, copy_function=link)
    os.rename(temp, target)


def _kill_scratch(scratch: Any) -> None:
    """Kill a scratch Triton a killed promotion left running (found by its repository and port)."""
    if not isinstance(scratch, dict):
        return
    marks = (f"--model-repository={scratch.get('repository')}", f"--http-port={scratch.get('http_port')}")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(mark.encode() in args for mark in marks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(proc.name), signal.SIGKILL)  # its own session: the stubs go with it
