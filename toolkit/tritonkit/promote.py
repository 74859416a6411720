"""Promotion of releases to an environment, with an append-only history.

The **local** target switches a running Triton from one release to another without a restart
and without failing requests. The environment lives in the release store::

    releases/envs/local/
      live/            the repository the local Triton serves (a mutable view of immutable releases)
      history.jsonl    one JSON line per promotion or rollback, never rewritten

To promote ``vN``, each model's version directory ``N`` is hard-linked from the release into
``live/``, then the model is reloaded through ``POST v2/repository/models/<m>/load`` with the
release's config and ``version_policy: specific [N]``. Triton loads and warms up version N
while the old version keeps serving, then retires the old one — clients that do not pin a
version never see an error. Models load before the ensembles that run them, and each model's
config on disk is replaced just before its load (Triton checks an ensemble against its steps'
configs on disk). If any model fails to load or warm up, the models already switched get their
previous config back and are reloaded at their previous version, the new directories are
removed, and the failure is recorded; the old release keeps serving. Only after every model
switched are the old version directories removed.

KServe environments are in :mod:`tritonkit.promote_kserve`; :func:`environment` picks one by name.

Example:
    >>> env = LocalEnvironment(ReleaseStore(Path("releases")))
    >>> env.promote(2, url="127.0.0.1:8000")
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from .errors import PromoteError, ServerError, SpecError, TritonkitError
from .pbtxt import parse
from .releases import Release, ReleaseStore, parse_release
from .repository import remove_tree
from .server import repository_models
from .spec import Spec
from .verify import verify

HISTORY = "history.jsonl"


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

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class History:
    """An environment's append-only promotion history and what it says is served."""

    name: str

    def __init__(self, store: ReleaseStore, name: str) -> None:
        self.store, self.name = store, name
        self.root = store.root / "envs" / name

    def history(self) -> list[Promotion]:
        """Every promotion and rollback, oldest first."""
        path = self.root / HISTORY
        if not path.is_file():
            return []
        return [Promotion(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]

    def current(self) -> Release | None:
        """The release the environment serves: the target of the last successful step."""
        done = [p for p in self.history() if p.ok]
        return self.store.get(parse_release(done[-1].to_release)) if done else None

    def rollback_target(self) -> int:
        """The release served before the current one.

        Raises:
            SpecError: nothing to roll back to.
        """
        done = [p for p in self.history() if p.ok]
        if not done or done[-1].from_release is None:
            raise SpecError(f"{self.name} has no earlier release to roll back to", hint="see 'tritonkit status'")
        return parse_release(done[-1].from_release)

    def record(self, action: str, previous: Release | None, target: Release, outcome: str) -> Promotion:
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
        )
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / HISTORY, "a") as handle:  # append-only: one line per step
            handle.write(json.dumps(asdict(entry), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return entry


class LocalEnvironment(History):
    """The ``local`` environment of a release store: a tritonkit-served Triton on this machine."""

    def __init__(self, store: ReleaseStore) -> None:
        super().__init__(store, "local")
        self.live = self.root / "live"

    def prepare(self) -> Path:
        """Create ``live/`` (empty until the first promotion) and return it."""
        self.live.mkdir(parents=True, exist_ok=True)
        return self.live

    def promote(
        self,
        number: int,
        *,
        url: str,
        action: str = "promote",
        progress: Callable[[str], None] | None = None,
    ) -> Promotion:
        """Switch the Triton at ``url`` (HTTP, serving :attr:`live`) to release ``number``.

        Raises:
            SpecError: unknown release.
            ServerError: the server cannot be reached.
            PromoteError: a model failed to load or warm up (the previous release serves on).
        """
        report = progress or (lambda message: None)
        target = self.store.get(number)
        previous = self.current()
        if previous is not None and previous.number == number:
            raise SpecError(f"{self.name} already serves {target.name}", hint="nothing to do")
        source = self.store.path(number)
        checked = verify(source)
        if not checked.ok:
            raise PromoteError(
                f"{target.name} in {self.store.root} failed verification ({checked.findings[0]}); not promoted",
                hint="the release store was modified; restore it or release a fresh build",
            )
        client = _connect(url)
        models = repository_models(source)  # ensembles last: Triton resolves their steps when loading them
        added: list[Path] = []
        switched: list[str] = []  # models whose live config now is the target's (loaded or not)
        try:
            for model in models:
                version_dir = self.prepare() / model / str(number)
                if not version_dir.exists():
                    _link_tree(source / model / str(number), version_dir)
                    added.append(version_dir)
            for model in models:
                report(f"loading {model} version {number} (with warm-up)")
                # Triton checks an ensemble against its steps' configs *on disk*, so the live config
                # is replaced before each load (and put back by _undo).
                switched.append(model)
                _install_config(source / model / "config.pbtxt", self.live / model / "config.pbtxt")
                _load(client, model, source / model / "config.pbtxt", number)
        except TritonkitError as exc:
            self._undo(client, switched, previous, added, report)
            self.record(action, previous, target, f"failed: {exc.message}")
            raise PromoteError(
                f"{target.name} was not promoted to {self.name}: {exc.message}",
                hint=f"{previous.name if previous else 'nothing'} still serves; history: {self.root / HISTORY}",
            ) from exc
        finally:
            client.close()
        self._settle(target, previous, models, url, report)
        return self.record(action, previous, target, "ok")

    def rollback(self, *, url: str, progress: Callable[[str], None] | None = None) -> Promotion:
        """Promote the release that served before the current one.

        Raises:
            SpecError: nothing to roll back to.
        """
        return self.promote(self.rollback_target(), url=url, action="rollback", progress=progress)

    # ------------------------------------------------------------------ internals

    def _undo(
        self,
        client: Any,
        switched: list[str],
        previous: Release | None,
        added: list[Path],
        report: Callable[[str], None],
    ) -> None:
        old = self.store.path(previous.number) if previous is not None else None
        for model in reversed(switched):
            if old is not None and previous is not None and model in previous.models:
                report(f"reloading {model} at version {previous.number}")
                _install_config(old / model / "config.pbtxt", self.live / model / "config.pbtxt")
                _load(client, model, old / model / "config.pbtxt", previous.number)
            else:
                (self.live / model / "config.pbtxt").unlink(missing_ok=True)
                client.unload_model(model)
        for path in added:
            remove_tree(path)
            if path.parent.exists() and not any(path.parent.iterdir()):
                path.parent.rmdir()

    def _settle(
        self, target: Release, previous: Release | None, models: list[str], url: str, report: Callable[[str], None]
    ) -> None:
        """After every model switched: old version directories gone, dropped models unloaded."""
        for model in models:
            for entry in (self.live / model).iterdir():
                if entry.is_dir() and entry.name != str(target.number):
                    remove_tree(entry)
        dropped = sorted(set(previous.models) - set(target.models)) if previous else []
        if dropped:
            client = _connect(url)
            try:
                for model in dropped:
                    report(f"unloading {model} (not in {target.name})")
                    client.unload_model(model)
                    remove_tree(self.live / model)
            finally:
                client.close()


def environment(store: ReleaseStore, name: str, spec: Spec | None = None) -> History:
    """``local``, or the KServe environment ``name`` declared in ``spec``.

    Raises:
        SpecError: an environment the spec does not declare (with a suggestion).
    """
    if name == "local":
        return LocalEnvironment(store)
    if spec is None:
        raise SpecError(f"environment '{name}' needs the spec that declares it", hint="pass -f tritonkit.yaml")
    from .promote_kserve import KServeEnvironment

    return KServeEnvironment(store, spec, spec.environment(name))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


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


def _load(client: Any, model: str, config_file: Path, version: int) -> None:
    from tritonclient.utils import InferenceServerException

    config = json.loads(json_format.MessageToJson(parse(config_file.read_text()), preserving_proto_field_name=True))
    config["version_policy"] = {"specific": {"versions": [version]}}
    try:
        client.load_model(model, config=json.dumps(config))
    except InferenceServerException as exc:
        raise ServerError(f"model '{model}' version {version} failed to load: {exc.message()}") from exc


def _install_config(source: Path, target: Path) -> None:
    """Copy a config.pbtxt into the live repository atomically (read-only)."""
    temp = target.with_name(".config.pbtxt.new")
    shutil.copyfile(source, temp)
    os.chmod(temp, 0o444)
    os.replace(temp, target)


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link ``source`` into ``target`` (copy where links cannot cross filesystems)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)
