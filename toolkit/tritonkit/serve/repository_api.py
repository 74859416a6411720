"""Triton's model repository API: the one place a model is loaded, reloaded or unloaded.

``POST v2/repository/models/<model>/load`` with an optional ``config`` override is how
tritonkit changes what a running Triton serves without a restart: the server loads the model
at start, promotion switches versions with it, and tune tries candidate settings with it. Triton
loads (and warms up) the new configuration while the old one keeps serving; a failed load leaves
the old one in place.

Example:
    >>> client = tritonclient.http.InferenceServerClient("127.0.0.1:8000")
    >>> load_model(client, "classifier", {"max_batch_size": 16, ...})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http.client import HTTPException
from typing import Any

from tritonkit.errors import ServerError


def load_model(
    client: Any,
    model: str,
    config: Mapping[str, Any] | str | None = None,
    *,
    files: Mapping[str, bytes] | None = None,
    context: str = "",
    hint: str = "",
) -> None:
    """Load (or reload) ``model``, optionally with a JSON config override.

    Args:
        client: a ``tritonclient.http`` or ``tritonclient.grpc`` ``InferenceServerClient``.
        model: the model's name.
        config: the whole model config (a mapping or its JSON text) to load instead of the
            repository's ``config.pbtxt``; ``None`` loads the repository's.
        files: the model's files to load instead of the repository's (``{"file:1/model.onnx":
            bytes}``; Triton requires ``config`` with them). Triton 2.51 skipped a load whose
            config and files equalled an earlier override after a config-only reload in between
            (it served the repository's file), so callers make such a config differ (tune tags it
            with the files' digest).
        context: what the load is for, for the message ("version 3", "with a tuning config").
        hint: what to do when it fails.

    Raises:
        ServerError: with Triton's own reason when the load fails.
    """
    from tritonclient.utils import InferenceServerException

    text = config if isinstance(config, str) or config is None else json.dumps(config)
    what = f"model '{model}'" + (f" {context}" if context else "")
    try:
        if files:
            if text is None:
                raise ValueError("Triton loads override files only with a config")
            client.load_model(model, config=text, files=dict(files))
        elif text is not None:
            client.load_model(model, config=text)
        else:
            client.load_model(model)
    except InferenceServerException as exc:
        raise ServerError(f"{what} failed to load: {one_line(exc.message())}", hint=hint) from exc
    except (OSError, HTTPException) as exc:  # the server died or went away during the load
        raise ServerError(
            f"{what}: lost the connection to Triton while loading ({type(exc).__name__}: {exc})",
            hint=hint or "check that tritonserver is still running (its log says why it stopped)",
        ) from exc


def one_line(text: str) -> str:
    """Triton's reason as one line: a Python model's error carries its traceback (``At:`` and one
    line per frame); the first line holds the exception, the frames belong in Triton's log."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    for line in lines[1:]:
        if line in ("At:", "Traceback (most recent call last):") or line.startswith(("/", "File ", "At:")):
            break
        first = f"{first} {line}"
    return first[:500]


def unload_model(client: Any, model: str) -> None:
    """Unload ``model`` (Triton finishes the requests in flight first).

    Raises:
        ServerError: with Triton's reason when it refuses.
    """
    from tritonclient.utils import InferenceServerException

    try:
        client.unload_model(model)
    except InferenceServerException as exc:
        raise ServerError(f"model '{model}' failed to unload: {one_line(exc.message())}") from exc
    except (OSError, HTTPException) as exc:
        raise ServerError(f"model '{model}': lost the connection to Triton while unloading ({exc})") from exc
