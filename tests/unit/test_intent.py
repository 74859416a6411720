"""Intent: SLO defaults, the derived queue policy, the capacity plan (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tritonclient.grpc import model_config_pb2 as pb

from tritonkit import Spec
from tritonkit.build.modelconfig import model_config
from tritonkit.cli import main
from tritonkit.slo.plan import plan_spec
from tritonkit.spec.intent import Capacity, QueuePolicyPlan, Slo, queue_policy
from tritonkit.spec.schema import TensorSpec

CAPACITY = {"rps": 2500, "concurrency": 24, "p99_ms": 9.1, "measured_on": {"cores": "2"}}
QUEUE_DOUBT = (
    "m is served with a queue policy and its capacity was measured without one (tune measures the model's "
    "batching alone): with a policy Triton stops prefetching batches and its batcher waits for the next request "
    "after each batch, so a replica holds less — measure the built model with 'tritonkit bench' (the price is in "
    "the docs' known limits)"
)
IO = {
    "path": "m",
    "inputs": [{"name": "x", "dtype": "FP32", "dims": [4]}],
    "outputs": [{"name": "y", "dtype": "FP32", "dims": [4]}],
}


def _spec(**model: object) -> Spec:
    return Spec.model_validate(
        {
            "name": "demo",
            "slo": {"p99_ms": 10, "max_queue_ms": 4, "headroom": 0.25},
            "models": [
                {"name": "m", "kind": "python", "max_batch_size": 8, **IO, **model},
                {"name": "n", "kind": "python", "max_batch_size": 8, **IO, "slo": {"peak_rps": 1000},
                 "capacity": {"rps": 500, "concurrency": 10, "p99_ms": 8}},
            ],
        }
    ).with_slo_defaults()  # fmt: skip


def test_a_models_slo_fills_its_gaps_from_the_repositorys() -> None:
    spec = _spec(slo={"p99_ms": 5, "peak_rps": 2000})
    assert spec.models[0].slo == Slo(p99_ms=5, peak_rps=2000, max_queue_ms=4, headroom=0.25)
    assert spec.models[1].slo is not None and spec.models[1].slo.p99_ms == 10


def test_a_model_opts_out_of_the_repositorys_admission_with_null() -> None:
    merged = _spec(slo={"max_queue_ms": None}).models[0].slo  # the repository's slo has max_queue_ms 4
    assert merged is not None and merged.max_queue_ms is None and merged.p99_ms == 10
    assert _spec(slo={"peak_rps": 10}).models[0].slo.max_queue_ms == 4  # unset, not null: inherited


def test_queue_policy_is_a_timeout_on_an_unbounded_queue() -> None:
    # a batch of 1 at 2500/s takes 0.4 ms: the 4 ms asked for fits, and a bounded queue would
    # stall Triton under overload (see queue_policy), so the size stays 0
    assert queue_policy(Slo(max_queue_ms=4), Capacity(**CAPACITY)) == QueuePolicyPlan(4000, 0)
    assert queue_policy(Slo(max_queue_ms=4), None) == QueuePolicyPlan(4000, 0)  # no capacity: as asked
    assert queue_policy(Slo(p99_ms=10), Capacity(**CAPACITY)) is None


def test_the_timeout_leaves_an_accepted_request_time_for_its_batch() -> None:
    # 4 a batch at 150/s: a batch takes 26.7 ms; admitted at the timeout, a request ends by
    # timeout + 26.7 ms, so p99 80 caps a 60 ms queue budget at 53.3 ms
    capacity = Capacity(rps=150, concurrency=4, p99_ms=30)
    assert queue_policy(Slo(p99_ms=80, max_queue_ms=60), capacity, max_batch_size=4) == QueuePolicyPlan(53_334, 0)
    assert queue_policy(Slo(p99_ms=80, max_queue_ms=40), capacity, max_batch_size=4) == QueuePolicyPlan(40_000, 0)


def test_the_config_gets_the_policy_unless_the_spec_sets_one() -> None:
    spec = _spec(capacity=CAPACITY, dynamic_batching={"max_queue_delay_microseconds": 100})
    x = [TensorSpec(name="x", dtype="FP32", dims=[4])]
    policy = model_config(spec.models[0], backend="python", inputs=x, outputs=x).dynamic_batching.default_queue_policy
    assert (policy.default_timeout_microseconds, policy.max_queue_size, policy.allow_timeout_override) == (
        4000,  # max_queue_ms 4: within p99 10 less one batch (max_batch_size 8 at 2500/s: 3.2 ms)
        0,
        False,
    )
    assert pb.ModelQueuePolicy.TimeoutAction.Name(policy.timeout_action) == "REJECT"
    own = {"max_queue_delay_microseconds": 100, "default_queue_policy": {"max_queue_size": 3}}
    spec = _spec(capacity=CAPACITY, dynamic_batching=own)
    config = model_config(spec.models[0], backend="python", inputs=x, outputs=x)
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 3


def test_plan_covers_the_sum_of_the_models_loads_with_headroom() -> None:
    spec = _spec(slo={"peak_rps": 2000}, capacity=CAPACITY)
    plan = plan_spec(spec, None)
    # (2000/2500 + 1000/500) x 1.25 = 3.5 -> 4 replicas
    assert plan.replicas == 4 and plan.max_replicas == 6
    first = plan.models[0]
    assert first.load == pytest.approx(0.8) and first.target_concurrency == 19 and first.missing == []


def test_the_environment_sets_an_availability_floor_and_a_capacity_from_other_hardware_is_doubted() -> None:
    """Issue 25, defect 10: minReplicas was always 1, and a 2-core GPU-less capacity was used for a
    GPU environment unchanged."""
    from tritonkit.spec.schema import EnvironmentSpec

    spec = _spec(slo={"peak_rps": 2000}, capacity={**CAPACITY, "measured_on": {"gpu": "none", "cores": "2"}})
    image = "nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64
    gpu_env = EnvironmentSpec(name="prod", namespace="ml", runtime_image=image, gpus=1, min_replicas=5)
    plan = plan_spec(spec, gpu_env)
    assert plan.min_replicas == 5 and plan.replicas == 5  # the floor, above the 4 the traffic needs
    assert plan.models[0].doubts == [
        QUEUE_DOUBT,
        "m's capacity was measured without a GPU; prod gives each replica 1: re-tune there",
    ]
    cpu_env = gpu_env.model_copy(update={"gpus": 0, "min_replicas": 2})
    plan = plan_spec(spec, cpu_env)
    assert plan.min_replicas == 2 and plan.replicas == 4 and plan.models[0].doubts == [QUEUE_DOUBT]


def test_a_capacity_measured_before_the_model_changed_or_on_other_cores_is_doubted() -> None:
    """Issue 25 defect 10: the capacity carries the digest of the settings it was measured with;
    a replica's CPU limit other than the cores it was measured on is said too."""
    from tritonkit.spec.schema import EnvironmentSpec

    measured = _spec(slo={"peak_rps": 2000}, capacity=CAPACITY).model("m")
    digest = measured.settings_digest()
    on = {"gpu": "none", "cores": "2", "settings": digest}
    same = _spec(slo={"peak_rps": 2000}, capacity={**CAPACITY, "measured_on": on})
    assert plan_spec(same, None).models[0].doubts == [QUEUE_DOUBT]
    changed = _spec(slo={"peak_rps": 2000}, max_batch_size=4, capacity={**CAPACITY, "measured_on": on})
    assert plan_spec(changed, None).models[0].doubts == [
        QUEUE_DOUBT,
        "m's capacity was measured before its spec last changed (batching, instances, parameters or the "
        "model itself): re-tune it",
    ]
    image = "nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64
    bigger = EnvironmentSpec(name="prod", namespace="ml", runtime_image=image, resources={"limits": {"cpu": "8"}})
    assert plan_spec(same, bigger).models[0].doubts == [
        QUEUE_DOUBT,
        "m's capacity was measured on 2 cores; prod's replicas are limited to 8: re-tune on a replica's hardware",
    ]


