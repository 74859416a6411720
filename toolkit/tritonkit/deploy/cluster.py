"""Talking to a KServe cluster: the ``kubernetes`` client for an environment, reading a live
object, and server-side apply of rendered objects (field manager ``tritonkit``).

The objects themselves are rendered, purely, by :mod:`tritonkit.manifests.kserve`; every one is
checked against KServe's CRD schemas (:func:`tritonkit.manifests.crd.require_valid`) before it is applied.

Example:
    >>> apply(render(spec, env, release, reference), env)
    ['ServingRuntime/triton-demo', 'InferenceService/demo']
"""

from __future__ import annotations

from typing import Any

from tritonkit.errors import ClusterError, require
from tritonkit.manifests.crd import require_valid
from tritonkit.spec.schema import EnvironmentSpec

FIELD_MANAGER = "tritonkit"


def cluster(env: EnvironmentSpec) -> Any:
    """A ``kubernetes`` dynamic client for ``env``'s kubeconfig context.

    Raises:
        DependencyError: the ``kubernetes`` client is not installed (``tritonkit[k8s]``).
        ClusterError: no usable kubeconfig.
    """
    require("kubernetes", "k8s")
    from kubernetes import config as kube_config
    from kubernetes import dynamic
    from kubernetes.config.config_exception import ConfigException

    try:
        api = kube_config.new_client_from_config(context=env.context)
    except (ConfigException, OSError) as exc:
        raise ClusterError(
            f"no Kubernetes cluster for environment '{env.name}': {exc}",
            hint="set KUBECONFIG (and 'context:' in the environment), or use --dry-run to write YAML",
        ) from exc
    return dynamic.DynamicClient(api)


def read(client: Any, document: dict[str, Any]) -> dict[str, Any] | None:
    """The live object named like ``document`` (as a dict), or None when it does not exist."""
    resource = client.resources.get(api_version=document["apiVersion"], kind=document["kind"])
    try:
        live = resource.get(name=document["metadata"]["name"], namespace=document["metadata"]["namespace"])
    except Exception as exc:  # NotFoundError and friends
        if getattr(exc, "status", None) == 404:
            return None
        raise ClusterError(f"cannot read {document['kind']}/{document['metadata']['name']}: {exc}") from exc
    result: dict[str, Any] = live.to_dict()
    return result


def apply(documents: list[dict[str, Any]], env: EnvironmentSpec, client: Any = None) -> list[str]:
    """Server-side apply every document to ``env``'s cluster; returns ``kind/name`` applied.

    Every document is first checked against KServe's CRD schemas (:func:`tritonkit.manifests.crd.require_valid`),
    so none is applied when one would be refused or lose a field to pruning.

    Raises:
        DependencyError: the ``kubernetes`` client is not installed (``tritonkit[k8s]``).
        ClusterError: a document does not match KServe's CRD schema, no usable kubeconfig, or the
            API server refused an object.
    """
    require_valid(documents)
    client = client or cluster(env)
    applied = []
    for document in documents:
        resource = client.resources.get(api_version=document["apiVersion"], kind=document["kind"])
        try:
            resource.server_side_apply(
                body=document,
                name=document["metadata"]["name"],
                namespace=document["metadata"]["namespace"],
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
        except Exception as exc:  # the client raises ApiException and friends; the message is what matters
            raise ClusterError(
                f"the cluster refused {document['kind']}/{document['metadata']['name']}: {exc}",
                hint="check that KServe is installed and you may write to the namespace",
            ) from exc
        applied.append(f"{document['kind']}/{document['metadata']['name']}")
    return applied
