"""Model builders: one per model kind, all behind the small :class:`~.base.Builder` protocol.

:func:`builder_for` picks one by kind; the builders import only :mod:`.base` (and the ONNX
graph I/O), never this registry, so there is no cycle between the registry and the kinds.

Example:
    >>> builder = builder_for(model)
    >>> config = builder.build(ctx, model_dir)
"""

from __future__ import annotations

from tritonkit.build.builders.base import VERSION, BuildContext, Builder
from tritonkit.spec.schema import LlmModel, ModelBase, OnnxModel, PythonModel, TensorRTModel


def builder_for(model: ModelBase) -> Builder:
    """The builder for a spec entry's kind."""
    from tritonkit.build.builders.llm import LlmBuilder
    from tritonkit.build.builders.onnx import OnnxBuilder
    from tritonkit.build.builders.python import PythonBuilder
    from tritonkit.build.builders.tensorrt import TensorRTBuilder

    if isinstance(model, OnnxModel):
        return OnnxBuilder()
    if isinstance(model, PythonModel):
        return PythonBuilder()
    if isinstance(model, LlmModel):
        return LlmBuilder()
    if isinstance(model, TensorRTModel):
        return TensorRTBuilder()
    raise NotImplementedError(f"no builder for model kind of '{model.name}'")


__all__ = ["VERSION", "BuildContext", "Builder", "builder_for"]
