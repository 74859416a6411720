"""A capacity plan from intent: replicas, queue policy and autoscaling target per model.

Pure: it reads the spec's ``slo:`` (what traffic to expect, how much spare to keep) and the
``capacity:`` ``tritonkit tune`` measured (what one replica sustains within the budget), and
decides. One release runs all its models in each replica (one Triton per pod), so the replicas
of an environment cover the *sum* of the models' loads::

    replicas = ceil((1 + headroom) × Σ peak_rps(model) / capacity_rps(model))

(an ``llm`` model with ``slo.peak_tokens_per_s`` counts in tokens/s, prompt + generated, against
the ``capacity.tokens_per_s`` tune measured: an LLM's requests differ too much in size for
requests/s to measure its work)

(capacity was measured with each model alone; models that share a replica's CPU or GPU under
load may sustain less — re-measure them together before trusting a tight plan). The scaling
signal is concurrency per replica (in-flight requests, what Triton's queue actually limits), set
to the concurrency that gave the measured capacity, shrunk by the headroom — not CPU.

Example:
    >>> plan = plan_spec(loaded.spec, env=None)
    >>> plan.replicas, [m.target_concurrency for m in plan.models]
    (2, [20])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tritonkit.spec.intent import DEFAULT_HEADROOM, MeasuredOn, QueuePolicyPlan, queue_policy
from tritonkit.spec.schema import EnvironmentSpec, LlmModel, ModelBase, Spec


@dataclass(frozen=True)
class ModelPlan:
    """What the plan decides for one model, and what it could not (``missing``)."""

    model: str
    peak_rps: float | None
    capacity_rps: float | None
    load: float | None  # replicas' worth of work at peak, before headroom
    queue: QueuePolicyPlan | None
    target_concurrency: int | None  # in-flight requests per replica the autoscaler aims at
    target_rps: float | None  # requests/s per replica the autoscaler aims at
    missing: list[str] = field(default_factory=list)
    doubts: list[str] = field(default_factory=list)  # why the capacity may not hold where this plan runs
    # an llm model planned in tokens/s (prompt + generated): its peak and one replica's capacity
    peak_tokens_per_s: float | None = None
    capacity_tokens_per_s: float | None = None


@dataclass(frozen=True)
class Plan:
    """An environment's plan: replicas for all models together, and each model's part."""

    env: str
    replicas: int
    min_replicas: int
    max_replicas: int
    gpus_per_replica: int
    models: list[ModelPlan]
    notes: list[str] = field(default_factory=list)  # what the plan could not honour, or guessed

    @property
    def gpus(self) -> int:
        """GPUs the plan holds at peak (replicas × GPUs per replica)."""
        return self.replicas * self.gpus_per_replica

    def as_dict(self) -> dict[str, object]:
        """The plan as plain data (for ``--json``)."""
        return {
            "env": self.env,
            "replicas": self.replicas,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "gpus_per_replica": self.gpus_per_replica,
            "gpus": self.gpus,
            "notes": self.notes,
            "models": [
                {
                    "model": m.model,
                    "peak_rps": m.peak_rps,
                    "peak_tokens_per_s": m.peak_tokens_per_s,
                    "capacity_tokens_per_s": m.capacity_tokens_per_s,
                    "capacity_rps": m.capacity_rps,
                    "load": m.load,
                    "queue": None if m.queue is None else {"timeout_us": m.queue.timeout_us,
                                                           "max_queue_size": m.queue.max_queue_size,
                                                           "note": m.queue.note},
                    "target_concurrency": m.target_concurrency,
                    "target_rps": m.target_rps,
                    "missing": m.missing,
                    "doubts": m.doubts,
                }
                for m in self.models
            ],
        }  # fmt: skip


def plan_model(model: ModelBase, env: EnvironmentSpec | None = None) -> ModelPlan:
    """One model's part of the plan (``env``: where it runs, to doubt a capacity measured elsewhere)."""
    slo, capacity = model.slo, model.capacity
    missing, doubts = [], _doubts(model, env)
    tokens = slo.peak_tokens_per_s if slo is not None else None
    if tokens is None and (slo is None or slo.peak_rps is None):
        missing.append(
            "slo.peak_tokens_per_s (the expected peak, prompt + generated tokens/s)"
            if isinstance(model, LlmModel)
            else "slo.peak_rps (the expected peak traffic)"
        )
    if capacity is None:
        missing.append(f"a measured capacity: run 'tritonkit tune {model.name}'")
    spare = 1 + (slo.spare if slo is not None else DEFAULT_HEADROOM)
    if tokens is not None:  # an llm model's work is its tokens, whatever the requests' sizes
        if capacity is not None and capacity.tokens_per_s is None:
            missing.append(f"capacity.tokens_per_s: run 'tritonkit tune {model.name}' again (it measures tokens/s)")
        load = tokens / capacity.tokens_per_s if capacity is not None and capacity.tokens_per_s else None
    else:
        load = slo.peak_rps / capacity.rps if slo is not None and slo.peak_rps and capacity else None
        if isinstance(model, LlmModel) and load is not None and capacity is not None:
            doubts.append(
                f"{model.name} is planned in requests/s of the one size tune measured ({capacity.prompt_chars} "
                f"prompt characters, {capacity.output_tokens} tokens out): give slo.peak_tokens_per_s to plan "
                "in tokens"
            )
    return ModelPlan(
        model=model.name,
        peak_rps=slo.peak_rps if slo else None,
        capacity_rps=capacity.rps if capacity else None,
        load=load,
        queue=queue_policy(
            slo,
            capacity,
            max_batch_size=model.max_batch_size,
            instances=sum(group.count for group in model.instance_group) or 1,
        ),
        target_concurrency=max(1, math.floor(capacity.concurrency / spare)) if capacity else None,
        target_rps=capacity.rps / spare if capacity else None,
        missing=missing,
        doubts=doubts,
        peak_tokens_per_s=tokens,
        capacity_tokens_per_s=capacity.tokens_per_s if capacity is not None else None,
    )