def test_plan_says_what_is_missing() -> None:
    plan = plan_spec(_spec(), None)
    assert plan.models[0].missing == [
        "slo.peak_rps (the expected peak traffic)",
        "a measured capacity: run 'tritonkit tune m'",
    ]


def test_plan_json(tmp_path: Path) -> None:
    spec = tmp_path / "tritonkit.yaml"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    spec.write_text(
        "name: demo\nslo: {peak_rps: 1000, p99_ms: 10}\nmodels:\n"
        "  - {name: m, kind: python, path: m, max_batch_size: 8,\n"
        "     inputs: [{name: x, dtype: FP32, dims: [4]}], outputs: [{name: y, dtype: FP32, dims: [4]}],\n"
        "     capacity: {rps: 400, concurrency: 8, p99_ms: 9}}\n"
    )
    result = CliRunner().invoke(main, ["plan", "-f", str(spec), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == "tritonkit/plan/v1" and document["replicas"] == 3  # 1000/400 x 1.2 = 3.0


def test_the_policy_never_refuses_what_only_waits_for_the_batch_running() -> None:
    # 4 requests a batch at 150/s: a batch takes 26.7 ms, longer than the 20 ms asked for, so
    # the timeout is one batch (20 ms refused 23% of the requests at half the capacity), with why
    capacity = Capacity(rps=150, concurrency=8, p99_ms=58)
    plan = queue_policy(Slo(max_queue_ms=20), capacity, max_batch_size=4)
    assert plan is not None and (plan.timeout_us, plan.max_queue_size) == (26_667, 0)
    assert "a batch takes 26.7 ms" in plan.note
    two = queue_policy(Slo(max_queue_ms=20), capacity, max_batch_size=4, instances=2)
    assert two is not None and two.timeout_us == 53_334  # a round of two batches, one on each instance
    tight = queue_policy(Slo(p99_ms=40, max_queue_ms=20), capacity, max_batch_size=4)
    assert tight is not None and "more than p99_ms 40" in tight.note  # 26.7 + 26.7 cannot fit in 40


def test_a_capacity_measured_without_the_queue_policy_it_is_served_with_is_doubted() -> None:
    """Issue 25 defect 9: with any queue policy Triton stops prefetching batches (core
    scheduler_utils.cc, PriorityQueue: support_prefetching_ only with no timeout, no override and
    no bound) and its batcher then misses the wake-up at the end of each batch
    (backend_model_instance.cc BackendThread: Payload::Execute notifies before DequeuePayload counts
    the instance as waiting; rate_limiter.cc PayloadSlotAvailable without prefetching asks for a
    waiting instance). benchmarks/slo_admission.py measured what that costs: a timeout no request
    reached raised the p99 at 0.9x the capacity from 122 to 338 ms. Tune measures without the
    policy, so the plan must not count that capacity as is."""
    assert plan_spec(_spec(capacity=CAPACITY), None).models[0].doubts == [QUEUE_DOUBT]

    def alone(**model: object) -> Spec:  # no repository-level slo: no max_queue_ms
        return Spec.model_validate(
            {"name": "d", "models": [{"name": "m", "kind": "python", "max_batch_size": 8, **IO, **model}]}
        )

    assert plan_spec(alone(capacity=CAPACITY), None).models[0].doubts == []
    bounded = alone(capacity=CAPACITY, dynamic_batching={"default_queue_policy": {"max_queue_size": 3}})
    assert plan_spec(bounded, None).models[0].doubts == [QUEUE_DOUBT]  # the spec's own policy: the same mode
    delayed = alone(capacity=CAPACITY, dynamic_batching={"default_queue_policy": {}})
    assert plan_spec(delayed, None).models[0].doubts == []  # an all-default policy keeps prefetching


def test_the_autoscalers_ceiling_comes_from_the_environment_and_a_guess_is_said() -> None:
    """Issue 25 defect 10: the maximum was an arbitrary 1.5x, said nowhere."""
    from tritonkit.spec.schema import EnvironmentSpec

    spec = _spec(slo={"peak_rps": 2000}, capacity=CAPACITY)  # 4 replicas at peak, with headroom
    image = "nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64
    env = EnvironmentSpec(name="prod", namespace="ml", runtime_image=image)
    guessed = plan_spec(spec, env)
    assert guessed.max_replicas == 6 and guessed.notes == [
        "max_replicas 6 is a guess (1.5x the plan): set the most prod may run in the environment"
    ]
    ceiling = plan_spec(spec, env.model_copy(update={"max_replicas": 10}))
    assert ceiling.max_replicas == 10 and ceiling.replicas == 4 and ceiling.notes == []
    short = plan_spec(spec, env.model_copy(update={"max_replicas": 3}))
    assert short.replicas == 3 and short.max_replicas == 3
    assert short.notes == [
        "the peak needs 4 replicas with headroom, but prod allows 3 (max_replicas): raise it, or expect the peak "
        "to break the SLO"
    ]
    with pytest.raises(ValueError, match="max_replicas 1 is below min_replicas 2"):
        EnvironmentSpec(name="prod", namespace="ml", runtime_image=image, min_replicas=2, max_replicas=1)


def test_an_llm_is_planned_in_tokens_and_one_planned_in_requests_is_doubted() -> None:
    """Issue 25 defect 11: an llm's plan was requests/s of the one request size tune sent."""
    llm = {"name": "chat", "kind": "llm", "random_init": {}}
    capacity = {"rps": 4, "concurrency": 8, "ttft_p99_ms": 200, "prompt_chars": 40, "output_tokens": 16}

    def spec(slo: dict[str, float], measured: dict[str, object]) -> Spec:
        return Spec.model_validate({"name": "d", "models": [{**llm, "slo": slo, "capacity": measured}]})

    tokens = plan_spec(spec({"peak_tokens_per_s": 4500}, {**capacity, "tokens_per_s": 1000}), None)
    chat = tokens.models[0]
    assert chat.load == pytest.approx(4.5) and tokens.replicas == 6  # 4.5 x 1.2 headroom -> 6
    assert (chat.peak_tokens_per_s, chat.capacity_tokens_per_s, chat.missing, chat.doubts) == (4500, 1000, [], [])
    old = plan_spec(spec({"peak_tokens_per_s": 4500}, capacity), None).models[0]  # measured before tokens/s
    assert old.load is None and old.missing == [
        "capacity.tokens_per_s: run 'tritonkit tune chat' again (it measures tokens/s)"
    ]
    requests = plan_spec(spec({"peak_rps": 8}, capacity), None).models[0]
    assert requests.load == 2 and requests.doubts == [
        "chat is planned in requests/s of the one size tune measured (40 prompt characters, 16 tokens out): "
        "give slo.peak_tokens_per_s to plan in tokens"
    ]
    nothing = plan_spec(spec({"ttft_p99_ms": 500}, capacity), None).models[0]
    assert nothing.missing == ["slo.peak_tokens_per_s (the expected peak, prompt + generated tokens/s)"]
