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


def ensemble_steps(repository: Path) -> set[str]:
    """Models the ensembles in ``repository`` run."""
    steps: set[str] = set()
    for path in repository.glob("*/config.pbtxt"):
        text = path.read_text(errors="replace")
        if 'platform: "ensemble"' in text:
            steps.update(step.model_name for step in parse(text).ensemble_scheduling.step)
    return steps


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
