"""Promotion on a KServe environment: apply, wait on real status, roll back on failure.

One step = server-side apply of the release's ServingRuntime + InferenceService (see
:mod:`tritonkit.manifests.kserve`), then polling the InferenceService until :func:`tritonkit.deploy.gates.evaluate`
passes, fails for good, or ``timeout_s`` runs out. Serverless environments take ``--canary P``
(``canaryTrafficPercent: P``); promoting the same release again without ``--canary`` removes it
and sends all traffic to the new revision. RawDeployment environments refuse a canary (KServe
would ignore the field) and switch blue/green: the new ReplicaSet must be Ready before the step
passes. A failed or timed-out Serverless canary is rolled back the KServe way, with
``canaryTrafficPercent: 0`` (all traffic to the previous, still running revision, gated on the
traffic split); any other failed or timed-out step re-applies the previous release's objects (by
the digest the history recorded). Either way the failure is recorded and the error exits 8.

**Under analysis** (``promote(n, analysis_s=60, steps=[10, 50, 100])``, needs the environment's
``prometheus_url``) the promotion is the one walk every environment runs
(:meth:`Environment._analysed <tritonkit.deploy.environment.Environment._analysed>`); this module
gives it its effects (:meth:`KServeEnvironment._rollout`). Serverless steps
through the traffic percentages (default 10 → 50 → 100), each applied and gated as above, then
watched for the window; the new revision's Triton counters and the previous revision's are read
through Prometheus (:func:`~tritonkit.serve.prometheus.query_window`, the pods of one revision
selected by :func:`revision_pods`) and judged by the one pure analysis, against the SLO and the
previous revision as baseline. An ``llm`` model (by its kind in the release's lock) is read with
the engine's series too — TTFT/TPOT buckets, waiting and running sequences, KV-cache usage, and
its error responses (``tritonkit_llm_request_failure_total``, which Triton counts as successes) —
and judged, as ``tritonkit check`` and the local gate judge it, on TTFT/TPOT p99 against
``ttft_p99_ms``/``tpot_p99_ms`` and on the baseline's TTFT/TPOT. A violation below 100 % sets
``canaryTrafficPercent: 0``; at 100 % the previous release is applied again; either way the
history records the evidence ("rollback (analysis of v3 at 10%: echo: p99 …)") and the error
exits 8. RawDeployment cannot split traffic: its walk is one step, a blue/green switch then the
window, compared with the window before the switch, undone by re-applying the previous release.

**A walk outlives its process.** The walk holds the environment's lock (``envs/<name>/lock``) and,
from its first traffic step on, journals each step (``envs/<name>/journal.json``, as the local
environment does, :mod:`~tritonkit.deploy.transaction`), removing the journal once the outcome is
settled. A walk killed in between leaves the journal: the next ``promote``, ``rollback``,
``status``, ``repair`` or ``recover`` on the environment undoes it (Flagger's way with an analysis
that did not finish: the new release did not prove itself, so the previous one gets the traffic):
below 100 % with ``canaryTrafficPercent: 0``, at 100 % by applying the previous release again,
and records that in the history. While a walk runs, ``status`` does not wait for it: it names
the walker and shows the InferenceService's traffic split (:meth:`KServeEnvironment.traffic`).

Not covered by a live test on the development machine (no cluster there); the gate logic is
unit-tested on status documents, the object rendering against golden YAML, and the walk with its
PromQL against a real Prometheus scraping real Tritons (tests/integration/test_canary_analysis.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tritonkit.artifact.lock import read_lock
from tritonkit.deploy.canary import Side, Step, plan_steps
from tritonkit.deploy.cluster import apply, cluster, read
from tritonkit.deploy.environment import Environment, Promotion, Rollout, Status, evidence
from tritonkit.deploy.gates import Gate, check_canary, evaluate, normalize_mode, rolled_back
from tritonkit.errors import ClusterError, PromoteError, UsageError
from tritonkit.events import Progress
from tritonkit.manifests.crd import require_valid
from tritonkit.manifests.kserve import render
from tritonkit.release.store import Release, ReleaseStore
from tritonkit.release.view import as_released
from tritonkit.serve.prometheus import query_window
from tritonkit.slo.analysis import Intent, Reads
from tritonkit.spec.schema import EnvironmentSpec, Spec


def revision_pods(namespace: str, service: str, revision: str | None) -> str:
    """PromQL label matchers for the predictor pods of one revision (or all, in RawDeployment).

    Knative names a revision's Deployment ``<revision>-deployment``, so its pods are
    ``<revision>-deployment-<replicaset>-<pod>`` (KServe's revisions: ``<isvc>-predictor-00002``);
    RawDeployment pods are ``<isvc>-predictor-<replicaset>-<pod>``. ``namespace`` and ``pod`` are
    the labels the Prometheus Operator and the usual ``kubernetes-pods`` scrape job attach (the
    same ones the KEDA query of :mod:`tritonkit.manifests.kserve` uses); a pod's own labels, such as
    ``serving.knative.dev/revision``, reach Prometheus only where the scrape maps them.
    """
    prefix = f"{revision}-deployment" if revision else f"{service}-predictor"
    return f'namespace="{namespace}",pod=~"{prefix}-.+"'


def serving_revision(document: Mapping[str, Any]) -> str | None:
    """The revision with the most traffic in an InferenceService's status (None: none yet)."""
    predictor = ((document.get("status", {}) or {}).get("components", {}) or {}).get("predictor", {}) or {}
    traffic = [t for t in predictor.get("traffic", []) or [] if t.get("revisionName")]
    if traffic:
        return str(max(traffic, key=lambda t: int(t.get("percent", 0) or 0))["revisionName"])
    ready = predictor.get("latestReadyRevision")
    return str(ready) if ready else None


def latest_revision(document: Mapping[str, Any]) -> str | None:
    """The predictor's latest ready revision in an InferenceService's status."""
    predictor = ((document.get("status", {}) or {}).get("components", {}) or {}).get("predictor", {}) or {}
    ready = predictor.get("latestReadyRevision")
    return str(ready) if ready else None


def llm_models(locked: Mapping[str, Mapping[str, Any]]) -> frozenset[str]:
    """The ``llm`` models among a lock's models (``Lock.models``: each entry records its kind)."""
    return frozenset(name for name, entry in locked.items() if entry.get("kind") == "llm")


def prometheus_reads(
    url: str,
    namespace: str,
    service: str,
    models: Iterable[str],
    seconds: float,
    revision: Callable[[Side], str | None],
    *,
    llm: Collection[str] = frozenset(),
) -> Callable[[Side], Reads]:
    """The ``read`` of :func:`tritonkit.deploy.canary.walk` for one InferenceService: each
    model's counters over the last ``seconds`` on the pods of the ``"new"`` or ``"previous"``
    revision (``revision(side)``: its name, ``None`` in RawDeployment), through Prometheus; the
    models in ``llm`` with their engine's series (:func:`~tritonkit.serve.prometheus.query_window`
    with ``llm=True``), the same reads ``tritonkit check --prometheus`` makes."""
    names = sorted(models)

    def reads(side: Side) -> Reads:
        pods = revision_pods(namespace, service, revision(side))
        return {name: query_window(url, name, seconds, selector=pods, llm=name in llm) for name in names}

    return reads


_SHIFTING = re.compile(r"shifting traffic to (\d+)%")
"""A walk's journal line for a traffic step it started (:meth:`KServeEnvironment._recover`)."""


class KServeEnvironment(Environment):
    """An environment declared in the spec with ``kind: kserve``."""

    analysable = True  # through the environment's Prometheus (``prometheus_url``)

    def __init__(
        self, store: ReleaseStore, spec: Spec, env: EnvironmentSpec, *, timeout_s: float = 900.0,
        lock_timeout: float = 120.0,
    ) -> None:  # fmt: skip
        super().__init__(store, env.name)
        self.spec, self.env, self.timeout_s, self.lock_timeout = spec, env, timeout_s, lock_timeout
        self._walking: Rollout | None = None

    # ------------------------------------------------------------------ one step at a time

    def promote(
        self, number: int, *, canary: int | None = None, progress: Progress | None = None,
        analysis_s: float | None = None, steps: Sequence[int] | None = None,
    ) -> Promotion:  # fmt: skip
        """As :meth:`Environment.promote`, under the environment's lock, after undoing a walk a
        killed process left (:meth:`recover`)."""
        self.store.path(number)  # an unknown or tampered release is refused before any wait
        with self.lock(f"promote v{number}"):
            self._recover(self._reporter(progress, "recover"))
            return super().promote(number, canary=canary, progress=progress, analysis_s=analysis_s, steps=steps)

    def rollback(self, *, progress: Progress | None = None) -> Promotion:
        """As :meth:`Environment.rollback`, under the lock, after undoing an interrupted walk."""
        self.store.path(self.rollback_target())
        with self.lock("rollback"):
            self._recover(self._reporter(progress, "recover"))
            return super().rollback(progress=progress)

    def recover(self, *, progress: Progress | None = None) -> str | None:
        """Undo the walk a killed process left in the journal; what was done, or None.

        Raises:
            ClusterError: the cluster cannot be reached (the journal stays for the next command).
            PromoteError: the traffic could not be sent back (the journal stays).
        """
        with self.lock("recovery"):
            return self._recover(self._reporter(progress, "recover"))

    def repair(self, *, progress: Progress | None = None) -> list[str]:
        """Set damaged history lines aside and undo an interrupted walk; what was done."""
        with self.lock("repair"):
            found = self.repair_history()
            done = self._recover(self._reporter(progress, "repair"))
        if done is None and not found:
            return super().repair(progress=progress)  # refuses: nothing of tritonkit's to repair
        return found + ([done] if done else [])

    def status(self) -> Status:
        """The record, after undoing an interrupted walk (unless a walk is running right now: then
        its walker is named, nothing is waited for), and, while a walk's journal exists, the
        InferenceService's traffic split."""
        note = ""
        try:
            with self.lock("status (recovery)", timeout=0):
                note = self._recover(lambda _: None) or ""
        except UsageError as exc:
            note = exc.message  # a walk holds the lock: report it, do not wait
        except (ClusterError, PromoteError) as exc:
            note = f"an interrupted walk could not be undone yet: {exc.message}"
        base = super().status()
        running = self.journal.read()
        traffic = self.traffic(running) if running is not None else []
        return replace(base, note=note, traffic=traffic)

    def traffic(self, walk: Mapping[str, Any] | None = None) -> list[str]:
        """The InferenceService's traffic split, one line per revision ("10% on echo-predictor-00002
        (latest revision: v3)"); ``walk`` (a journal entry) names the latest revision's release."""
        current = self.current()
        target = walk.get("target") if walk else None
        release = self.store.get(target) if isinstance(target, int) else current
        if release is None:
            return []
        try:
            live = read(cluster(self.env), self._documents(release, None)[1]) or {}
        except (ClusterError, UsageError) as exc:
            return [f"unknown: {exc.message}"]
        predictor = ((live.get("status", {}) or {}).get("components", {}) or {}).get("predictor", {}) or {}
        lines = []
        for entry in predictor.get("traffic", []) or []:
            name = entry.get("revisionName") or predictor.get("latestReadyRevision") or "?"
            role = f"latest revision: {release.name}" if entry.get("latestRevision") else entry.get("tag") or "pinned"
            lines.append(f"{int(entry.get('percent', 0) or 0)}% on {name} ({role})")
        return lines

    def _recover(self, report: Callable[[str], None]) -> str | None:
        """Under the lock: undo the walk in the journal, record it, remove the journal."""
        entry = self.journal.read()
        if entry is None:
            return None
        target, previous = entry.get("target"), entry.get("previous")
        shifted = [int(m.group(1)) for line in entry.get("steps", []) if (m := _SHIFTING.fullmatch(str(line)))]
        what = f"walk of v{target} by pid {entry.get('pid', '?')}"
        known = {r.number for r in self.store.releases()}
        if not shifted or target not in known or previous not in known:
            done = f"closed the interrupted {what} (no traffic had moved)"
        else:
            assert isinstance(target, int) and isinstance(previous, int)
            action = f"rollback (interrupted {what} at {shifted[-1]}%)"
            if shifted[-1] < 100:
                outcome = self._send_back(self.store.get(target), self.store.get(previous), action, report)
                if outcome != "ok":
                    raise PromoteError(
                        f"the interrupted {what} could not be undone: {outcome}",
                        hint=f"see 'kubectl -n {self.env.namespace} describe inferenceservice'; "
                        "the next command tries again",
                    )
            else:
                self._switch(previous, canary=None, progress=None, action=action)
            done = f"undid the interrupted {what} at {shifted[-1]}%: all traffic back on v{previous}"
        report(done)
        self.journal.clear()
        return done

    def _send_back(self, target: Release, previous: Release, action: str, report: Callable[[str], None]) -> str:
        """KServe's canary rollback: ``canaryTrafficPercent: 0`` on ``target``'s objects sends all
        traffic to the previous, still running revision; gated, recorded; the outcome."""
        report(f"rolling back: canaryTrafficPercent 0 (all traffic to {previous.name})")
        documents = self._documents(target, None)
        documents[1]["spec"]["predictor"]["canaryTrafficPercent"] = 0
        client = cluster(self.env)
        apply(documents, self.env, client)
        back = self._wait(client, documents[1], "Serverless", 0, report, judge=lambda d, m, c: rolled_back(d))
        outcome = "ok" if back.passed else f"failed: canaryTrafficPercent 0: {back.reason}"
        self.record(action, self.current(), previous, outcome)
        return outcome

    def _analysed(
        self, number: int, previous: Release, seconds: float, steps: Sequence[int] | None, intent: Intent,
        progress: Progress | None,
    ) -> Promotion:  # fmt: skip
        """The walk, with its journal removed once its outcome is settled: passed, or the traffic
        back on the previous release. Otherwise (killed, the cluster gone mid-walk, the traffic not
        back) the journal stays for the next command to undo."""
        try:
            entry = super()._analysed(number, previous, seconds, steps, intent, progress)
        except PromoteError:
            walked = self._walking
            if walked is not None and walked.undone and walked.undone[-1] == "ok":
                self.journal.clear()
            raise
        self.journal.clear()
        return entry

    def _check_analysable(self, canary: int | None, steps: Sequence[int] | None) -> None:
        """Analysis reads Triton's metrics through the environment's Prometheus, in traffic steps
        (checked here only for their form: whether the mode can split traffic is the cluster's).

        Raises:
            UsageError: malformed steps, a single canary percentage besides them, or no
                ``prometheus_url``.
        """
        plan_steps(steps, split=True)
        if canary is not None:
            raise UsageError(
                "a single canary percentage and an analysis in traffic steps exclude each other",
                hint="make the canary the first traffic step (10,50,100)",
            )
        if not self.env.prometheus_url:
            raise UsageError(
                f"promotion analysis reads Triton's metrics through Prometheus, and environment "
                f"'{self.name}' has no prometheus_url",
                hint=f"add 'prometheus_url: http://prometheus.monitoring:9090' (the Prometheus that scrapes "
                f"the predictor pods) to environment '{self.name}' in tritonkit.yaml",
            )

    def _rollout(
        self, number: int, previous: Release, seconds: float, steps: Sequence[int] | None, intent: Intent,
        judged: list[Step], progress: Progress | None,
    ) -> Rollout:  # fmt: skip
        """Traffic steps on this cluster (Serverless: KServe's canaryTrafficPercent; otherwise one
        step at 100 %), each side's window read from Prometheus over the window that just ended."""
        report = self._reporter(progress, "analysis")
        target = self.store.get(number)
        documents = self._documents(target, None)
        client = cluster(self.env)
        live = read(client, documents[1]) or {}
        mode = self._mode(live)
        service = documents[1]["metadata"]["name"]
        revisions: dict[str, str | None] = {"previous": serving_revision(live) if mode == "Serverless" else None}

        def shift(percent: int) -> None:
            if percent == 0:  # KServe's canary rollback: the previous revision is still running
                rollout.undone.append(self._send_back(target, previous, evidence(number, judged[-1]), report))
                return
            if self.journal.read() is None:  # from the first traffic step on, a killed walk is undone
                self.journal.begin({"action": "walk", "target": number, "previous": previous.number})
            self.journal.step(f"shifting traffic to {percent}%")
            rollout.entries.append(self._switch(number, canary=percent if percent < 100 else None, progress=progress,
                                                action="promote"))  # fmt: skip
            if mode == "Serverless" and revisions.get("new") is None:
                revisions["new"] = latest_revision(read(client, documents[1]) or {})

        def restore() -> None:
            self._switch(previous.number, canary=None, progress=progress, action=evidence(number, judged[-1]))
            rollout.undone.append("ok")

        def revision(side: Side) -> str | None:
            if mode == "Serverless" and revisions.get(side) is None:
                raise ClusterError(f"cannot tell which revision of {service} is the {side} one from its status")
            return revisions.get(side)

        engines = llm_models(read_lock(self.store.path(number)).models)  # the new release's kinds, both sides
        reads = prometheus_reads(
            str(self.env.prometheus_url), self.env.namespace, service, intent, seconds, revision, llm=engines
        )
        rollout = Rollout(
            steps=plan_steps(steps, split=mode == "Serverless"), shift=shift, restore=restore, read=reads,
            stuck_hint=f"see 'kubectl -n {self.env.namespace} describe inferenceservice {service}'",
        )  # fmt: skip
        self._walking = rollout
        return rollout

    def _mode(self, live: Mapping[str, Any]) -> str:
        """The live InferenceService's mode (the cluster's wins over the spec's)."""
        annotated = (live.get("metadata", {}) or {}).get("annotations", {}).get("serving.kserve.io/deploymentMode")
        return normalize_mode(annotated or self.env.mode)

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
            mode = self._mode(live)  # KServe >= 0.17 writes Knative / Standard
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
        released = as_released(self.spec, self.store.path(release.number))  # vN's intent, not today's spec
        documents = render(released, self.env, release, references[-1])
        if canary:
            documents[1]["spec"]["predictor"]["canaryTrafficPercent"] = canary
        require_valid(documents)  # before any cluster is touched
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
