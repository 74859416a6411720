"""Edit tritonkit.yaml in place, keeping its comments, order and flow style (ruamel.yaml).

``tritonkit tune`` writes its winning settings back with :func:`update_settings`; the new
text is validated as a spec before anything touches the file, and the file is replaced
atomically, so a failed update leaves the old spec as it was.

Example:
    >>> update = update_settings(Path("tritonkit.yaml"), "classifier", settings)
    >>> print(update.diff); update.write()
"""

from __future__ import annotations

import difflib
import io
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tritonkit.errors import SpecError
from tritonkit.spec.loader import load_spec
from tritonkit.spec.schema import GpuAccelerator, Spec


@dataclass(frozen=True)
class SpecUpdate:
    """A validated new text for ``path``; nothing is written until :meth:`write`."""

    path: Path
    old: str
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def diff(self) -> str:
        lines = difflib.unified_diff(
            self.old.splitlines(keepends=True), self.new.splitlines(keepends=True), str(self.path), str(self.path)
        )
        return "".join(lines)

    def write(self) -> None:
        """Replace the file atomically (same directory, then ``os.replace``)."""
        descriptor, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(self.new)
            os.chmod(temp, self.path.stat().st_mode & 0o777)
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


class BatchingSettings(Protocol):
    """The settings written back (``tritonkit.perf.tune.TuneSettings`` is one); a protocol, so
    the spec stage does not import the measurement stage above it."""

    @property
    def instances(self) -> int: ...
    @property
    def max_batch_size(self) -> int: ...
    @property
    def max_queue_delay_microseconds(self) -> int: ...
    @property
    def preferred_batch_size(self) -> tuple[int, ...]: ...
    @property
    def threads(self) -> int: ...
    @property
    def accelerator(self) -> str: ...


def update_settings(
    path: Path,
    model: str,
    settings: BatchingSettings | None,
    *,
    capacity: Mapping[str, Any] | None = None,
    variant: Mapping[str, Any] | None = None,
) -> SpecUpdate:
    """The spec at ``path`` with ``model``'s batching and instance settings set to ``settings``
    (and its ``capacity:`` to what tune measured, when given: evidence a reviewer reads; its
    ``variant:`` to the recipe ``tune --variants`` chose, when given).
    ``settings`` None leaves them alone: an ``llm`` model's tune measures capacity only.

    Raises:
        SpecError: unreadable spec, unknown model, or a result that is not a valid spec.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    loaded = load_spec(path)  # the same errors as everywhere else for a broken file
    loaded.spec.model(model)  # unknown model -> SpecError with a suggestion
    old = path.read_text()
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    offset = _dash_offset(old)
    yaml.indent(mapping=2, sequence=offset + 2, offset=offset)
    document: Any = yaml.load(old)
    entry = next(m for m in document["models"] if m.get("name") == model)

    if settings is not None:
        _set_batching(entry, settings)
    if variant is not None:
        recipe = CommentedMap(variant)
        recipe.fa.set_flow_style()
        entry["variant"] = recipe
    if capacity is not None:
        block = CommentedMap()
        for key, value in capacity.items():
            if isinstance(value, Mapping):
                inner = CommentedMap(value)
                inner.fa.set_flow_style()
                block[key] = inner
            else:
                block[key] = value
        entry["capacity"] = block

    def dumped() -> SpecUpdate:
        buffer = io.StringIO()
        yaml.dump(document, buffer)
        return SpecUpdate(path=path, old=old, new=buffer.getvalue())

    update = dumped()
    updated = _validate(update)
    if capacity is not None and isinstance(entry["capacity"].get("measured_on"), Mapping):
        # what the capacity was measured with: the model's spec as this update leaves it
        entry["capacity"]["measured_on"]["settings"] = updated.model(model).settings_digest()
        update = dumped()
        _validate(update)
    return update


def _set_batching(entry: Any, settings: BatchingSettings) -> None:
    """Write ``settings`` into the model entry (ruamel maps: comments and flow style kept)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    entry["max_batch_size"] = settings.max_batch_size
    batching = entry.get("dynamic_batching")
    if not isinstance(batching, dict):
        batching = entry["dynamic_batching"] = CommentedMap()
    batching["max_queue_delay_microseconds"] = settings.max_queue_delay_microseconds
    if settings.preferred_batch_size:
        preferred = batching.get("preferred_batch_size")
        if isinstance(preferred, CommentedSeq):
            preferred[:] = list(settings.preferred_batch_size)  # in place: keeps [a, b] flow style
        else:
            preferred = CommentedSeq(settings.preferred_batch_size)
            preferred.fa.set_flow_style()
            batching["preferred_batch_size"] = preferred
    elif "preferred_batch_size" in batching:
        del batching["preferred_batch_size"]
    if settings.threads:  # an onnxruntime session's threads, read by both onnxruntime backends
        parameters = entry.get("parameters")
        if not isinstance(parameters, dict):
            parameters = entry["parameters"] = CommentedMap()
        parameters["intra_op_thread_count"] = settings.threads
    written = entry.get("accelerator")
    if settings.accelerator and (not isinstance(written, dict) or _key(written) != settings.accelerator):
        # only what tune chose: the same accelerator keeps what was written beside it (workspace, cache)
        accelerator = GpuAccelerator.from_key(settings.accelerator)
        block = CommentedMap(name=accelerator.name)
        if accelerator.name == "tensorrt":
            block["precision_mode"] = accelerator.precision_mode
        block.fa.set_flow_style()
        entry["accelerator"] = block
    groups = entry.get("instance_group")
    if groups:
        groups[0]["count"] = settings.instances
        del groups[1:]
    else:
        group = CommentedMap(count=settings.instances, kind="KIND_CPU")
        group.fa.set_flow_style()
        entry["instance_group"] = CommentedSeq([group])


def _key(written: Mapping[str, Any]) -> str:
    try:
        return GpuAccelerator.model_validate(dict(written)).key
    except ValueError:
        return ""


def _dash_offset(text: str) -> int:
    """How far this file indents a list's ``-`` under its key (0 or 2 in practice)."""
    found = re.search(r"^( *)[^\s#][^\n]*:[ \t]*\n(?: *#[^\n]*\n)*( *)- ", text, re.MULTILINE)
    return max(0, len(found.group(2)) - len(found.group(1))) if found else 0


def _validate(update: SpecUpdate) -> Spec:
    """Load the new text as a spec, beside the original so relative paths resolve the same."""
    descriptor, temp = tempfile.mkstemp(prefix=f".{update.path.stem}.", suffix=".yaml", dir=update.path.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(update.new)
        return load_spec(Path(temp)).spec
    except SpecError as exc:
        raise SpecError(
            f"the tuned settings do not make a valid spec: {exc.key}: {exc.detail}",
            file=update.path,
            hint="tritonkit.yaml was not changed; apply the settings by hand",
        ) from exc
    finally:
        Path(temp).unlink(missing_ok=True)
