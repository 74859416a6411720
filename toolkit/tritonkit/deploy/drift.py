"""What a local Triton serves, compared with what the environment's record says it serves.

Pure functions: the caller reads Triton's repository index (``POST v2/repository/index``) and
each model's config (``GET v2/models/<m>/config``) and the ``live/`` directory, and
:func:`differences` says, one line each, where they disagree with the recorded release:

* a model of the release that is not ready, or ready at another version (or at two);
* a model that is ready but not part of the release;
* a served config whose fields that change behaviour (batching, I/O, ensemble steps, backend,
  parameters, instance count) differ from the release's config;
* a ``live/`` model directory holding other versions than the release's, or a config file other
  than the one a promotion installs.

Triton fills defaults into the configs it reports, so only the fields set in the release's
config are compared, with numbers compared as text (Triton writes some 64-bit fields as strings).

Example:
    >>> differences(expected, 2, {"classifier": {1}}, {}, {})
    ['classifier: Triton serves version 1, the record says 2']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Fields of a model config that change what a request gets; the rest (name, defaults Triton
# fills in, optimization knobs it rewrites) would only make noise.
COMPARED = (
    "platform",
    "backend",
    "max_batch_size",
    "input",
    "output",
    "dynamic_batching",
    "sequence_batching",
    "ensemble_scheduling",
    "parameters",
    "model_transaction_policy",
)


def differences(
    expected: Mapping[str, Mapping[str, Any]],
    version: int | None,
    served_versions: Mapping[str, set[int]],
    served_configs: Mapping[str, Mapping[str, Any]],
    live_problems: Mapping[str, str],
) -> list[str]:
    """Every disagreement between the record and the server, one line each (empty when none).

    Args:
        expected: model name -> the config the record says it is served with (as JSON).
        version: the recorded release number (None: nothing promoted yet).
        served_versions: model name -> versions Triton reports READY.
        served_configs: model name -> the config Triton reports (for ready models).
        live_problems: model name -> what is wrong with its ``live/`` directory.

    Returns:
        Lines like ``"classifier: Triton serves version 1, the record says 2"``.
    """
    found: list[str] = []
    for model in sorted(expected):
        versions = served_versions.get(model, set())
        if not versions:
            found.append(f"{model}: not ready, the record says version {version}")
        elif versions != {version}:
            shown = ", ".join(str(v) for v in sorted(versions))
            found.append(f"{model}: Triton serves version {shown}, the record says {version}")
        elif model in served_configs:
            for field in _config_differences(expected[model], served_configs[model]):
                found.append(f"{model}: served config differs in {field}")
    for model in sorted(set(served_versions) - set(expected)):
        if served_versions[model]:
            where = f"v{version}" if version is not None else "any promoted release"
            found.append(f"{model}: served but not part of {where}")
    for model, problem in sorted(live_problems.items()):
        found.append(f"{model}: {problem}")
    return found


def _config_differences(expected: Mapping[str, Any], served: Mapping[str, Any]) -> list[str]:
    out = []
    for field in COMPARED:
        if field in expected and not _covers(served.get(field), expected[field]):
            out.append(field)
    return out


def _covers(served: Any, expected: Any) -> bool:
    """Whether ``served`` has every value ``expected`` sets (Triton adds defaults; those are fine)."""
    if isinstance(expected, Mapping):
        if not isinstance(served, Mapping):
            return not any(_meaningful(v) for v in expected.values())
        return all(_covers(served.get(key), value) for key, value in expected.items())
    if isinstance(expected, list):
        if not isinstance(served, list) or len(served) != len(expected):
            return not expected and not served
        return all(_covers(s, e) for s, e in zip(served, expected, strict=True))
    if served is None:
        return not _meaningful(expected)
    return _scalar(served) == _scalar(expected)


def _meaningful(value: Any) -> bool:
    """A value that is not a protobuf default (0, "", False, empty)."""
    if isinstance(value, Mapping):
        return any(_meaningful(v) for v in value.values())
    if isinstance(value, list):
        return bool(value)
    return value not in (0, "0", "", False, None)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
