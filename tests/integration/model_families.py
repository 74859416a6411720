"""ONNX models as users bring them, made at test time from packages (no downloads).

Each maker writes one ``.onnx`` (plus external data where that is the point) into a directory
and returns a :class:`Family`: the spec entry that builds it and one request to compare Triton
against onnxruntime in-process. Names are whatever the exporter chose (``"0"``,
``onnx::Gemm_0``, ``input/0.x:y``): the tests must not rename anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass
class Family:
    """One model family: its spec entry and a request (input name -> array, batch dim included)."""

    name: str
    entry: dict[str, Any]
    request: dict[str, np.ndarray]
    file: str = ""
    notes: dict[str, Any] = field(default_factory=dict)


def _io_names(path: Path) -> tuple[list[str], list[str]]:
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [v.name for v in graph.input if v.name not in inits], [v.name for v in graph.output]


def torchscript_default_names(root: Path) -> Family:
    """torch.onnx's TorchScript exporter with no input/output names: it picks them."""
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    path = root / "torchscript.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 4),), str(path), dynamo=False, opset_version=17)
    inputs, outputs = _io_names(path)
    # Re-export with a dynamic batch axis on the exporter's own names.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.randn(2, 4),),
            str(path),
            dynamo=False,
            opset_version=17,
            dynamic_axes={inputs[0]: {0: "batch"}, outputs[0]: {0: "batch"}},
        )
    request = {inputs[0]: np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)}
    entry = {"name": "torchscript", "kind": "onnx", "file": path.name, "max_batch_size": 8}
    return Family("torchscript", entry, request, path.name, {"inputs": inputs, "outputs": outputs})


