"""Ensemble configs generated from spec steps, and every wiring mistake named before a server sees it."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from tritonkit import SpecError
from tritonkit.build import pbtxt
from tritonkit.build.ensembles import ensemble_config, wiring_problems
from tritonkit.spec.schema import EnsembleModel


def _config(name: str, inputs: dict, outputs: dict, max_batch_size: int = 32) -> pb.ModelConfig:
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    for tensor, (dtype, dims) in inputs.items():
        config.input.append(pb.ModelInput(name=tensor, data_type=pb.DataType.Value(dtype), dims=dims))
    for tensor, (dtype, dims) in outputs.items():
        config.output.append(pb.ModelOutput(name=tensor, data_type=pb.DataType.Value(dtype), dims=dims))
    return config


CONFIGS = {
    "classifier": _config("classifier", {"features": ("TYPE_FP32", [4])}, {"logits": ("TYPE_FP32", [3])}),
    "postprocess": _config(
        "postprocess",
        {"logits": ("TYPE_FP32", [3])},
        {"probabilities": ("TYPE_FP32", [3]), "label": ("TYPE_STRING", [1])},
    ),
}
STEPS = [
    {"model": "classifier", "inputs": {"features": "features"}, "outputs": {"logits": "logits"}},
    {"model": "postprocess", "inputs": {"logits": "logits"}, "outputs": {"label": "label", "probabilities": "p"}},
]


def _ensemble(steps: list[dict] = STEPS, **extra: object) -> EnsembleModel:
    return EnsembleModel.model_validate(
        {"name": "classify", "kind": "ensemble", "max_batch_size": 32, "steps": steps, **extra}
    )


def test_inputs_are_derived_and_unconsumed_outputs_exposed() -> None:
    config = ensemble_config(_ensemble(), CONFIGS)
    assert config.platform == "ensemble" and config.max_batch_size == 32
    assert [(i.name, list(i.dims)) for i in config.input] == [("features", [4])]
    assert sorted(o.name for o in config.output) == ["label", "p"]
    assert [s.model_name for s in config.ensemble_scheduling.step] == ["classifier", "postprocess"]
    assert dict(config.ensemble_scheduling.step[1].output_map) == {"label": "label", "probabilities": "p"}
    assert pbtxt.parse(pbtxt.render(config)) == config
    assert wiring_problems(config, {**CONFIGS, "classify": config}) == []


def test_expose_picks_outputs_and_unknown_names_get_a_suggestion() -> None:
    assert [o.name for o in ensemble_config(_ensemble(expose=["label"]), CONFIGS).output] == ["label"]
    with pytest.raises(SpecError, match="expose: no step produces tensor 'lable' \\(did you mean 'label'\\?\\)"):
        ensemble_config(_ensemble(expose=["lable"]), CONFIGS)


def _problem(steps: list[dict], configs: dict = CONFIGS) -> str:
    with pytest.raises(SpecError) as caught:
        ensemble_config(_ensemble(steps), configs)
    return caught.value.message


def test_unknown_model_and_tensor_names_get_suggestions() -> None:
    steps = [dict(STEPS[0], model="clasifier"), STEPS[1]]
    assert "step 1 (clasifier): no model 'clasifier' in the repository (did you mean 'classifier'?)" in _problem(steps)
    steps = [dict(STEPS[0], inputs={"feature": "features"}), STEPS[1]]
    message = _problem(steps)
    assert "'feature' is not an input of classifier (did you mean 'features'?)" in message
    assert "input 'features' is not fed" in message


def test_type_and_shape_must_agree_across_each_edge() -> None:
    wide = {
        **CONFIGS,
        "postprocess": _config("postprocess", {"logits": ("TYPE_FP32", [5])}, {"label": ("TYPE_STRING", [1])}),
    }
    steps = [STEPS[0], dict(STEPS[1], outputs={"label": "label"})]
    assert "tensor 'logits' has dims [3] (from classifier.logits) but input 'logits' takes [5]" in _problem(steps, wide)
    ints = {
        **CONFIGS,
        "postprocess": _config("postprocess", {"logits": ("TYPE_INT64", [3])}, {"label": ("TYPE_STRING", [1])}),
    }
    assert "tensor 'logits' is FP32 (from classifier.logits) but input 'logits' takes INT64" in _problem(steps, ints)


def test_cycles_and_double_producers_are_refused() -> None:
    loop = {
        "a": _config("a", {"x": ("TYPE_FP32", [1])}, {"y": ("TYPE_FP32", [1])}),
        "b": _config("b", {"y": ("TYPE_FP32", [1])}, {"x": ("TYPE_FP32", [1])}),
    }
    steps = [
        {"model": "a", "inputs": {"x": "x"}, "outputs": {"y": "y"}},
        {"model": "b", "inputs": {"y": "y"}, "outputs": {"x": "x"}},
    ]
    assert "never produced before this step (a cycle" in _problem(steps, loop)
    twice = [STEPS[0], dict(STEPS[0])]
    assert "tensor 'logits' is already produced by classifier" in _problem(twice)


def test_batching_must_agree_with_every_step() -> None:
    small = {
        **CONFIGS,
        "postprocess": _config("postprocess", {"logits": ("TYPE_FP32", [3])}, {"label": ("TYPE_STRING", [1])}, 8),
    }
    steps = [STEPS[0], dict(STEPS[1], outputs={"label": "label"})]
    assert "max_batch_size 8 is below the ensemble's 32" in _problem(steps, small)


def test_an_ensemble_takes_no_batching_settings_of_its_own() -> None:
    with pytest.raises(ValueError, match="an ensemble takes no dynamic_batching"):
        _ensemble(dynamic_batching={"max_queue_delay_microseconds": 100})
