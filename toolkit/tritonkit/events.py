"""The one progress contract: every long operation reports through ``progress(Event)``.

The library never prints. Build, bench, tune, promote, rollback, publish and pull take an
optional ``progress`` callback and call it with :class:`Event` values; the CLI renders them as
rich progress bars, or as nothing under ``--json`` (which reports the final result instead).

Example:
    >>> def show(event: Event) -> None:
    ...     print(event.stage, event.subject, event.message, event.fraction)
    >>> build_repository(loaded, Path("dist"), progress=show)
    build classifier exporting ONNX None
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """One step of a long operation.

    Attributes:
        stage: the operation: ``build``, ``bench``, ``tune``, ``promote``, ``rollback``,
            ``publish`` or ``pull``.
        subject: what the step is about: a model, a bench point's label, a blob.
        message: one human line ("exporting ONNX", "loaded version 3").
        done: units done so far, when the step is measurable.
        total: units in all (``None`` when unknown).
        unit: what ``done`` / ``total`` count (``"s"``, ``"bytes"``, ``"points"``).
        data: the structured result the step produced, if any (a tune point, say).
    """

    stage: str
    subject: str
    message: str = ""
    done: float | None = None
    total: float | None = None
    unit: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        """``done / total`` in [0, 1], or ``None`` when the step is not measurable."""
        if self.done is None or not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


Progress = Callable[[Event], None]
"""The callback type every long operation takes as ``progress=``."""


def emit(progress: Progress | None, event: Event) -> None:
    """Call ``progress`` with ``event`` when a callback was given."""
    if progress is not None:
        progress(event)