def dynamo_export(root: Path) -> Family:
    """torch.onnx's dynamo exporter (onnxscript), with a dynamic batch dim."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(6, 5)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.proj(features)).sum(dim=-1, keepdim=True) * 2

    torch.manual_seed(0)
    path = root / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            Net().eval(),
            (torch.randn(2, 6),),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
            verbose=False,
        )
        program.save(str(path))
    inputs, _ = _io_names(path)
    request = {inputs[0]: np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)}
    entry = {"name": "dynamo", "kind": "onnx", "file": path.name, "max_batch_size": 16}
    return Family("dynamo", entry, request, path.name)


def sklearn_pipeline(root: Path, *, zipmap: bool = False) -> Family:
    """A scaler + logistic regression converted with skl2onnx (``zipmap=False``: tensor outputs)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    y = (x[:, 0] + 2 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(x, y)
    path = root / ("sklearn_zipmap.onnx" if zipmap else "sklearn.onnx")
    model = to_onnx(pipe, x[:1], options={"zipmap": zipmap}, target_opset=17)
    path.write_bytes(model.SerializeToString())
    inputs, _ = _io_names(path)
    entry = {"name": "sklearn", "kind": "onnx", "file": path.name, "max_batch_size": 8}
    return Family("sklearn", entry, {inputs[0]: x[:5]}, path.name)


def transformers_bert(root: Path) -> Family:
    """A tiny randomly initialised BERT exported with a dynamic batch and sequence dim."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    model = BertModel(config, add_pooling_layer=False).eval()
    model.config.attn_implementation = "eager"

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    path = root / "bert.onnx"
    ids = torch.randint(0, 64, (2, 7))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapper().eval(),
            (ids, torch.ones_like(ids)),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "last_hidden_state": {0: "batch", 1: "sequence"},
            },
        )
    rng = np.random.default_rng(4)
    request = {
        "input_ids": rng.integers(0, 64, (2, 11)).astype(np.int64),
        "attention_mask": np.ones((2, 11), dtype=np.int64),
    }
    entry = {"name": "bert", "kind": "onnx", "file": path.name, "max_batch_size": 4}
    return Family("bert", entry, request, path.name)


ODD_INPUT = "input/0.x:y"
ODD_OUTPUT = "1/out.put:0"


def external_data(root: Path, *, data_name: str = "weights.data") -> Family:
    """``y = x @ W + b`` with W and b saved as external data, and odd tensor names."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((8, 16)).astype(np.float32)
    bias = rng.standard_normal((16,)).astype(np.float32)
    x = helper.make_tensor_value_info(ODD_INPUT, TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info(ODD_OUTPUT, TensorProto.FLOAT, ["N", 16])
    nodes = [
        helper.make_node("MatMul", [ODD_INPUT, "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], [ODD_OUTPUT]),
    ]
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")]
    model = _model(helper.make_graph(nodes, "external", [x], [y], inits))
    path = root / "external.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name, size_threshold=0
    )
    request = {ODD_INPUT: rng.standard_normal((3, 8)).astype(np.float32)}
    entry = {"name": "external", "kind": "onnx", "file": path.name, "max_batch_size": 8}
    return Family("external", entry, request, path.name, {"data": data_name})


def fixed_batch(root: Path) -> Family:
    """No batch axis (``max_batch_size: 0``): a fixed [2, 4] input, a symbolic non-batch dim,
    and a scalar output (rank 0: Triton needs dims [1] + reshape [])."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    tokens = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["seq"])
    doubled = helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [2, 4])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, [])
    count = helper.make_tensor_value_info("count", TensorProto.INT64, ["seq"])
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["doubled"]),
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Identity", ["tokens"], ["count"]),
    ]
    model = _model(helper.make_graph(nodes, "fixed", [x, tokens], [doubled, total, count], [two]))
    path = root / "fixed.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(6)
    request = {"x": rng.standard_normal((2, 4)).astype(np.float32), "tokens": np.arange(5, dtype=np.int64)}
    entry = {"name": "fixed", "kind": "onnx", "file": path.name, "max_batch_size": 0}
    return Family("fixed", entry, request, path.name)


def empty_dim(root: Path) -> Family:
    """torch.onnx's TorchScript exporter on an input traced empty (``pad`` is [N, 0]): the graph
    has a dimension of 0, which Triton's config cannot hold (dims >= 1 or -1)."""
    import torch

    class Padded(torch.nn.Module):
        def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, pad], dim=1) * 2

    path = root / "padded.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Padded(), (torch.randn(2, 3), torch.zeros(2, 0)), str(path), input_names=["x", "pad"],
            output_names=["y"], dynamic_axes={"x": {0: "N"}, "pad": {0: "N"}, "y": {0: "N"}}, dynamo=False,
        )  # fmt: skip
    rng = np.random.default_rng(7)
    request = {"x": rng.standard_normal((2, 3)).astype(np.float32), "pad": np.zeros((2, 0), dtype=np.float32)}
    entry = {"name": "padded", "kind": "onnx", "file": path.name, "max_batch_size": 8}
    return Family("padded", entry, request, path.name)


def zipmap_graph(path: Path) -> Path:
    """A graph whose output is a sequence of maps, like skl2onnx's default ZipMap (no sklearn needed)."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])
    label = helper.make_tensor_value_info("output_label", TensorProto.INT64, ["N"])
    seq_map = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    )
    probabilities = helper.make_value_info("output_probability", seq_map)
    nodes = [
        helper.make_node("ArgMax", ["X"], ["output_label"], axis=1, keepdims=0),
        helper.make_node("SequenceEmpty", [], ["output_probability"]),
    ]
    onnx.save(_model(helper.make_graph(nodes, "zipmap", [x], [label, probabilities])), str(path))
    return path


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tritonkit-tests")
    model.ir_version = 8
    return model


MAKERS: dict[str, Callable[[Path], Family]] = {
    "torchscript": torchscript_default_names,
    "dynamo": dynamo_export,
    "sklearn": sklearn_pipeline,
    "bert": transformers_bert,
    "external": external_data,
    "fixed": fixed_batch,
    "padded": empty_dim,
}
