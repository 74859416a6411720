"""A release's own intent: the spec as release ``vN`` was built, for everything rendered for it.

A release is immutable, and so is what it promises: the SLO and measured capacity of each model
are in its lock (the build wrote them there; the lock's digest covers them). Rendering KServe
objects, alert rules, Helm values or a capacity plan for ``vN`` from the working spec would use
whatever the spec says today — after an SLO edit, ``deploy v1`` rendered another ``maxReplicas``
and other burn thresholds than v1 promised. :func:`as_released` gives the spec those renderers
take, with each model's ``slo`` and ``capacity`` replaced by the lock's, and only the models the
release has. What is not intent stays the working spec's: the environments (where and how to
deploy is the operator's, not the release's) and the repository name.

Example:
    >>> released = as_released(spec, store.path(1))
    >>> released.model("classifier").slo.p99_ms   # v1's, whatever tritonkit.yaml says now
    50.0
"""

from __future__ import annotations

from pathlib import Path

from tritonkit.artifact.lock import read_lock
from tritonkit.errors import UsageError
from tritonkit.spec.intent import Capacity, Slo
from tritonkit.spec.schema import Spec


def as_released(spec: Spec, release: Path) -> Spec:
    """``spec`` with the intent of the release at ``release`` (see the module docstring).

    Raises:
        UsageError: a model of the release is no longer in the spec (its kind and settings
            cannot be read back from the lock alone).
    """
    lock = read_lock(release)
    names = {model.name for model in spec.models}
    missing = sorted(set(lock.models) - names)
    if missing:
        raise UsageError(
            f"model '{missing[0]}' of {release.name} is no longer in the spec",
            hint="render a release from the spec it was built with (check out that commit), or release again",
        )
    models = []
    for model in spec.models:
        entry = lock.models.get(model.name)
        if entry is None:
            continue  # added to the spec since: not part of this release
        slo = Slo.model_validate(entry["slo"]) if "slo" in entry else None
        capacity = Capacity.model_validate(entry["capacity"]) if "capacity" in entry else None
        models.append(model.model_copy(update={"slo": slo, "capacity": capacity}))
    # the repository-level slo defaults were merged into each model's at build time
    return spec.model_copy(update={"models": models, "slo": None})
