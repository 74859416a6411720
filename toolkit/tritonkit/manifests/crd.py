"""Rendered KServe objects against KServe's own CRD schemas, the way the API server reads them.

A CRD's ``openAPIV3Schema`` is a Kubernetes *structural schema*: besides JSON-Schema-like value
checks (types, ``required``, ``enum``, ``pattern``, bounds) the API server *prunes* every field
the schema does not name, silently, unless a subtree is marked
``x-kubernetes-preserve-unknown-fields``. A misspelt or misplaced field therefore never fails an
apply; it just does nothing. :func:`validate` reports those fields as problems, alongside
everything the server would refuse outright.

The schemas of the two CRDs tritonkit renders are vendored under ``crds/`` (KServe v0.20.0; the
source, commit and hashes are in ``crds/README.md``). ``format: int32`` / ``int64`` are checked
as ranges (KServe's controller could not decode a larger number). Not checked: CEL rules
(``x-kubernetes-validations``: the vendored schemas have none), string formats (only
``date-time``, in ``status``), and defaulting, which never refuses anything.

Example:
    >>> validate({"spec": {"replicas": "2", "colour": "red"}}, schema)
    ['spec.replicas: expected integer, got string', "spec.colour: unknown field (the API server would drop it)"]
    >>> require_valid(render(spec, env, release, reference))   # raises ClusterError on any problem
"""

from __future__ import annotations

import difflib
import gzip
import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from tritonkit.errors import ClusterError

KSERVE_RELEASE = "v0.20.0"
_FILES = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntimes.json.gz",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservices.json.gz",
}
_STRING: dict[str, Any] = {"type": "string"}
_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": _STRING}
_OPAQUE_LIST: dict[str, Any] = {
    "type": "array",
    "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
}
# A CRD's schema says only ``metadata: {type: object}``: the API server checks metadata as
# ObjectMeta itself (and drops unknown fields there too).
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": _STRING,
        "generateName": _STRING,
        "namespace": _STRING,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": _STRING},
        "ownerReferences": _OPAQUE_LIST,
        "managedFields": _OPAQUE_LIST,
        "uid": _STRING,
        "resourceVersion": _STRING,
        "generation": {"type": "integer"},
        "creationTimestamp": _STRING,
        "deletionTimestamp": _STRING,
        "deletionGracePeriodSeconds": {"type": "integer"},
        "selfLink": _STRING,
    },
}
# Kubernetes' resource.Quantity, in every CRD that embeds a pod spec: named, not printed.
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_PATTERN_NAMES = {QUANTITY: "a Kubernetes quantity (e.g. 512Mi, 2, 500m)"}
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_PYTHON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


