"""Deployment environments: promote, roll back and report a release's rollout.

Example:
    >>> env = open_environment(ReleaseStore(Path("releases")), "local")
    >>> env.status()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tritonkit.errors import UsageError

if TYPE_CHECKING:
    from tritonkit.deploy.environment import Environment
    from tritonkit.release.store import ReleaseStore
    from tritonkit.spec.schema import Spec


def open_environment(
    store: ReleaseStore,
    name: str,
    spec: Spec | None = None,
    *,
    url: str | None = None,
    metrics_url: str | None = None,
) -> Environment:
    """``local`` (the Triton at ``url``, its metrics at ``metrics_url``; by default the addresses
    of the ``serve --env local`` that serves it, else 127.0.0.1:8000 and port 8002 of the same
    host), or the KServe environment ``name`` declared in ``spec``.

    Raises:
        UsageError: an environment the spec does not declare (with a suggestion), or no spec.
    """
    if name == "local":
        from tritonkit.deploy.local import LocalEnvironment

        return LocalEnvironment(store, url=url, metrics_url=metrics_url)
    if spec is None:
        raise UsageError(f"environment '{name}' needs the spec that declares it", hint="give the spec file")
    from tritonkit.deploy.kserve import KServeEnvironment

    return KServeEnvironment(store, spec, spec.environment(name))
