"""Tensors as users' models have them: exporter names, rank-1 and scalar tensors, non-tensor
outputs, external data, and the one request the load check sends (pure: graphs written here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from tritonkit.build import pbtxt
from tritonkit.build.modelconfig import model_config, tensors_from_config
from tritonkit.build.onnx_io import external_data_files, graph_io
from tritonkit.errors import SpecError
from tritonkit.serve.loadcheck import sample_request
from tritonkit.spec.schema import OnnxModel, TensorSpec

EXPORTER_NAMES = ["0", "3", "input.1", "onnx::Gemm_0", "encoder/layer.0/out:0", "1/out.put:0", "x y"]


@pytest.mark.parametrize("name", EXPORTER_NAMES)
def test_any_name_triton_accepts_is_a_valid_tensor_name(name: str) -> None:
    assert TensorSpec(name=name, dtype="FP32", dims=[4]).name == name


def test_an_empty_tensor_name_is_refused_as_triton_does() -> None:
    with pytest.raises(ValidationError):
        TensorSpec(name="", dtype="FP32", dims=[4])


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _classifier(path: Path, *, zipmap: bool) -> Path:
    x = helper.make_tensor_value_info("0", TensorProto.FLOAT, ["N", 4])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])
    outputs = [label]
    if zipmap:
        seq_map = helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
        )
        outputs.append(helper.make_value_info("output_probability", seq_map))
    nodes = [helper.make_node("ArgMax", ["0"], ["label"], axis=1, keepdims=0)]
    onnx.save(_model(helper.make_graph(nodes, "c", [x], outputs)), str(path))
    return path


def test_rank1_batched_output_renders_dims_1_with_reshape(tmp_path: Path) -> None:
    inputs, outputs = graph_io(_classifier(tmp_path / "m.onnx", zipmap=False), max_batch_size=8)
    assert [(t.name, t.dims) for t in inputs] == [("0", [4])]
    assert [(t.name, t.dtype, t.dims) for t in outputs] == [("label", "INT64", [])]
    spec = OnnxModel.model_validate({"name": "m", "kind": "onnx", "file": "m.onnx", "max_batch_size": 8})
    config = model_config(spec, backend="onnxruntime", inputs=inputs, outputs=outputs)
    text = pbtxt.render(config)
    parsed = pbtxt.parse(text)
    assert list(parsed.output[0].dims) == [1] and parsed.output[0].HasField("reshape"), text
    assert not parsed.input[0].HasField("reshape")
    assert '"0"' in text  # a numeric name is a quoted string
    # read back, the tensor is what the model sees: comparable with the graph again
    assert tensors_from_config(parsed)[1][0].dims == []


def test_scalar_of_a_non_batching_model_is_dims_1_without_reshape() -> None:
    spec = OnnxModel.model_validate({"name": "m", "kind": "onnx", "file": "m.onnx", "max_batch_size": 0})
    scalar = TensorSpec(name="total", dtype="FP32", dims=[])
    config = model_config(spec, backend="onnxruntime", inputs=[scalar], outputs=[scalar])
    assert list(config.output[0].dims) == [1] and not config.output[0].HasField("reshape")
    assert list(config.input[0].dims) == [1] and not config.input[0].HasField("reshape")


def test_warmup_of_a_reshaped_input_uses_the_config_dims() -> None:
    spec = OnnxModel.model_validate(
        {"name": "m", "kind": "onnx", "file": "m.onnx", "max_batch_size": 4, "model_warmup": [{"batch_size": 2}]}
    )
    config = model_config(spec, backend="onnxruntime", inputs=[TensorSpec(name="s", dtype="FP32", dims=[])], outputs=[])
    assert list(config.model_warmup[0].inputs["s"].dims) == [1]
    request = sample_request(config)
    assert request["s"].shape == (2, 1) and request["s"].dtype == np.float32


def test_sample_request_without_warmup_fills_variable_dims_and_skips_optional() -> None:
    spec = OnnxModel.model_validate({"name": "m", "kind": "onnx", "file": "m.onnx", "max_batch_size": 4})
    inputs = [
        TensorSpec(name="ids", dtype="INT64", dims=[-1]),
        TensorSpec(name="mask", dtype="INT64", dims=[-1], optional=True),
        TensorSpec(name="text", dtype="BYTES", dims=[1]),
    ]
    request = sample_request(model_config(spec, backend="onnxruntime", inputs=inputs, outputs=[]))
    assert {k: v.shape for k, v in request.items()} == {"ids": (1, 1), "text": (1, 1)}
    assert request["text"].dtype == object
    unbatched = OnnxModel.model_validate({"name": "m", "kind": "onnx", "file": "m.onnx"})
    fixed = sample_request(model_config(unbatched, backend="onnxruntime", inputs=inputs[:1], outputs=[]))
    assert fixed["ids"].shape == (1,)


def test_sequence_of_maps_output_is_refused_with_the_zipmap_way_out(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        graph_io(_classifier(tmp_path / "m.onnx", zipmap=True), max_batch_size=8)
    assert "'output_probability' is a sequence of maps" in caught.value.message
    assert "Triton cannot serve" in caught.value.message
    assert "'zipmap': False" in caught.value.hint and "batch axis" not in caught.value.hint


@pytest.mark.parametrize(
    ("type_proto", "word"),
    [
        (helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2])), "optional"),
        (helper.make_sparse_tensor_type_proto(TensorProto.FLOAT, [2, 2]), "sparse"),
        (helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, [])), "map"),
    ],
)
def test_other_unservable_types_are_refused(tmp_path: Path, type_proto: onnx.TypeProto, word: str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    odd = helper.make_value_info("odd", type_proto)
    onnx.save(_model(helper.make_graph([], "g", [x, odd], [x])), str(tmp_path / "m.onnx"))
    with pytest.raises(SpecError) as caught:
        graph_io(tmp_path / "m.onnx", max_batch_size=0)
    assert f"input 'odd' is a{'n' if word[0] in 'aeiou' else ''} {word}" in caught.value.message


def test_scalar_output_under_batching_says_to_drop_batching(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, [])
    onnx.save(
        _model(helper.make_graph([helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)], "g", [x], [total])),
        str(tmp_path / "m.onnx"),
    )
    assert graph_io(tmp_path / "m.onnx", max_batch_size=0)[1][0].dims == []
    with pytest.raises(SpecError) as caught:
        graph_io(tmp_path / "m.onnx", max_batch_size=8)
    assert "'total' is a scalar" in caught.value.message and "max_batch_size: 0" in caught.value.hint


def test_external_data_files_lists_every_location(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    model = _model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [weight]))
    onnx.save(model, str(tmp_path / "inline.onnx"))
    assert external_data_files(tmp_path / "inline.onnx") == []
    (tmp_path / "sub").mkdir()
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="sub/w.bin", size_threshold=0)
    assert external_data_files(tmp_path / "ext.onnx") == ["sub/w.bin"]


def test_external_data_outside_the_model_directory_is_refused(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    weight = numpy_helper.from_array(np.ones((2,), np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    weight.external_data.add(key="location", value="../elsewhere.bin")
    model = _model(helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [x], [weight]))
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(SpecError) as caught:
        external_data_files(tmp_path / "m.onnx")
    assert "'../elsewhere.bin'" in caught.value.message


def _untyped_output(path: Path, op_domain: str = "") -> Path:
    """``y = x + 1`` (or a custom-domain op) whose output carries no shape in the graph."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_value_info("y", helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    one = numpy_helper.from_array(np.ones((1,), np.float32), "one")
    node = helper.make_node("Add" if not op_domain else "Mystery", ["x", "one"], ["y"], domain=op_domain)
    model = _model(helper.make_graph([node], "g", [x], [y], [one]))
    if op_domain:
        model.opset_import.append(helper.make_opsetid(op_domain, 1))
    onnx.save(model, str(path))
    return path


def test_an_output_without_shape_gets_one_from_shape_inference(tmp_path: Path) -> None:
    _, outputs = graph_io(_untyped_output(tmp_path / "m.onnx"), max_batch_size=8)
    assert [(t.name, t.dims) for t in outputs] == [("y", [3])]


def test_an_output_whose_rank_nobody_knows_must_be_declared(tmp_path: Path) -> None:
    path = _untyped_output(tmp_path / "m.onnx", op_domain="com.example")
    with pytest.raises(SpecError) as caught:
        graph_io(path, max_batch_size=8)
    assert "output 'y' has no shape" in caught.value.message and "declare it under 'outputs'" in caught.value.hint
    declared = TensorSpec(name="y", dtype="FP32", dims=[3])
    assert graph_io(path, max_batch_size=8, declared=[declared])[1] == [declared]
