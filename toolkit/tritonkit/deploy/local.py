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

KServe environments are in :mod:`tritonkit.deploy.kserve`; :func:`environment` picks one by name.

Example:
    >>> env = LocalEnvironment(ReleaseStore(Path("releases")), url="127.0.0.1:8000")
    >>> env.promote(2)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from tritonkit.artifact.layout import remove_tree
from tritonkit.artifact.lock import read_lock
from tritonkit.build.pbtxt import parse
from tritonkit.build.verify import require_verified
from tritonkit.deploy.analysis import Verdict, analyse
from tritonkit.deploy.environment import HISTORY, Environment, Promotion
from tritonkit.errors import PromoteError, ServerError, TritonkitError, UsageError
from tritonkit.events import Progress
from tritonkit.release.store import Release, ReleaseStore
from tritonkit.serve.metrics import model_counters, scrape
from tritonkit.serve.repository_api import load_model, unload_model
from tritonkit.serve.server import repository_models
from tritonkit.spec.intent import Capacity, Slo


class LocalEnvironment(Environment):
    """The ``local`` environment of a release store: a tritonkit-served Triton on this machine.

    Args:
        store: the release store.
        url: HTTP address of the Triton that serves :attr:`live` (``tritonkit serve --env local``).
    """

    analysable = True

    def __init__(self, store: ReleaseStore, *, url: str = "127.0.0.1:8000", metrics_url: str | None = None) -> None:
        super().__init__(store, "local")
        self.url = url
        self.metrics_url = metrics_url or f"http://{url.rsplit(':', 1)[0]}:8002/metrics"
        self.live = self.root / "live"

    def prepare(self) -> Path:
        """Create ``live/`` (empty until the first promotion) and return it."""
        self.live.mkdir(parents=True, exist_ok=True)
        return self.live

    def serving_root(self) -> Path:
        """``live/``: what ``tritonkit serve --env local`` serves and promotions switch."""
        return self.prepare()

    def _switch(self, number: int, *, canary: int | None, progress: Progress | None, action: str) -> Promotion:
        """Switch the Triton at :attr:`url` (serving :attr:`live`) to release ``number``.

        Raises:
            UsageError: unknown release, already served, or a canary (the local target switches whole).
            ServerError: the server cannot be reached.
            PromoteError: a model failed to load or warm up (the previous release serves on).
        """
        if canary is not None:
            raise UsageError(
                "a canary needs a KServe Serverless environment", hint="the local environment switches whole releases"
            )
        url = self.url
        report = self._reporter(progress, action)
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

    def _watch(self, number: int, seconds: float, report: Callable[[str], None]) -> list[Verdict]:
        """Two reads of Triton's metrics :attr:`metrics_url`, ``seconds`` apart, judged per model
        against the SLO and capacity the release's lock carries (models without an SLO are skipped)."""
        intent = {
            name: (Slo(**entry["slo"]), Capacity(**entry["capacity"]) if "capacity" in entry else None)
            for name, entry in read_lock(self.store.path(number)).models.items()
            if "slo" in entry
        }
        if not intent:
            report(f"v{number} declares no SLO: nothing to analyse")
            return []
        first = scrape(self.metrics_url)
        report(f"watching v{number} under traffic for {seconds:.0f}s")
        time.sleep(seconds)
        last = scrape(self.metrics_url)
        return [
            analyse(name, model_counters(first, name, version=number), model_counters(last, name, version=number),
                    slo=slo, capacity=capacity)
            for name, (slo, capacity) in sorted(intent.items())
        ]  # fmt: skip

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
                unload_model(client, model)
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
                    unload_model(client, model)
                    remove_tree(self.live / model)
            finally:
                client.close()


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
    config = json.loads(json_format.MessageToJson(parse(config_file.read_text()), preserving_proto_field_name=True))
    config["version_policy"] = {"specific": {"versions": [version]}}
    load_model(client, model, config, context=f"version {version}")


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
