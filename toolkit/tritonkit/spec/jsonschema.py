"""The JSON Schema of ``tritonkit.yaml``, generated from the same pydantic models the loader uses.

Editors read it to complete and check a spec as it is typed (the starter spec that
``tritonkit init`` writes names it in a ``# yaml-language-server: $schema=…`` line); CI can
validate specs with any JSON Schema tool. It is shipped in the wheel as ``tritonkit.schema.json``
(``tritonkit schema`` prints it) and a test keeps that file equal to what :func:`spec_schema`
generates, so the two cannot drift.

The schema catches what a schema can: unknown keys, wrong types, unknown kinds and dtypes,
empty names, out-of-range numbers. What needs the files or the graph (paths inside the project,
an ONNX graph's I/O, ensemble wiring, one source of several) the loader checks at build time.

Example:
    >>> schema = spec_schema()
    >>> schema["$schema"]
    'https://json-schema.org/draft/2020-12/schema'
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_FILE = "tritonkit.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def spec_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec, from :class:`~tritonkit.spec.schema.Spec`."""
    from tritonkit.spec.schema import Spec

    schema = Spec.model_json_schema()
    return {"$schema": DRAFT, **schema, "title": "tritonkit.yaml"}


def render_schema() -> str:
    """:func:`spec_schema` as the shipped file's text (sorted keys, two-space indent, newline)."""
    return json.dumps(spec_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def shipped_schema() -> str:
    """The schema file shipped in the package (what ``tritonkit schema`` prints)."""
    return resources.files("tritonkit.spec").joinpath(SCHEMA_FILE).read_text()
