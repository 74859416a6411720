"""Small builders of test inputs shared by unit and integration tests."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Self

import onnx
from onnx import TensorProto, helper

from tritonkit.serve.endpoints import Endpoints

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "model_repository"


def copy_example(target: Path) -> Path:
    """Copy the example project to ``target`` and the top-level ``ensembles/`` its spec points at
    (``../ensembles``) beside it; returns ``target``."""
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".tritonkit", "dist", "releases", "__pycache__"))
    if not (target.parent / "ensembles").exists():
        shutil.copytree(ROOT / "ensembles", target.parent / "ensembles")
    return target


def write_add_model(path: Path, *, batch: bool = True, width: int = 4, elem_type: int = TensorProto.FLOAT) -> Path:
    """An ONNX graph ``y = x + 1`` with input ``x`` and output ``y`` of shape [batch?, width]."""
    dims: list[int | str] = (["batch"] if batch else []) + [width]
    x = helper.make_tensor_value_info("x", elem_type, dims)
    y = helper.make_tensor_value_info("y", elem_type, dims)
    one = helper.make_tensor("one", elem_type, [1], [1])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "add", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tritonkit-tests")
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


TINY_SPEC = "name: t\nmodels:\n  - name: m\n    kind: onnx\n    file: model.onnx\n    max_batch_size: 8\n"


def tiny_project(root: Path) -> Path:
    """A project of one ONNX model (``y = x + 1``) that builds in well under a second; returns its spec."""
    root.mkdir(parents=True)
    write_add_model(root / "model.onnx")
    (root / "tritonkit.yaml").write_text(TINY_SPEC)
    return root / "tritonkit.yaml"


class Background:
    """``threads`` threads running :meth:`run` from the start of a ``with`` block until its end
    (``stop`` is set, then each is joined): the traffic the promotion and analysis tests send
    while something changes under it. Subclasses count what came back."""

    def __init__(self, threads: int = 2) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]

    def run(self) -> None:
        raise NotImplementedError("a Background subclass sends its requests in run()")

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def port_flags(endpoints: Endpoints) -> list[str]:
    """``tritonkit serve``'s port flags for ``endpoints`` (from :meth:`Endpoints.allocate`)."""
    return ["--http-port", str(endpoints.http_port), "--grpc-port", str(endpoints.grpc_port),
            "--metrics-port", str(endpoints.metrics_port)]  # fmt: skip