def validate(document: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every problem the API server would find in ``document`` under the structural ``schema``.

    Args:
        document: a whole object (``apiVersion``, ``kind``, ``metadata``, ``spec``) as plain data.
        schema: a CRD version's ``openAPIV3Schema``.

    Returns:
        One ``"path: what is wrong"`` line per problem (``spec.containers[0].name``), in document
        order; empty when the object is valid and nothing in it would be pruned.
    """
    out: list[str] = []
    properties = dict(schema.get("properties", {}))
    if isinstance(document, dict) and "metadata" in properties:
        properties["metadata"] = OBJECT_META
    _check(document, {**schema, "properties": properties}, "", out, prune=True)
    return out


def schema_for(api_version: str, kind: str) -> dict[str, Any] | None:
    """The vendored ``openAPIV3Schema`` for ``kind`` in ``api_version``, or None if there is none."""
    name = _FILES.get((api_version, kind))
    return _load(name)["openAPIV3Schema"] if name else None


def problems(documents: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every problem in ``documents``, each prefixed with ``Kind/name``."""
    found = []
    for document in documents:
        kind, name = document.get("kind"), document.get("metadata", {}).get("name")
        schema = schema_for(str(document.get("apiVersion")), str(kind))
        if schema is None:
            found.append(
                f"{kind}/{name}: no KServe {KSERVE_RELEASE} schema for apiVersion {document.get('apiVersion')}"
            )
            continue
        found += [f"{kind}/{name}: {problem}" for problem in validate(document, schema)]
    return found


def require_valid(documents: Iterable[Mapping[str, Any]]) -> None:
    """Refuse objects that KServe's CRDs would reject, or strip fields from.

    Raises:
        ClusterError: any problem (the first one is the message; the count says how many more).
    """
    found = problems(documents)
    if found:
        more = f"; {len(found) - 1} more problem{'s' if len(found) > 2 else ''}" if len(found) > 1 else ""
        raise ClusterError(
            f"{found[0]} (KServe {KSERVE_RELEASE} CRD schema{more})",
            hint="a value from the environment's settings in the spec (resources, shm_size …) may be malformed; "
            "otherwise this is a tritonkit bug: please report it with this message",
        )


@cache
def _load(name: str) -> dict[str, Any]:
    data = (resources.files("tritonkit.manifests") / "crds" / name).read_bytes()
    loaded: dict[str, Any] = json.loads(gzip.decompress(data))
    return loaded


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_of(value: Any) -> str:
    return _PYTHON_TYPES.get(type(value), type(value).__name__)


def _type_problem(value: Any, schema: Mapping[str, Any]) -> str | None:
    """Why ``value`` is not of the schema's type (None when it is, or when the schema has none)."""
    actual = _type_of(value)
    if schema.get("x-kubernetes-int-or-string"):
        return None if actual in ("integer", "string") else f"expected integer or string, got {actual}"
    wanted = schema.get("type")
    if wanted is None or wanted == actual or (wanted == "number" and actual == "integer"):
        return None
    return f"expected {wanted}, got {actual}"


def _check(value: Any, schema: Mapping[str, Any], path: str, out: list[str], *, prune: bool) -> None:
    """Append the problems of ``value`` at ``path``; ``prune``: report fields the schema would drop
    (off inside ``anyOf``/``allOf``/``oneOf``/``not``, which only validate values in a structural schema)."""
    where = path or "(root)"
    if value is None:
        if not schema.get("nullable"):
            out.append(f"{where}: null (the API server drops null values of non-nullable fields)")
        return
    wrong = _type_problem(value, schema)
    if wrong:
        out.append(f"{where}: {wrong}")
        return
    out += [f"{where}: {problem}" for problem in _value_problems(value, schema, path)]
    if isinstance(value, dict):
        _check_object(value, schema, path, out, prune=prune)
    elif isinstance(value, list):
        items = schema.get("items")
        for index, item in enumerate(value):
            if isinstance(items, Mapping):
                _check(item, items, f"{path}[{index}]", out, prune=prune)
        out += [f"{where}: {problem}" for problem in _list_problems(value, schema)]


def _check_object(value: dict[str, Any], schema: Mapping[str, Any], path: str, out: list[str], *, prune: bool) -> None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
    for name in schema.get("required", []):
        if name not in value:
            out.append(f"{_join(path, name)}: required field missing")
    for key, item in value.items():
        if key in properties:
            _check(item, properties[key], _join(path, key), out, prune=prune)
        elif isinstance(extra, Mapping):
            _check(item, extra, _join(path, key), out, prune=prune)
        elif prune and not keeps_unknown:
            lowered = {name.lower(): name for name in properties}  # 'storageURI' is 'storageUri', not 'storage'
            close = difflib.get_close_matches(key.lower(), list(lowered), n=1)
            guess = f"; did you mean '{lowered[close[0]]}'?" if close else ""
            out.append(f"{_join(path, key)}: unknown field (the API server would drop it){guess}")


def _value_problems(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    """Value validations: enum, pattern, lengths, bounds, and the logical combinators."""
    found = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{value!r} is not {_PATTERN_NAMES.get(schema['pattern'], 'matched by ' + schema['pattern'])}")
        if len(value) < schema.get("minLength", 0):
            found.append(f"{value!r} is shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            found.append(f"{value!r} is longer than {schema['maxLength']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{value} is less than {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{value} is greater than {schema['maximum']}")
        low, high = _INT_RANGES.get(schema.get("format", ""), (value, value))
        if not low <= value <= high:
            found.append(f"{value} does not fit {schema['format']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            found.append(f"{len(value)} items, fewer than {schema['minItems']}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            found.append(f"{len(value)} items, more than {schema['maxItems']}")
    if isinstance(value, dict):
        if len(value) < schema.get("minProperties", 0):
            found.append(f"{len(value)} fields, fewer than {schema['minProperties']}")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            found.append(f"{len(value)} fields, more than {schema['maxProperties']}")

    def passes(branch: Mapping[str, Any]) -> bool:
        found_here: list[str] = []
        _check(value, branch, path, found_here, prune=False)
        return not found_here

    if "anyOf" in schema and not schema.get("x-kubernetes-int-or-string") and not any(map(passes, schema["anyOf"])):
        found.append("matches none of its anyOf schemas")
    if "oneOf" in schema and sum(map(passes, schema["oneOf"])) != 1:
        found.append("does not match exactly one of its oneOf schemas")
    found += ["does not match one of its allOf schemas" for branch in schema.get("allOf", []) if not passes(branch)]
    if "not" in schema and passes(schema["not"]):
        found.append("matches the schema under 'not'")
    return found


def _list_problems(value: list[Any], schema: Mapping[str, Any]) -> list[str]:
    """Duplicates the API server refuses in ``x-kubernetes-list-type: set`` and ``map`` lists."""
    kind = schema.get("x-kubernetes-list-type")
    if kind == "set":
        seen = [json.dumps(item, sort_keys=True) for item in value]
        return [f"duplicate item {item}" for index, item in enumerate(seen) if item in seen[:index]]
    if kind == "map":
        names = schema.get("x-kubernetes-list-map-keys", [])
        keys = [tuple(item.get(name) for name in names) if isinstance(item, dict) else None for item in value]
        return [
            f"duplicate entry for {', '.join(f'{n}={k!r}' for n, k in zip(names, key))}"
            for index, key in enumerate(keys)
            if key is not None and key in keys[:index]
        ]
    return []
