"""How a command reports: human text through rich consoles, or one JSON document with ``--json``.

It owns the two consoles every command prints through (``console`` for results, ``err_console``
for errors and notes) and their set-up per invocation (:func:`configure_consoles`).

Every reporting command takes ``--json`` (:func:`json_option`). Then stdout carries exactly one
JSON document, ``{"schema": "tritonkit/<command>/v1", "ok": true, "exit_code": 0, …}``, and the
human text (tables, progress) goes to stderr. A failure is the same document with ``"ok":
false`` and ``error`` / ``hint`` / ``exit_code`` (the process exits with that code), plus
whatever the command recorded before it failed (verify's findings). ``docs/json.md`` is the
schema of each command's document.

A command records its result with :func:`record`; :class:`~tritonkit.cli._common.Group` prints
the document once the command returns or fails, so a command never writes JSON itself.

Example:
    >>> @click.command()
    ... @json_option
    ... def releases() -> None:
    ...     record(releases=[{"name": "v1"}])   # printed as tritonkit/releases/v1 with --json
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from tritonkit.errors import mask_credentials

SCHEMA_VERSION = 1
SCHEMA_VERSIONS = {"bench": 2, "tune": 2}
"""Commands whose documents changed incompatibly since v1 (bench/v2: a point's ``engine`` is
``meter``, and the fields that could never vary are gone; tune's points are bench points)."""
F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)

# Wide enough for any table: rich cuts cells with "…" at the console width, which is 80 columns
# when the output is not a terminal. Tables do not expand, so a wide console pads nothing.
UNLIMITED_WIDTH = 10_000


def configure_consoles(*, quiet: bool = False) -> None:
    """Fresh consoles for one invocation: human text on stdout, full width when not a terminal.

    Args:
        quiet: suppress human text on stdout (errors on stderr and ``--json`` documents stay).
    """
    for each in (console, err_console):
        each.file = None  # type: ignore[assignment]  # back to sys.stdout / sys.stderr (a --json run moves it)
        each._width = None if each.is_terminal else UNLIMITED_WIDTH
    console.quiet = quiet


class _State:
    """What the current invocation reports: a CLI process runs one command."""

    def __init__(self) -> None:
        self.json = False
        self.command = ""
        self.fields: dict[str, Any] = {}


_state = _State()


def reset() -> None:
    """Forget the previous invocation (tests run many in one process)."""
    _state.json = False
    _state.command = ""
    _state.fields = {}


def json_mode() -> bool:
    """Whether this invocation prints a JSON document instead of human text on stdout."""
    return _state.json


def _enable(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        enable_json(ctx.command.name or ctx.info_name or "tritonkit")


def enable_json(command: str) -> None:
    """Report ``command`` as JSON: human text goes to stderr from now on, stdout is the document's."""
    _state.json = True
    _state.command = command
    console.file = sys.stderr


def json_option(function: F) -> F:
    """``--json``: one JSON document on stdout (schema in docs/json.md), human text on stderr."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        is_eager=True,  # before other options, so a bad value of one is reported as JSON too
        callback=_enable,
        help="Print one JSON document on stdout (schema: docs/json.md); human text goes to stderr.",
    )(function)


def record(**fields: Any) -> None:
    """Add fields to this command's JSON document (ignored without ``--json``)."""
    _state.fields.update(fields)


def document(error: BaseException | None = None) -> dict[str, Any]:
    """The JSON document of this invocation: what the command recorded, and the error if it failed.

    The schema is ``tritonkit/<command>/v1`` (``v2`` for the commands in :data:`SCHEMA_VERSIONS`).

    Args:
        error: the failure, or ``None``; a ``TritonkitError`` or ``click.ClickException``.

    Returns:
        A JSON-ready dict (paths as strings, NaN as ``null``).
    """
    command = _state.command or "tritonkit"
    version = SCHEMA_VERSIONS.get(command, SCHEMA_VERSION)
    doc: dict[str, Any] = {"schema": f"tritonkit/{command}/v{version}", "ok": error is None, "exit_code": 0}
    doc.update(jsonable(_state.fields))
    if error is not None:
        message = getattr(error, "message", None) or (
            error.format_message() if isinstance(error, click.ClickException) else str(error)
        )
        hint = getattr(error, "hint", "")
        # the same masking as the error lines: a URL's credentials never reach a CI log
        code = getattr(error, "exit_code", 1)
        doc.update(error=mask_credentials(message), hint=mask_credentials(hint), exit_code=code)
    return doc


def emit(error: BaseException | None = None) -> None:
    """Print the document on stdout when ``--json`` is on; nothing otherwise."""
    if _state.json:
        click.echo(json.dumps(document(error), indent=2, ensure_ascii=False))


def jsonable(value: Any) -> Any:
    """Dataclasses, paths, tuples, bytes and floats as JSON allows them (NaN and infinities as ``null``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):  # BYTES tensors: text models' outputs are UTF-8
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
