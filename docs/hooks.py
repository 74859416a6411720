"""mkdocs hooks: the spec's field reference, generated from its schema when the site is built.

``docs/reference/spec.md`` holds the marker ``<!-- spec-reference -->``; :func:`on_page_markdown`
replaces it with one section per spec object (the spec itself first, then every object it uses,
by name), each a table of its fields: type, default, constraints. The tables come from
``tritonkit.spec.jsonschema.spec_schema()`` — the JSON Schema of the pydantic models that
validate every spec — so the reference lists every field there is and cannot drift.
"""

from __future__ import annotations

import json
from typing import Any

MARKER = "<!-- spec-reference -->"
_CONSTRAINTS = {
    "minimum": ">= {}",
    "exclusiveMinimum": "> {}",
    "maximum": "<= {}",
    "exclusiveMaximum": "< {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minItems": "at least {} items",
    "pattern": "matches `{}`",
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs' hook: fill the marker of the spec reference page."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, spec_reference())


def spec_reference() -> str:
    """Markdown: one section per object of the spec's JSON Schema, ``Spec`` first."""
    from tritonkit.spec.jsonschema import spec_schema

    schema = spec_schema()
    objects = {"Spec": schema, **dict(sorted(schema["$defs"].items()))}
    return "\n".join(_section(name, body) for name, body in objects.items())


def _section(name: str, body: dict[str, Any]) -> str:
    description = " ".join((body.get("description") or "").split())
    required = set(body.get("required", []))
    rows = ["| field | type | default | constraints |", "|---|---|---|---|"]
    for field, spec in body.get("properties", {}).items():
        default = "required" if field in required else _code(spec.get("default", None))
        rows.append(f"| `{field}` | {_type(spec)} | {default} | {_constraints(spec)} |")
    anchor = name.lower()
    return f"### {name} {{#{anchor}}}\n\n{description}\n\n" + "\n".join(rows) + "\n"


def _type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        target = spec["$ref"].rsplit("/", 1)[-1]
        return f"[{target}](#{target.lower()})"
    if "const" in spec:
        return f"`{json.dumps(spec['const'])}`"
    if "enum" in spec:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in spec["enum"])
    for key in ("anyOf", "oneOf"):
        if key in spec:
            return " or ".join(_type(option) for option in spec[key])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type(spec.get('items', {}))}"
    if kind == "object" and "additionalProperties" in spec and isinstance(spec["additionalProperties"], dict):
        return f"map of {_type(spec['additionalProperties'])}"
    return "null" if kind == "null" else kind


def _constraints(spec: dict[str, Any]) -> str:
    parts = [text.format(spec[key]) for key, text in _CONSTRAINTS.items() if key in spec and key != "pattern"]
    if "pattern" in spec and len(spec["pattern"]) < 60:  # the dtype pattern is long: its examples say more
        parts.append(_CONSTRAINTS["pattern"].format(spec["pattern"].replace("|", "\\|")))
    if "examples" in spec:
        parts.append("e.g. " + ", ".join(f"`{e}`" for e in spec["examples"]))
    return "; ".join(parts)


def _code(value: Any) -> str:
    return f"`{json.dumps(value)}`"
