"""Promotion on a KServe environment: apply, wait on real status, roll back on failure.

One step = server-side apply of the release's ServingRuntime + InferenceService (see
:mod:`tritonkit.deploy.render`), then polling the InferenceService until :func:`tritonkit.deploy.gates.evaluate`
passes, fails for good, or ``timeout_s`` runs out. Serverless environments take ``--canary P``
(``canaryTrafficPercent: P``); promoting the same release again without ``--canary`` removes it
and sends all traffic to the new revision. RawDeployment environments refuse a canary (KServe
would ignore the field) and switch blue/green: the new ReplicaSet must be Ready before the step
passes. A failed or timed-out Serverless canary is rolled back the KServe way, with
``canaryTrafficPercent: 0`` (all traffic to the previous, still running revision, gated on the
traffic split); any other failed or timed-out step re-applies the previous release's objects (by
the digest the history recorded). Either way the failure is recorded and the error exits 8.

Not covered by a live test on the development machine (no cluster there); the gate logic is
unit-tested on status documents and the object rendering against golden YAML.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tritonkit.deploy.crd import check
from tritonkit.deploy.environment import Environment, Promotion
from tritonkit.deploy.gates import Gate, check_canary, evaluate, normalize_mode, rolled_back
from tritonkit.deploy.render import apply, cluster, read, render
from tritonkit.errors import PromoteError, UsageError
from tritonkit.events import Progress
from tritonkit.release.store import Release, ReleaseStore
from tritonkit.spec.schema import EnvironmentSpec, Spec


class KServeEnvironment(Environment):
    """An environment declared in the spec with ``kind: kserve``."""

    def __init__(self, store: ReleaseStore, spec: Spec, env: EnvironmentSpec, *, timeout_s: float = 900.0) -> None:
        super().__init__(store, env.name)
        self.spec, self.env, self.timeout_s = spec, env, timeout_s

    def _switch(self, number: int, *, canary: int | None, progress: Progress | None, action: str) -> Promotion:
        """Roll release ``number`` out (all of it, or ``canary`` percent of the traffic).

        Raises:
            UsageError: unknown or unpublished release; a canary where the mode cannot do one.
            ClusterError: an object does not match KServe's CRD schema, no cluster, or the API
                server refused an object.
            PromoteError: the rollout failed or timed out and was rolled back.
        """
        report = self._reporter(progress, action)
        check_canary(self.env.mode, canary)
        target, previous = self.store.get(number), self.current()
        documents = self._documents(target, canary)
        client = cluster(self.env)
        live = read(client, documents[1])
        mode: str = self.env.mode
        if live is not None:
            annotated = live.get("metadata", {}).get("annotations", {}).get("serving.kserve.io/deploymentMode", mode)
            mode = normalize_mode(annotated)  # KServe >= 0.17 writes Knative / Standard
            check_canary(mode, canary)  # the cluster's mode wins over the spec's
        step = f"{canary}% canary of {target.name}" if canary else target.name
        report(f"applying {step} to {self.env.namespace}")
        apply(documents, self.env, client)
        gate = self._wait(client, documents[1], mode, canary, report)
        if gate.passed:
            return self.record(action if not canary else f"{action} (canary {canary}%)", previous, target, "ok")
        outcome = f"failed: {gate.reason}"
        if previous is not None and canary and mode == "Serverless":
            # KServe's own canary rollback: canaryTrafficPercent 0 sends everything back to the
            # previously rolled-out revision, which is still running; nothing is recreated.
            report(f"rolling back: canaryTrafficPercent 0 (all traffic to {previous.name})")
            documents[1]["spec"]["predictor"]["canaryTrafficPercent"] = 0
            apply(documents, self.env, client)
            back = self._wait(client, documents[1], mode, canary, report, judge=lambda d, m, c: rolled_back(d))
            outcome += f"; canaryTrafficPercent 0: {back.reason}"
        elif previous is not None:
            report(f"rolling back to {previous.name}")
            apply(self._documents(previous, None), self.env, client)
            outcome += f"; rolled back to {previous.name}"
        self.record(action, previous, target, outcome)
        raise PromoteError(
            f"{step} did not become ready in {self.env.name}: {gate.reason}",
            hint=(f"{previous.name} was re-applied" if previous else "nothing was serving before")
            + f"; see 'kubectl -n {self.env.namespace} describe inferenceservice {documents[1]['metadata']['name']}'",
        )

    def _documents(self, release: Release, canary: int | None) -> list[dict[str, Any]]:
        references = self.store.publications(release.number)
        if not references:
            raise UsageError(
                f"{release.name} has not been published to a registry",
                hint=f"run 'tritonkit publish {release.name} oci://HOST/REPO:{release.name}' first",
            )
        documents = render(self.spec, self.env, release, references[-1])
        if canary:
            documents[1]["spec"]["predictor"]["canaryTrafficPercent"] = canary
        check(documents)  # before any cluster is touched
        return documents

    def _wait(
        self,
        client: Any,
        service: dict[str, Any],
        mode: str,
        canary: int | None,
        report: Callable[[str], None],
        judge: Callable[[dict[str, Any], str, int | None], Gate] | None = None,
    ) -> Gate:
        deadline = time.monotonic() + self.timeout_s
        gate = Gate(False, False, "not read yet")
        verdict = judge or (lambda document, m, c: evaluate(document, mode=m, canary=c))
        while time.monotonic() < deadline:
            live = read(client, service)
            gate = verdict(live or {}, mode, canary)
            report(f"waiting: {gate.reason}")
            if gate.passed or gate.failed:
                return gate
            time.sleep(3)
        return Gate(False, True, f"timed out after {self.timeout_s:.0f}s ({gate.reason})")
