"""Ensembles: Triton's ``ensemble`` platform, generated from spec steps and checked before serving.

Pure functions over ModelConfigs. :func:`ensemble_config` turns an ``ensemble`` spec entry and
the built configs of its step models into the ensemble's ModelConfig (inputs derived from the
tensors no step produces, outputs from ``expose``, ``ensemble_scheduling`` with
``input_map``/``output_map``). :func:`wiring_problems` checks a config against the configs of
the models it names — used at build time and again by ``tritonkit verify``:

* every step model exists (with a "did you mean") and is not the ensemble itself;
* every required step input is fed, and only inputs and outputs the step model has are mapped;
* every tensor is produced once, before it is consumed (no cycles), or is an ensemble input;
* dtype and dims agree across every edge (``-1`` matches anything), and batching agrees: a
  batching ensemble needs batching steps whose ``max_batch_size`` is at least its own.

Each problem names the ensemble, the step and the tensor.

Example:
    >>> config = ensemble_config(spec_entry, {"classifier": c1, "postprocess": c2})
"""

from __future__ import annotations

from collections.abc import Mapping

from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.build.modelconfig import dims_compatible
from tritonkit.errors import SpecError, did_you_mean
from tritonkit.spec.schema import EnsembleModel

PLATFORM = "ensemble"


def _io(config: pb.ModelConfig) -> tuple[dict[str, pb.ModelInput], dict[str, pb.ModelOutput]]:
    return {i.name: i for i in config.input}, {o.name: o for o in config.output}


def _type(data_type: int) -> str:
    return pb.DataType.Name(data_type).removeprefix("TYPE_")


def ensemble_config(model: EnsembleModel, configs: Mapping[str, pb.ModelConfig]) -> pb.ModelConfig:
    """The ModelConfig of ``model``, from its steps and their models' configs.

    Raises:
        SpecError: any wiring problem (all of them in the message, the first in the hint).
    """
    if model.steps is None:
        raise SpecError(f"ensemble '{model.name}' has no steps loaded", hint="load the spec with load_spec()")
    config = pb.ModelConfig(name=model.name, platform=PLATFORM, max_batch_size=model.max_batch_size)
    produced: dict[str, tuple[str, pb.ModelOutput]] = {}
    consumed: dict[str, tuple[str, pb.ModelInput]] = {}
    for step in model.steps:
        scheduled = config.ensemble_scheduling.step.add(model_name=step.model, model_version=-1)
        for name, tensor in sorted(step.inputs.items()):
            scheduled.input_map[name] = tensor
        for name, tensor in sorted(step.outputs.items()):
            scheduled.output_map[name] = tensor
        if step.model in configs:
            inputs, outputs = _io(configs[step.model])
            for name, tensor in step.outputs.items():
                if name in outputs:
                    produced.setdefault(tensor, (step.model, outputs[name]))
            for name, tensor in step.inputs.items():
                if name in inputs:
                    consumed.setdefault(tensor, (step.model, inputs[name]))
    for tensor in sorted(set(consumed) - set(produced)):
        _, source = consumed[tensor]
        feeds = [
            step_inputs[name]
            for s in model.steps
            if s.model in configs
            for step_inputs in [_io(configs[s.model])[0]]
            for name, fed in s.inputs.items()
            if fed == tensor and name in step_inputs
        ]
        optional = all(f.optional for f in feeds)  # optional only where every consumer may go without
        config.input.append(pb.ModelInput(name=tensor, data_type=source.data_type, dims=source.dims, optional=optional))
    # A decoupled (streaming) step makes the ensemble stream: every response of that step flows
    # on through the later steps to the client. Triton 2.51 runs it either way; the config says
    # so, so that clients and `tritonkit generate` see a decoupled model in its metadata.
    if any(configs[s.model].model_transaction_policy.decoupled for s in model.steps if s.model in configs):
        config.model_transaction_policy.decoupled = True
    consumed_names = {t for step in model.steps for t in step.inputs.values()}
    exposed = model.expose if model.expose is not None else sorted(set(produced) - consumed_names)
    for tensor in exposed:
        if tensor in produced:
            _, output = produced[tensor]
            config.output.append(pb.ModelOutput(name=tensor, data_type=output.data_type, dims=output.dims))
    problems = wiring_problems(config, configs)
    problems += [
        f"ensemble '{model.name}': expose: no step produces tensor '{tensor}'"
        + (f" ({hint})" if (hint := did_you_mean(tensor, sorted(produced))) else "")
        for tensor in exposed
        if tensor not in produced
    ]
    if problems:
        raise SpecError("; ".join(problems), hint=problems[0])
    return config


