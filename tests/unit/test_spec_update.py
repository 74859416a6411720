"""Writing tuned settings back into tritonkit.yaml keeps everything else byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import copy_example
from tritonkit import SpecError, TuneSettings, UsageError, load_spec
from tritonkit.spec.update import update_settings

EXAMPLE = Path(__file__).parents[2] / "model_repository"


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    copy_example(tmp_path / "repo")
    return tmp_path / "repo" / "tritonkit.yaml"


def test_update_changes_only_the_tuned_lines(spec_path: Path) -> None:
    before = spec_path.read_text()
    update = update_settings(spec_path, "classifier", TuneSettings(2, 64, 500, ()))
    assert spec_path.read_text() == before  # nothing written yet
    changed = [line for line in update.diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert sorted(changed) == sorted(
        [
            "-    max_batch_size: 32",
            "+    max_batch_size: 64",
            "-      max_queue_delay_microseconds: 2000",
            "+      max_queue_delay_microseconds: 500",
            "-      preferred_batch_size: [8, 16]",
            "-      - {count: 1, kind: KIND_CPU}",
            "+      - {count: 2, kind: KIND_CPU}",
        ]
    )
    update.write()
    assert "# The demo project" in spec_path.read_text()  # comments survive
    model = load_spec(spec_path).spec.model("classifier")
    assert model.max_batch_size == 64 and model.instance_group[0].count == 2
    assert model.dynamic_batching is not None and model.dynamic_batching.preferred_batch_size == []


def test_preferred_sizes_keep_flow_style(spec_path: Path) -> None:
    update = update_settings(spec_path, "classifier", TuneSettings(1, 32, 100, (16, 32)))
    assert "      preferred_batch_size: [16, 32]\n" in update.new


def test_invalid_result_is_refused_and_nothing_is_written(spec_path: Path) -> None:
    before = spec_path.read_text()
    with pytest.raises(SpecError, match="do not make a valid spec.*model_warmup"):
        update_settings(spec_path, "classifier", TuneSettings(1, 4, 0, ()))  # warm-up batch is 8
    assert spec_path.read_text() == before
    assert sorted(p.name for p in spec_path.parent.iterdir() if p.name.startswith(".")) == []


def test_unknown_model_gets_a_suggestion(spec_path: Path) -> None:
    with pytest.raises(UsageError, match="no model named 'clasifier'") as caught:
        update_settings(spec_path, "clasifier", TuneSettings(1, 32, 0, ()))
    assert caught.value.hint == "did you mean 'classifier'?"


def test_threads_and_a_variant_are_written_where_the_build_reads_them(spec_path: Path) -> None:
    variant = {"recipe": "int8-dynamic", "per_channel": True, "data": "models/classifier.py"}
    update = update_settings(spec_path, "classifier", TuneSettings(1, 32, 2000, (8, 16), threads=2), variant=variant)
    changed = [line for line in update.diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert sorted(changed) == sorted(
        [
            "-      intra_op_thread_count: 1",
            "+      intra_op_thread_count: 2",
            "+    variant: {recipe: int8-dynamic, per_channel: true, data: models/classifier.py}",
        ]
    )
    update.write()
    model = load_spec(spec_path).spec.model("classifier")
    assert model.parameters["intra_op_thread_count"] == 2
    assert model.variant is not None and model.variant.recipe == "int8-dynamic"


def test_a_written_capacity_records_the_settings_it_was_measured_with(spec_path: Path) -> None:
    """Issue 25 defect 10: a capacity stayed valid after max_batch_size changed; tune's capacity
    now carries the digest of the model's spec as the update leaves it."""
    capacity = {"rps": 900.0, "concurrency": 8, "p99_ms": 7.5, "measured_on": {"cores": "2", "meter": "perf_analyzer"}}
    update_settings(spec_path, "classifier", TuneSettings(2, 64, 500, ()), capacity=capacity).write()
    model = load_spec(spec_path).spec.model("classifier")
    assert model.capacity is not None and model.capacity.measured_on["settings"] == model.settings_digest()
    assert model.capacity.measured_on["meter"] == "perf_analyzer"
    changed = spec_path.read_text().replace("max_batch_size: 64", "max_batch_size: 48")
    spec_path.write_text(changed)
    assert load_spec(spec_path).spec.model("classifier").settings_digest() != model.settings_digest()


def test_a_chosen_gpu_accelerator_is_written_and_the_same_one_keeps_its_workspace(spec_path: Path) -> None:
    update = update_settings(spec_path, "classifier", TuneSettings(1, 32, 2000, (8, 16), accelerator="tensorrt-fp16"))
    assert "    accelerator: {name: tensorrt, precision_mode: FP16}\n" in update.new
    update.write()
    assert load_spec(spec_path).spec.model("classifier").accelerator.key == "tensorrt-fp16"
    text = spec_path.read_text().replace(
        "precision_mode: FP16}", "precision_mode: FP16, max_workspace_size_bytes: 1024}"
    )
    spec_path.write_text(text)
    again = update_settings(spec_path, "classifier", TuneSettings(2, 32, 2000, (8, 16), accelerator="tensorrt-fp16"))
    assert "max_workspace_size_bytes: 1024}" in again.new
    plain = update_settings(spec_path, "classifier", TuneSettings(1, 32, 2000, (8, 16)))
    assert "accelerator:" in plain.new  # none chosen: what the spec says stays


def test_accelerator_keys_name_the_execution_provider() -> None:
    from tritonkit.spec.schema import GpuAccelerator

    for key in ("tensorrt", "tensorrt-fp16", "tensorrt-int8", "cuda"):
        assert GpuAccelerator.from_key(key).key == key
    assert GpuAccelerator.from_key("tensorrt-fp16").precision_mode == "FP16"
    for bad in ("openvino", "cuda-fp16", "tensorrt-fp8"):
        with pytest.raises(ValueError):
            GpuAccelerator.from_key(bad)
