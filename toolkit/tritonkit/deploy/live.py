"""The live repository of a local environment and the Triton behind it: the helpers promotion uses.

``live/<model>/`` holds hard links to release version directories and a ``config.pbtxt`` that
says exactly what Triton loads: the release's config, an ensemble's steps pinned to the release's
version, and ``version_policy { specific { versions: [...] } }``. Loads read that file (no config
override), because Triton re-reads the on-disk config of an ensemble's steps whenever it loads the
ensemble: an override that differs from the file is silently replaced by the file's content then.

Example:
    >>> text = live_config(Path("releases/v3"), "classify", 3, [3])
    >>> write_config(text, Path("releases/envs/local/live/classify/config.pbtxt"))
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from tritonkit.artifact.layout import remove_tree
from tritonkit.build.pbtxt import parse, render
from tritonkit.errors import ServerError


def connect(url: str) -> Any:
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


def try_connect(url: str) -> Any | None:
    try:
        return connect(url)
    except ServerError:
        return None


def served(client: Any) -> tuple[dict[str, set[int]], dict[str, dict[str, Any]]]:
    """Triton's ready versions per model (repository index) and each ready model's config."""
    versions: dict[str, set[int]] = {}
    for item in client.get_model_repository_index():
        name = item.get("name", "")
        versions.setdefault(name, set())
        if item.get("state") == "READY" and str(item.get("version", "")).isdigit():
            versions[name].add(int(item["version"]))
    configs = {name: client.get_model_config(name) for name, found in versions.items() if found}
    return versions, configs


def config_json(text: bytes | str) -> dict[str, Any]:
    """A config.pbtxt's content as the JSON Triton's config API speaks."""
    source = text.decode() if isinstance(text, bytes) else text
    result: dict[str, Any] = json.loads(json_format.MessageToJson(parse(source), preserving_proto_field_name=True))
    return result


def live_config(source: Path, model: str, number: int, versions: list[int]) -> bytes:
    """The config ``live/<model>`` gets for release ``number`` (at ``source``) serving ``versions``:
    the release's, with ``version_policy: specific`` and an ensemble's steps pinned to ``number``
    (the release builds them with ``model_version: -1``, "the newest loaded")."""
    config = parse((source / model / "config.pbtxt").read_text())
    for step in config.ensemble_scheduling.step:
        step.model_version = number
    config.version_policy.specific.versions[:] = versions
    return render(config).encode()


STAND_IN = ".standin-v"
"""What joins a model's name and an old version in the name of its stand-in (:func:`stand_in_config`)."""


def pinned_steps(repository: Path) -> dict[str, set[int]]:
    """The versions the ensembles in ``repository`` run each of their steps at (model -> versions;
    ``-1``, "the newest loaded", where a step is not pinned)."""
    steps: dict[str, set[int]] = {}
    for path in repository.glob("*/config.pbtxt"):
        text = path.read_text(errors="replace")
        if 'platform: "ensemble"' in text:
            for step in parse(text).ensemble_scheduling.step:
                steps.setdefault(step.model_name, set()).add(int(step.model_version))
    return steps


def reloads(old: bytes | None, new: bytes) -> bool:
    """Whether Triton re-creates a loaded version of a model whose config goes from ``old`` to
    ``new``, rather than updating it in place.

    Triton's rule (``model_config_utils.cc`` ``ConfigChangeRequiresReload``, used by
    ``model_lifecycle.cc`` ``AsyncLoad``): any difference outside ``instance_group`` and
    ``version_policy`` re-creates every version the load keeps, so an old version kept loaded beside
    the new one would run under the new release's config. Triton compares the configs it
    completed; with auto-complete off both are the files plus the same defaults.
    """
    if old is None:
        return True
    before, after = parse(old.decode()), parse(new.decode())
    for config in (before, after):
        config.ClearField("instance_group")
        config.ClearField("version_policy")
    return bool(before != after)


def stand_in_config(text: bytes, model: str, version: int) -> tuple[str, bytes]:
    """The name and config of the stand-in for version ``version`` of ``model`` (served with
    config ``text``): the same files and config under another name, serving that version only."""
    name = f"{model}{STAND_IN}{version}"
    config = parse(text.decode())
    config.name = name
    config.version_policy.specific.versions[:] = [version]
    return name, render(config).encode()


def repoint(text: bytes, stand_ins: dict[tuple[str, int], str]) -> bytes:
    """An ensemble's config with each step that runs a model at a version with a stand-in
    (``(model, version) -> name``) running the stand-in instead."""
    config = parse(text.decode())
    for step in config.ensemble_scheduling.step:
        step.model_name = stand_ins.get((step.model_name, int(step.model_version)), step.model_name)
    return render(config).encode()