def wiring_problems(config: pb.ModelConfig, configs: Mapping[str, pb.ModelConfig]) -> list[str]:
    """Everything wrong with ensemble ``config`` given the configs of the repository's models."""
    name = config.name
    problems: list[str] = []
    available = {t.name: (t.data_type, list(t.dims), "the ensemble's input") for t in config.input}
    steps = list(config.ensemble_scheduling.step)
    pending = list(range(len(steps)))
    producers: dict[str, str] = {}
    for index, step in enumerate(steps):  # unknown models and names first
        where = f"ensemble '{name}' step {index + 1} ({step.model_name})"
        if step.model_name == name:
            problems.append(f"{where}: an ensemble cannot run itself")
        elif step.model_name not in configs:
            hint = did_you_mean(step.model_name, sorted(m for m in configs if m != name))
            problems.append(f"{where}: no model '{step.model_name}' in the repository" + (f" ({hint})" if hint else ""))
        else:
            problems += _check_names(where, step, configs[step.model_name])
        for tensor in step.output_map.values():
            if tensor in producers:
                problems.append(f"{where}: tensor '{tensor}' is already produced by {producers[tensor]}")
            producers.setdefault(tensor, step.model_name)
    if problems:
        return problems  # wiring by name must be right before types and order mean anything
    progress = True
    while pending and progress:  # run steps in any order their inputs allow; what never runs is a cycle
        progress = False
        for index in list(pending):
            step = steps[index]
            if not all(t in available for t in step.input_map.values()):
                continue
            problems += _check_step(name, index, step, configs[step.model_name], config.max_batch_size, available)
            inputs, outputs = _io(configs[step.model_name])
            for output_name, tensor in step.output_map.items():
                if output_name in outputs:
                    out = outputs[output_name]
                    available[tensor] = (out.data_type, list(out.dims), f"{step.model_name}.{output_name}")
            pending.remove(index)
            progress = True
    for index in pending:
        step = steps[index]
        missing = sorted(t for t in step.input_map.values() if t not in available)
        problems.append(
            f"ensemble '{name}' step {index + 1} ({step.model_name}): tensor(s) {', '.join(missing)} are never "
            "produced before this step (a cycle, or a missing ensemble input)"
        )
    for output in config.output:
        if output.name not in available:
            problems.append(f"ensemble '{name}': output '{output.name}' is produced by no step")
    return problems


def _check_step(
    name: str,
    index: int,
    step: pb.ModelEnsembling.Step,
    step_config: pb.ModelConfig,
    max_batch_size: int,
    available: Mapping[str, tuple[int, list[int], str]],
) -> list[str]:
    where = f"ensemble '{name}' step {index + 1} ({step.model_name})"
    problems = []
    inputs, _ = _io(step_config)
    for input_name, tensor in step.input_map.items():
        data_type, dims, source = available[tensor]
        wanted = inputs[input_name]
        if data_type != wanted.data_type:
            problems.append(
                f"{where}: tensor '{tensor}' is {_type(data_type)} (from {source}) but input '{input_name}' "
                f"takes {_type(wanted.data_type)}"
            )
        elif not dims_compatible(dims, list(wanted.dims), either_wildcard=True):
            problems.append(
                f"{where}: tensor '{tensor}' has dims {dims} (from {source}) but input '{input_name}' "
                f"takes {list(wanted.dims)}"
            )
    if max_batch_size > 0 and step_config.max_batch_size < max_batch_size:
        problems.append(
            f"{where}: max_batch_size {step_config.max_batch_size} is below the ensemble's {max_batch_size}"
            + (" (the step does not batch)" if step_config.max_batch_size == 0 else "")
        )
    if max_batch_size == 0 and step_config.max_batch_size > 0:
        problems.append(f"{where}: the step batches but the ensemble has max_batch_size 0")
    return problems


def _check_names(where: str, step: pb.ModelEnsembling.Step, step_config: pb.ModelConfig) -> list[str]:
    """Mapped names exist on the step model, and every required input is fed."""
    problems = []
    inputs, outputs = _io(step_config)
    for input_name in step.input_map:
        if input_name not in inputs:
            hint = did_you_mean(input_name, sorted(inputs))
            problems.append(
                f"{where}: '{input_name}' is not an input of {step.model_name}" + (f" ({hint})" if hint else "")
            )
    for input_name, spec in inputs.items():
        if input_name not in step.input_map and not spec.optional:
            problems.append(f"{where}: input '{input_name}' is not fed")
    for output_name in step.output_map:
        if output_name not in outputs:
            hint = did_you_mean(output_name, sorted(outputs))
            problems.append(
                f"{where}: '{output_name}' is not an output of {step.model_name}" + (f" ({hint})" if hint else "")
            )
    return problems
