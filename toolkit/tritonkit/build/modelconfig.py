"""Spec model + resolved I/O → Triton ``ModelConfig`` (the pure mapping, no I/O).

Tensors without dims become ``dims: [1]``: with ``reshape { shape: [] }`` when the model batches
(a rank-1 batched tensor), plain for a scalar of a non-batching model (Triton refuses an empty
reshape there; the onnxruntime backends take ``[1]`` for a scalar). See :func:`config_dims`.

Example:
    >>> config = model_config(model, backend="onnxruntime", inputs=ins, outputs=outs)
    >>> print(pbtxt.render(config))
"""

from __future__ import annotations

from collections.abc import Sequence

from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.spec import dtypes
from tritonkit.spec.intent import queue_policy
from tritonkit.spec.schema import DynamicBatching, ModelBase, TensorSpec, Warmup


def model_config(
    model: ModelBase,
    *,
    backend: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> pb.ModelConfig:
    """Build the ModelConfig Triton will load for ``model``.

    Args:
        model: the spec entry (batching, instances, warm-up and parameters come from it).
        backend: the Triton backend name (``onnxruntime``, ``python``).
        inputs: resolved inputs, dims without the batch dimension.
        outputs: resolved outputs, dims without the batch dimension.

    Returns:
        The protobuf message; render it with :func:`tritonkit.build.pbtxt.render`.
    """
    config = pb.ModelConfig(name=model.name, backend=backend, max_batch_size=model.max_batch_size)
    for tensor in inputs:
        item = pb.ModelInput(
            name=tensor.name,
            data_type=pb.DataType.Value(dtypes.config_type(tensor.dtype)),
            dims=config_dims(tensor.dims),
            optional=tensor.optional,
        )
        if not tensor.dims and model.max_batch_size > 0:
            item.reshape.SetInParent()  # reshape { shape: [] }: the model sees no extra dim
        config.input.append(item)
    for tensor in outputs:
        out = pb.ModelOutput(
            name=tensor.name,
            data_type=pb.DataType.Value(dtypes.config_type(tensor.dtype)),
            dims=config_dims(tensor.dims),
        )
        if not tensor.dims and model.max_batch_size > 0:
            out.reshape.SetInParent()
        config.output.append(out)
    if model.dynamic_batching is not None:
        config.dynamic_batching.CopyFrom(_batching(model.dynamic_batching))
    _admission(config, model)
    for group in model.instance_group:
        config.instance_group.append(
            pb.ModelInstanceGroup(
                count=group.count,
                kind=pb.ModelInstanceGroup.Kind.Value(group.kind),
                gpus=group.gpus or [],
            )
        )
    config.model_warmup.extend(_warmup(warmup, inputs) for warmup in model.model_warmup)
    for key in sorted(model.parameters):
        value = model.parameters[key]
        text = str(value).lower() if isinstance(value, bool) else str(value)
        config.parameters[key].string_value = text
    return config


def _batching(spec: DynamicBatching) -> pb.ModelDynamicBatching:
    batching = pb.ModelDynamicBatching(
        max_queue_delay_microseconds=spec.max_queue_delay_microseconds,
        preferred_batch_size=spec.preferred_batch_size,
        preserve_ordering=spec.preserve_ordering,
    )
    if spec.default_queue_policy is not None:
        policy = spec.default_queue_policy
        batching.default_queue_policy.CopyFrom(
            pb.ModelQueuePolicy(
                timeout_action=pb.ModelQueuePolicy.TimeoutAction.Value(policy.timeout_action),
                default_timeout_microseconds=policy.default_timeout_microseconds,
                allow_timeout_override=policy.allow_timeout_override,
                max_queue_size=policy.max_queue_size,
            )
        )
    return batching


def _warmup(warmup: Warmup, inputs: Sequence[TensorSpec]) -> pb.ModelWarmup:
    entry = pb.ModelWarmup(name=warmup.name, batch_size=warmup.batch_size, count=warmup.count)
    for tensor in inputs:
        if tensor.optional:
            continue
        sample = pb.ModelWarmup.Input(
            data_type=pb.DataType.Value(dtypes.config_type(tensor.dtype)),
            # warm-up data needs concrete dims; a variable dim gets a size of 1
            dims=[d if d > 0 else 1 for d in config_dims(tensor.dims)],
        )
        if warmup.data == "zero":
            sample.zero_data = True
        else:
            sample.random_data = True
        entry.inputs[tensor.name].CopyFrom(sample)
    return entry


def config_dims(dims: Sequence[int]) -> list[int]:
    """The ``dims`` config.pbtxt carries for a tensor whose model-side dims are ``dims``.

    Triton refuses an input or output without dims ("must specify 'dims'"), so a tensor with
    none is declared as ``dims: [1]``. For a batching model that is a rank-1 batched tensor
    (a classifier's ``label [N]``) and :func:`model_config` adds ``reshape { shape: [] }``:
    clients send and receive ``[batch, 1]``, the model sees ``[batch]``. For a non-batching
    model it is a scalar: Triton refuses an empty reshape there ("scalar tensors are not
    supported"), and the onnxruntime backends carry a rank-0 tensor as ``[1]``.
    """
    return list(dims) if dims else [1]


def same_tensor_dims(actual: list[int], declared: list[int]) -> bool:
    """Whether config or spec ``declared`` dims describe a graph tensor with ``actual`` dims.

    :func:`dims_compatible`, plus: a tensor without dims is declared as ``[1]`` (see
    :func:`config_dims`).
    """
    return dims_compatible(actual, declared) or (not actual and declared == [1])


def _admission(config: pb.ModelConfig, model: ModelBase) -> None:
    """Derive Triton's queue policy from the model's SLO (``max_queue_ms``) and measured capacity.

    Only for batching models (Triton's queue policy lives in the dynamic batcher; a model without
    ``dynamic_batching`` gets one with no delay) and only where the spec does not set
    ``default_queue_policy`` itself. The policy is a timeout (REJECT: a request queued longer is
    refused, UNAVAILABLE "Request timeout expired") on an unbounded queue; why a bounded one
    stalls Triton under overload is in :func:`tritonkit.spec.intent.queue_policy`.
    """
    instances = sum(group.count for group in model.instance_group) or 1
    plan = queue_policy(model.slo, model.capacity, max_batch_size=model.max_batch_size, instances=instances)
    if plan is None or model.max_batch_size == 0:
        return
    if model.dynamic_batching is not None and model.dynamic_batching.default_queue_policy is not None:
        return  # the spec's own policy wins
    config.dynamic_batching.default_queue_policy.CopyFrom(
        pb.ModelQueuePolicy(
            timeout_action=pb.ModelQueuePolicy.TimeoutAction.Value("REJECT"),
            default_timeout_microseconds=plan.timeout_us,
            allow_timeout_override=False,
            max_queue_size=plan.max_queue_size,
        )
    )


def tensors_from_config(config: pb.ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs a config declares, as spec tensors (inverse of the mapping)."""

    def convert(items: Sequence[pb.ModelInput] | Sequence[pb.ModelOutput]) -> list[TensorSpec]:
        return [
            TensorSpec(
                name=item.name,
                dtype=dtypes.from_config_type(pb.DataType.Name(item.data_type)),
                # a reshaped tensor is what the model sees: compare graphs against that
                dims=list(item.reshape.shape) if item.HasField("reshape") else list(item.dims),
                optional=bool(getattr(item, "optional", False)),
            )
            for item in items
        ]

    return convert(config.input), convert(config.output)


def dims_compatible(actual: list[int], declared: list[int], *, either_wildcard: bool = False) -> bool:
    """Whether ``declared`` dims fit ``actual`` ones: same rank, and each dim equal or ``-1``.

    By default only ``actual`` (a graph's dims) may be ``-1``: a graph that takes any size
    accepts a fixed one, a fixed graph dim does not accept "any". ``either_wildcard`` lets
    ``-1`` on either side match (an ensemble tensor passed from one step to another).
    """
    if len(actual) != len(declared):
        return False
    return all(a == d or a == -1 or (either_wildcard and d == -1) for a, d in zip(actual, declared))