@dataclass(frozen=True)
class Holdover:
    """An old version of an ensemble step that stays loaded while a switch runs, because an
    ensemble served right now runs it.

    Attributes:
        model: the step model.
        version: the old version the served ensemble runs.
        stand_in: None where Triton keeps the old version as it is beside the new one (their
            configs differ at most in instances and versions); else the name the old version
            and its own config are loaded under meanwhile, with the served ensembles pointed at
            it -- Triton keeps one config per model and would re-create the old version under
            the new release's (:func:`reloads`).
    """

    model: str
    version: int
    stand_in: str | None


def holdovers(
    live: Path, source: Path, number: int, wanted: list[str], versions: dict[str, set[int]]
) -> list[Holdover]:
    """The old versions that stay loaded while Triton (serving ``live``, ready ``versions``)
    switches to release ``number`` at ``source``: those of the models in ``wanted`` that an
    ensemble in ``live`` runs."""
    pins = pinned_steps(live)
    found = []
    for model in wanted:
        loaded = versions.get(model, set()) - {number}
        pinned = loaded if -1 in pins.get(model, set()) else loaded & pins.get(model, set())
        old = sorted(v for v in pinned if (live / model / str(v)).is_dir())
        if not old:
            continue
        apart = reloads(read_bytes(live / model / "config.pbtxt"), live_config(source, model, number, [number]))
        found += [Holdover(model, v, f"{model}{STAND_IN}{v}" if apart else None) for v in old]
    return found


def ensembles_running(live: Path, stand_ins: dict[tuple[str, int], str]) -> list[str]:
    """The ensembles in ``live`` with a step that runs a model version that has a stand-in."""
    found = []
    for config in sorted(live.glob("*/config.pbtxt")):
        text = config.read_text(errors="replace")
        if 'platform: "ensemble"' in text:
            runs = {(s.model_name, int(s.model_version)) for s in parse(text).ensemble_scheduling.step}
            if runs & set(stand_ins):
                found.append(config.parent.name)
    return found


def install_stand_in(live: Path, repository: Path, holdover: Holdover) -> None:
    """Put ``holdover``'s stand-in into ``repository``: the old version's files in ``live`` (hard
    links) and the config it is served with right now, under the stand-in's name."""
    assert holdover.stand_in is not None
    name, text = stand_in_config(
        (live / holdover.model / "config.pbtxt").read_bytes(), holdover.model, holdover.version
    )
    version_dir = repository / name / str(holdover.version)
    if not version_dir.exists():
        link_tree(live / holdover.model / str(holdover.version), version_dir)
    if read_bytes(repository / name / "config.pbtxt") != text:
        write_config(text, repository / name / "config.pbtxt")


def switch_layout(live: Path, root: Path, source: Path, number: int, holdovers: list[Holdover]) -> Path:
    """Write into the empty directory ``root`` release ``number`` (at ``source``) laid out as
    ``live`` will hold it while a switch to it runs: the live configs (steps pinned, versions
    named), the old step versions kept beside the new ones, and the stand-ins. What a promotion's
    proof loads."""
    kept: dict[str, list[int]] = {}
    for holdover in holdovers:
        if holdover.stand_in is not None:
            install_stand_in(live, root, holdover)
        else:
            kept.setdefault(holdover.model, []).append(holdover.version)
            link_tree(live / holdover.model / str(holdover.version), root / holdover.model / str(holdover.version))
    for model in sorted(p.parent.name for p in source.glob("*/config.pbtxt")):
        link_tree(source / model / str(number), root / model / str(number))
        text = live_config(source, model, number, sorted({number, *kept.get(model, [])}))
        write_config(text, root / model / "config.pbtxt")
    return root


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def write_config(text: bytes, target: Path) -> None:
    """Write a config.pbtxt into the live repository atomically (read-only)."""
    temp = target.with_name(".config.pbtxt.new")
    temp.unlink(missing_ok=True)
    temp.write_bytes(text)
    os.chmod(temp, 0o444)
    os.replace(temp, target)


def link_tree(source: Path, target: Path) -> None:
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


def kill_scratch(scratch: Any) -> None:
    """Kill what a killed promotion's scratch Triton left running: the server itself (found by its
    repository and port) and orphaned Python stubs of its models (parent gone, a model file under
    the release directory as argument). A stub whose tritonserver died by ``PR_SET_PDEATHSIG``
    was seen to stay (one in 17 killed promotions of the chaos benchmark); stubs of a server that
    still runs have it as their parent and are left alone."""
    if not isinstance(scratch, dict):
        return
    repository = str(scratch.get("repository"))
    marks = (f"--model-repository={repository}".encode(), f"--http-port={scratch.get('http_port')}".encode())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if all(mark in args for mark in marks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(proc.name), signal.SIGKILL)  # its own session: the stubs go with it
        elif parent == 1 and any(arg.startswith(repository.encode() + b"/") for arg in args[1:]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
