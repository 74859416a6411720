"""config.pbtxt rendering against golden files, and parse errors that keep line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonkit.build import pbtxt
from tritonkit.build.modelconfig import model_config, tensors_from_config
from tritonkit.spec.schema import OnnxModel, PythonModel, TensorSpec

GOLDEN = Path(__file__).parents[1] / "golden"


def _full_onnx_model() -> OnnxModel:
    return OnnxModel.model_validate(
        {
            "name": "classifier",
            "kind": "onnx",
            "file": "model.onnx",
            "max_batch_size": 32,
            "dynamic_batching": {
                "max_queue_delay_microseconds": 2000,
                "preferred_batch_size": [8, 16],
                "default_queue_policy": {
                    "timeout_action": "DELAY",
                    "default_timeout_microseconds": 5000,
                    "max_queue_size": 64,
                },
            },
            "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
            "model_warmup": [{"name": "w", "batch_size": 4, "data": "zero"}],
            "parameters": {"intra_op_thread_count": 1, "enable": True},
        }
    )


def test_onnx_config_matches_golden() -> None:
    ins = [TensorSpec(name="features", dtype="FP32", dims=[4]), TensorSpec(name="mask", dtype="int64", dims=[-1])]
    outs = [TensorSpec(name="logits", dtype="float32", dims=[3])]
    text = pbtxt.render(model_config(_full_onnx_model(), backend="onnxruntime", inputs=ins, outputs=outs))
    assert text == (GOLDEN / "classifier.pbtxt").read_text()


def test_python_config_without_batching_writes_max_batch_size_zero() -> None:
    model = PythonModel.model_validate(
        {
            "name": "post",
            "kind": "python",
            "path": "post",
            "inputs": [{"name": "text", "dtype": "BYTES", "dims": [1]}],
            "outputs": [{"name": "label", "dtype": "STRING", "dims": [1]}],
        }
    )
    text = pbtxt.render(model_config(model, backend="python", inputs=model.inputs, outputs=model.outputs))
    assert text == (GOLDEN / "post.pbtxt").read_text()
    assert "max_batch_size: 0\n" in text
    assert pbtxt.parse(text).max_batch_size == 0


def test_render_parse_round_trip() -> None:
    ins = [TensorSpec(name="features", dtype="FP32", dims=[4])]
    config = model_config(_full_onnx_model(), backend="onnxruntime", inputs=ins, outputs=ins)
    again = pbtxt.parse(pbtxt.render(config))
    assert again == config
    assert tensors_from_config(again)[0] == ins


def test_parse_error_keeps_line_and_column() -> None:
    with pytest.raises(pbtxt.PbtxtError) as info:
        pbtxt.parse('name: "m"\nmax_batch_size: 4\ninput { nmae: "x" }\n')
    assert (info.value.line, info.value.column) == (3, 9)
    assert "nmae" in str(info.value)
