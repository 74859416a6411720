"""Real input data for bench and tune: the three file forms, and every mistake refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tritonkit.errors import UsageError
from tritonkit.perf.inputs import load_inputs, parse_shapes, random_inputs, to_analyzer_json

SIGNATURE = {"features": ([-1, 4], "FP32"), "text": ([-1, -1], "BYTES")}


def test_shapes_are_parsed_on_the_last_colon() -> None:
    assert parse_shapes(["x:3,224,224", "onnx::Gemm_0:16"]) == {"x": [3, 224, 224], "onnx::Gemm_0": [16]}
    for bad in ("x", "x:", "x:0", "x:a,b", ":4"):
        with pytest.raises(UsageError, match="is not NAME:d1,d2"):
            parse_shapes([bad])


def test_a_directory_gives_one_file_per_input_and_text_lines(tmp_path: Path) -> None:
    np.save(tmp_path / "features.npy", np.ones(4, dtype=np.float32))
    (tmp_path / "text.txt").write_text("a cat\na dog\n")
    arrays = load_inputs(tmp_path, SIGNATURE, batching=True)
    assert arrays["features"].shape == (4,) and arrays["text"].tolist() == [b"a cat", b"a dog"]


def test_perf_analyzer_json_round_trips(tmp_path: Path) -> None:
    sample = {"features": np.arange(4, dtype=np.float32), "text": np.array([b"hi"], dtype=object)}
    path = to_analyzer_json(sample, tmp_path / "in.json")
    assert json.loads(path.read_text())["data"][0]["text"] == {"content": ["hi"], "shape": [1]}
    again = load_inputs(path, SIGNATURE, batching=True)
    assert again["features"].tolist() == [0, 1, 2, 3] and again["text"].tolist() == [b"hi"]


def test_mistakes_name_the_input_and_the_file(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones(4, dtype=np.float64))
    with pytest.raises(UsageError, match="holds float64, the model wants FP32"):
        load_inputs(tmp_path / "x.npy", {"features": ([-1, 4], "FP32")}, batching=True)
    np.save(tmp_path / "y.npy", np.ones((2, 5), dtype=np.float32))
    with pytest.raises(UsageError, match=r"shape \[5\] does not fit \[4\]"):  # 2 requests (rows) of 5
        load_inputs(tmp_path / "y.npy", {"features": ([-1, 4], "FP32")}, batching=True)
    with pytest.raises(UsageError, match="gives one array but the model has 2 inputs"):
        load_inputs(tmp_path / "y.npy", SIGNATURE, batching=True)
    with pytest.raises(UsageError, match="not found"):
        load_inputs(tmp_path / "nothing-here.npy", SIGNATURE, batching=True)
    (tmp_path / "dir").mkdir()
    with pytest.raises(UsageError, match="neither features.npy nor"):
        load_inputs(tmp_path / "dir", SIGNATURE, batching=True)
    (tmp_path / "bad.json").write_text(json.dumps({"data": [{"feature": [1, 2, 3, 4]}]}))
    with pytest.raises(UsageError, match="unknown input 'feature'") as caught:
        load_inputs(tmp_path / "bad.json", SIGNATURE, batching=True)
    assert "did you mean 'features'?" in caught.value.hint


def test_random_data_takes_fixed_sizes_for_variable_dims() -> None:
    arrays = random_inputs(SIGNATURE, {"text": [3]}, batching=True, seed=0)
    assert arrays["features"].shape == (4,) and arrays["text"].shape == (3,)
    with pytest.raises(UsageError, match="unknown input 'txt'"):
        random_inputs(SIGNATURE, {"txt": [3]}, batching=True, seed=0)