def _doubts(model: ModelBase, env: EnvironmentSpec | None) -> list[str]:
    """Why the measured capacity may not hold where it is planned: the model changed since it
    was measured (its settings digest), or the environment's replicas are not the hardware it
    was measured on (GPU or not; CPU cores against the replica's CPU limit). The plan still
    counts the capacity, and says so."""
    if model.capacity is None:
        return []
    on = MeasuredOn.from_dict(model.capacity.measured_on)
    found = []
    if _queue_mode(model):
        found.append(
            f"{model.name} is served with a queue policy and its capacity was measured without one (tune "
            "measures the model's batching alone): with a policy Triton stops prefetching batches and its "
            "batcher waits for the next request after each batch, so a replica holds less — measure the built "
            "model with 'tritonkit bench' (the price is in the docs' known limits)"
        )
    if on.settings and on.settings != model.settings_digest():
        found.append(
            f"{model.name}'s capacity was measured before its spec last changed (batching, instances, "
            "parameters or the model itself): re-tune it"
        )
    if env is None:
        return found
    gpu = on.gpu not in ("", "none", "unknown")
    if on.gpu == "none" and env.gpus > 0:
        found.append(
            f"{model.name}'s capacity was measured without a GPU; {env.name} gives each replica {env.gpus}: "
            "re-tune there"
        )
    elif gpu and env.gpus == 0:
        found.append(f"{model.name}'s capacity was measured with {on.gpu}; {env.name} has none: re-tune there")
    limit = _cpus(env.resources.limits.get("cpu"))
    if on.cores.isdigit() and limit is not None and not gpu and abs(int(on.cores) - limit) > 1e-9:
        found.append(
            f"{model.name}'s capacity was measured on {on.cores} cores; {env.name}'s replicas are limited "
            f"to {limit:g}: re-tune on a replica's hardware"
        )
    return found


def _queue_mode(model: ModelBase) -> bool:
    """Whether Triton serves ``model`` in its queue-policy mode: a timeout or queue bound, the
    spec's own or one the build derives from ``slo.max_queue_ms`` (core ``scheduler_utils.cc``:
    ``PriorityQueue`` supports prefetching only with no timeout, no override and no bound)."""
    if model.max_batch_size == 0:
        return False  # no dynamic batcher, no queue policy
    own = model.dynamic_batching.default_queue_policy if model.dynamic_batching is not None else None
    if own is not None:
        return bool(own.default_timeout_microseconds or own.allow_timeout_override or own.max_queue_size)
    return model.slo is not None and model.slo.max_queue_ms is not None


def _cpus(quantity: str | None) -> float | None:
    """A Kubernetes CPU quantity (``"2"``, ``"1500m"``) in cores; None when absent or unreadable."""
    if not quantity:
        return None
    try:
        return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    except ValueError:
        return None


def plan_spec(spec: Spec, env: EnvironmentSpec | None) -> Plan:
    """The plan for ``env`` (``None``: the local environment, one replica per host)."""
    models = [plan_model(m, env) for m in spec.models if m.slo is not None or m.capacity is not None]
    spare = 1 + max((m.slo.spare for m in spec.models if m.slo is not None), default=DEFAULT_HEADROOM)
    total = sum(m.load for m in models if m.load is not None)
    floor = env.min_replicas if env is not None else 1  # the environment's availability floor
    replicas = max(floor, math.ceil(spare * total - 1e-9)) if total else floor
    notes = []
    ceiling = env.max_replicas if env is not None else None
    if ceiling is None:
        ceiling = max(replicas, math.ceil(replicas * 1.5))
        if env is not None:
            notes.append(
                f"max_replicas {ceiling} is a guess (1.5x the plan): set the most {env.name} may run in the environment"
            )
    elif ceiling < replicas:
        notes.append(
            f"the peak needs {replicas} replicas with headroom, but {env.name if env else 'local'} allows "
            f"{ceiling} (max_replicas): raise it, or expect the peak to break the SLO"
        )
        replicas = ceiling
    return Plan(
        env=env.name if env is not None else "local",
        replicas=replicas,
        min_replicas=floor,
        max_replicas=ceiling,
        gpus_per_replica=env.gpus if env is not None else 0,
        models=models,
        notes=notes,
    )
