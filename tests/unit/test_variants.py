"""Accuracy of a model variant against the original (pure), its budget, and the data it is read from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from tritonkit.build.variants import accuracy, describe_recipe, mask_hint, request_masks
from tritonkit.errors import UsageError
from tritonkit.spec.inputdata import load_inputs, load_samples
from tritonkit.spec.intent import Accuracy, AccuracyBudget, Slo
from tritonkit.spec.schema import OnnxVariant


def test_identical_outputs_are_exact() -> None:
    outs = [[np.array([1.0, 2.0, 3.0], dtype=np.float32)], [np.array([0.0, 0.0, 0.0], dtype=np.float32)]]
    measured = accuracy(outs, outs)
    assert measured == Accuracy(samples=2, cosine=1.0, max_abs_error=0.0, top1=1.0)
    assert measured.exact
    assert AccuracyBudget().misses(measured) == ""


def test_cosine_is_the_worst_request_and_top1_the_share_that_agrees() -> None:
    ref = [[np.array([1.0, 0.0, 0.0])], [np.array([0.0, 1.0, 0.0])]]
    got = [[np.array([1.0, 0.1, 0.0])], [np.array([0.0, 0.4, 0.5])]]  # the second's arg-max moved
    measured = accuracy(ref, got)
    assert measured.cosine == pytest.approx(0.4 / np.sqrt(0.41))
    assert measured.max_abs_error == pytest.approx(0.6)
    assert measured.top1 == 0.5


def test_top1_needs_every_position_and_is_none_without_classes() -> None:
    ref = [[np.array([[1.0, 0.0], [0.0, 1.0]])]]
    assert accuracy(ref, [[np.array([[1.0, 0.0], [1.0, 0.0]])]]).top1 == 0.0  # one position of two moved
    scalar = [[np.array([2.0])]]  # a last dimension of 1: no classes to agree on
    assert accuracy(scalar, scalar).top1 is None


def test_integer_outputs_count_in_the_error_only() -> None:
    ref = [[np.array([3], dtype=np.int64), np.array([0.5, 0.5])]]
    got = [[np.array([4], dtype=np.int64), np.array([0.5, 0.5])]]
    measured = accuracy(ref, got)
    assert measured.cosine == pytest.approx(1.0) and measured.max_abs_error == 1.0


def test_a_zero_output_against_a_nonzero_one_has_cosine_zero() -> None:
    assert accuracy([[np.zeros(3)]], [[np.ones(3)]]).cosine == 0.0


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shape"):
        accuracy([[np.zeros(3)]], [[np.zeros(4)]])


def test_a_mask_leaves_padding_positions_out_of_every_figure() -> None:
    """Token embeddings [sequence, hidden] of one request whose last position is padding: the
    variant moved only the padded position, which nothing downstream reads."""
    ref = [[np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.2]]), np.array([0.5, 0.5])]]
    got = [[np.array([[1.0, 0.0], [0.0, 1.0], [-3.0, 4.0]]), np.array([0.5, 0.5])]]
    samples = [{"input_ids": np.array([7, 8, 0]), "attention_mask": np.array([1, 1, 0])}]
    whole = accuracy(ref, got)
    assert whole.cosine < 0.6 and whole.max_abs_error == pytest.approx(3.8) and whole.top1 == 0.0
    masked = accuracy(ref, got, request_masks(samples, "attention_mask"), "attention_mask")
    # the [3, 2] output is compared at its two real positions; the [2] output (not [3, ...]) whole
    assert masked.cosine == pytest.approx(1.0) and masked.exact and masked.top1 == 1.0
    assert masked.mask == "attention_mask" and whole.mask is None
    assert "where attention_mask is non-zero" in masked.describe()
    assert AccuracyBudget(mask="attention_mask").misses(masked) == ""  # a mask alone is an empty budget
    assert "only the original's exact outputs" in AccuracyBudget(mask="attention_mask").misses(whole)


def test_a_mask_must_be_an_input_whose_shape_an_output_follows() -> None:
    samples = [{"input_ids": np.array([7, 8, 0]), "attention_mask": np.array([1, 1, 0])}]
    with pytest.raises(UsageError, match="'attn' is not an input of the model") as missing:
        request_masks(samples, "attn")
    assert "attention_mask" in missing.value.message
    flat = [[np.array([0.5, 0.5])]]  # no output starts with the mask's [3]
    with pytest.raises(UsageError, match=r"shape \[3\] per request, but no output starts with it"):
        accuracy(flat, flat, request_masks(samples, "attention_mask"), "attention_mask")
    assert request_masks(samples, None) is None


def test_a_variant_dropped_with_padding_in_its_inputs_is_offered_the_mask() -> None:
    padded = [{"input_ids": np.array([7, 8, 0]), "attention_mask": np.array([1, 1, 0])}]
    assert "set slo.accuracy.mask: attention_mask" in mask_hint(padded)
    full = [{"input_ids": np.array([7, 8, 9]), "attention_mask": np.array([1, 1, 1])}]
    assert mask_hint(full) == "" and mask_hint([{"x": np.zeros(3)}]) == "" and mask_hint([]) == ""


def test_budget_names_every_miss() -> None:
    measured = Accuracy(samples=10, cosine=0.93, max_abs_error=1.1, top1=0.8)
    why = AccuracyBudget(min_cosine=0.98, max_abs_error=0.5, min_top1=0.99).misses(measured)
    assert "cosine 0.9300 < 0.98" in why and "max abs error 1.1 > 0.5" in why and "top-1 agreement 0.8000" in why
    assert AccuracyBudget(min_cosine=0.9).misses(measured) == ""
    assert "no output has classes" in AccuracyBudget(min_top1=0.9).misses(measured.model_copy(update={"top1": None}))
    assert "only the original's exact outputs" in AccuracyBudget().misses(measured)


def test_a_models_accuracy_budget_wins_over_the_repositorys() -> None:
    merged = Slo(accuracy=AccuracyBudget(min_top1=0.99)).over(Slo(p99_ms=10, accuracy=AccuracyBudget(min_cosine=0.9)))
    assert merged.p99_ms == 10 and merged.accuracy == AccuracyBudget(min_top1=0.99)


def test_a_recipe_that_changes_numerics_needs_data() -> None:
    with pytest.raises(ValidationError, match="changes the model's numerics"):
        OnnxVariant(recipe="int8-dynamic")
    assert OnnxVariant(recipe="optimized").data is None
    assert describe_recipe(OnnxVariant(recipe="int8-static", data="x.npy", per_channel=False)) == (
        "int8-static (per-tensor)"
    )


SIGNATURE = {"x": ([-1, 4], "FP32")}


def test_samples_are_the_rows_of_an_array_with_one_more_dimension(tmp_path: Path) -> None:
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "x.npy", rows)
    samples = load_samples(tmp_path / "x.npy", SIGNATURE, batching=True)
    assert [s["x"].tolist() for s in samples] == rows.tolist()
    np.save(tmp_path / "one.npy", rows[0])
    assert len(load_samples(tmp_path / "one.npy", SIGNATURE, batching=True)) == 1


def test_samples_are_every_entry_of_perf_analyzer_json(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"data": [{"x": [1, 2, 3, 4]}, {"x": {"content": [5, 6, 7, 8], "shape": [4]}}]}')
    samples = load_samples(data, SIGNATURE, batching=True)
    assert [s["x"].tolist() for s in samples] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert load_inputs(data, SIGNATURE, batching=True)["x"].tolist() == [1, 2, 3, 4]  # bench sends the first


def test_inputs_with_different_row_counts_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((3, 2), dtype=np.float32))
    np.save(tmp_path / "b.npy", np.zeros((4, 2), dtype=np.float32))
    signature = {"a": ([-1, 2], "FP32"), "b": ([-1, 2], "FP32")}
    with pytest.raises(UsageError, match="different numbers of requests"):
        load_samples(tmp_path, signature, batching=True)


def test_an_empty_json_data_list_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"data": []}')
    with pytest.raises(UsageError, match="not perf_analyzer input data"):
        load_samples(data, SIGNATURE, batching=True)


def test_making_a_variant_leaves_nothing_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime's pre-processing saves the model it could not finish inferring shapes for
    (sym_shape_infer_temp.onnx + <uuid>.data, the whole weights) in the working directory: a
    skl2onnx model (ai.onnx.ml operators) takes that path. Nothing may land in the user's
    directory, and skl2onnx's repeated opset import must not fail the quantizer."""
    pytest.importorskip("skl2onnx", reason="skl2onnx is in the dev extra")
    from tests.integration.model_families import sklearn_pipeline
    from tritonkit.build.variants import make_variant

    family = sklearn_pipeline(tmp_path)
    user = tmp_path / "cwd"
    user.mkdir()
    monkeypatch.chdir(user)
    samples = [{name: array[0] for name, array in family.request.items()}]
    target = tmp_path / "int8.onnx"
    variant = OnnxVariant(recipe="int8-dynamic", data="x.npy")
    make_variant(tmp_path / family.file, target, variant, samples=samples, batching=True, workdir=tmp_path / "w")
    assert target.is_file()
    assert list(user.iterdir()) == []


def test_a_gpu_server_is_offered_fp16_and_tensorrt_and_a_cpu_one_says_why_not() -> None:
    from tritonkit.perf.variants import candidates

    tried, skipped = candidates(data=True, gpu=True)
    labels = [t.label for t in tried]
    assert "fp16" in labels and "original on tensorrt" in labels and "original on tensorrt-fp16" in labels
    assert skipped == []
    tried, skipped = candidates(data=True, gpu=False)
    assert not any(t.accelerator for t in tried) and "fp16" not in [t.label for t in tried]
    assert len(skipped) == 1 and "tensorrt-fp16" in skipped[0] and "no GPU" in skipped[0]
    tried, skipped = candidates(data=False, gpu=True)
    assert [t.label for t in tried] == ["optimized"] and "GPU execution providers" in skipped[0]
