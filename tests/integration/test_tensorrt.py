"""kind: tensorrt — everything that does not need a GPU, and the real engine build where one exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tritonclient.grpc import model_config_pb2 as pb

from tests.helpers import write_add_model
from tritonkit import build_repository, load_spec
from tritonkit.artifact.hashing import hash_tree
from tritonkit.artifact.lock import write_lock
from tritonkit.build import pbtxt
from tritonkit.build.builders.tensorrt import derive_profiles, preflight, tensorrt_config
from tritonkit.build.engines import Runtime, check_servable, engine_problems, runtime
from tritonkit.cli import main
from tritonkit.errors import BuildError, ServerError, SpecError
from tritonkit.spec.schema import TensorRTModel, TensorSpec

LOCAL = runtime()
HAS_GPU_TRT = LOCAL.tensorrt is not None and LOCAL.gpu_name is not None
WHY_NOT = (
    f"needs TensorRT and an NVIDIA GPU (here: TensorRT {LOCAL.tensorrt or 'missing'}, GPU {LOCAL.gpu_name or 'none'})"
)

X = TensorSpec(name="x", dtype="FP32", dims=[-1, 4])
MASK = TensorSpec(name="mask", dtype="INT64", dims=[-1])

SPEC = """\
name: trt
models:
  - name: add
    kind: onnx
    file: model.onnx
    max_batch_size: 8
  - name: add_trt
    kind: tensorrt
    from_model: add
    max_batch_size: 8
    opt_batch_size: 4
    fp16: true
"""


def test_profiles_from_max_batch_size_and_dynamic_dims() -> None:
    profiles = derive_profiles([X, MASK], 32, None, {"x": [[1, 8, 64]], "mask": [[1, 8, 64]]}, None)
    assert profiles == [
        {
            "x": {"min": [1, 1, 4], "opt": [32, 8, 4], "max": [32, 64, 4]},
            "mask": {"min": [1, 1], "opt": [32, 8], "max": [32, 64]},
        }
    ]
    fixed = TensorSpec(name="f", dtype="FP32", dims=[3])
    assert derive_profiles([fixed], 16, 4, {}, None) == [{"f": {"min": [1, 3], "opt": [4, 3], "max": [16, 3]}}]
    assert derive_profiles([fixed], 0, None, {}, None) == [{"f": {"min": [3], "opt": [3], "max": [3]}}]


def test_explicit_profiles_override_and_are_checked() -> None:
    explicit = [{"x": {"min": [1, 2, 4], "opt": [2, 2, 4], "max": [4, 2, 4]}}]
    assert derive_profiles([X], 4, None, {}, explicit) == explicit
    with pytest.raises(SpecError, match="rank 2, expected 3"):
        derive_profiles([X], 4, None, {}, [{"x": {"min": [1, 4], "opt": [1, 4], "max": [1, 4]}}])
    with pytest.raises(SpecError, match="misses input 'mask'"):
        derive_profiles([X, MASK], 4, None, {}, explicit)


@pytest.mark.parametrize(
    ("dynamic", "message"),
    [({}, "has 1 dynamic dim"), ({"x": [[1, 2, 3], [1, 2, 3]]}, "gives 2"), ({"y": [[1, 2, 3]]}, "unknown input 'y'")],
)
def test_dynamic_dims_must_cover_every_variable_dim(dynamic: dict[str, list[list[int]]], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        derive_profiles([X], 8, None, dynamic, None)


def test_tensorrt_config_is_a_plan_on_gpu_instances() -> None:
    model = TensorRTModel(kind="tensorrt", name="eng", onnx="m.onnx", max_batch_size=8)
    text = pbtxt.render(tensorrt_config(model, [X], [TensorSpec(name="y", dtype="FP32", dims=[-1, 4])]))
    config = pbtxt.parse(text)
    assert config.platform == "tensorrt_plan" and not config.backend
    assert [pb.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == ["KIND_GPU"]
    assert config.max_batch_size == 8


def test_engine_lock_entry_is_checked_against_this_machine() -> None:
    entry = {"kind": "tensorrt", "engine": {"tensorrt": "10.3.0", "gpu": "NVIDIA L4", "compute_capability": "8.9"}}
    same = Runtime("10.3.0", "NVIDIA L4", "8.9")
    assert engine_problems(entry, same) == []
    other = Runtime("10.5.0", "NVIDIA H100 80GB HBM3", "9.0")
    problems = engine_problems(entry, other)
    assert "built with TensorRT 10.3.0, this machine has 10.5.0" in problems[0]
    assert "compute capability 8.9 (NVIDIA L4), this GPU is 9.0" in problems[1]
    assert engine_problems(entry, Runtime(None, None, None)) == []  # nothing known here: nothing to refuse


def test_serving_engines_is_refused_where_they_cannot_run(tmp_path: Path) -> None:
    entry = {"kind": "tensorrt", "engine": {"tensorrt": "10.3.0", "gpu": "NVIDIA L4", "compute_capability": "8.9"}}
    write_lock(tmp_path, "r", {"eng": entry})
    with pytest.raises(ServerError, match="embedded server lacks"):
        check_servable(tmp_path, embedded=True)
    with pytest.raises(ServerError, match="need an NVIDIA GPU"):
        check_servable(tmp_path, embedded=False, local=Runtime("10.3.0", None, None))
    with pytest.raises(ServerError, match="compute capability 8.9"):
        check_servable(tmp_path, embedded=False, local=Runtime("10.3.0", "NVIDIA A100", "8.0"))
    check_servable(tmp_path, embedded=False, local=Runtime("10.3.0", "NVIDIA L4", "8.9"))


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_precision_flags_are_refused_on_tensorrt_11(precision: str) -> None:
    gpu = ("NVIDIA H100 80GB HBM3", "9.0")
    preflight(Runtime("10.13.3.9", *gpu), "eng", precision)  # TensorRT 10 has the flags
    preflight(Runtime("11.4.0.106", *gpu), "eng", "fp32")  # strongly typed: the ONNX types decide
    with pytest.raises(BuildError, match=rf"{precision}: true needs TensorRT 10; TensorRT 11.4.0.106") as caught:
        preflight(Runtime("11.4.0.106", *gpu), "eng", precision)
    assert "Q/DQ" in (caught.value.hint or "")


@pytest.mark.skipif(HAS_GPU_TRT, reason="this machine can build engines; the refusal is for machines that cannot")
def test_build_without_gpu_stops_before_touching_anything(tmp_path: Path) -> None:
    write_add_model(tmp_path / "model.onnx")
    (tmp_path / "tritonkit.yaml").write_text(SPEC)
    out, cache = tmp_path / "dist", tmp_path / "cache"
    (out / "earlier").mkdir(parents=True)
    (out / "earlier" / "keep.txt").write_text("x")
    before = hash_tree(out)
    result = CliRunner().invoke(
        main, ["build", "-f", str(tmp_path / "tritonkit.yaml"), "-o", str(out), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 3, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2
    assert "kind: tensorrt needs" in lines[0] and "add_trt" in lines[0]
    assert "tritonkit[tensorrt]" in lines[1] and "GPU host" in lines[1] and "--skip-kind tensorrt" in lines[1]
    assert hash_tree(out) == before
    assert not cache.exists() or not [p for p in cache.iterdir() if not p.name.startswith(".")]


def test_skip_kind_builds_the_rest(tmp_path: Path) -> None:
    write_add_model(tmp_path / "model.onnx")
    (tmp_path / "tritonkit.yaml").write_text(SPEC)
    result = CliRunner().invoke(
        main,
        ["build", "-f", str(tmp_path / "tritonkit.yaml"), "-o", str(tmp_path / "dist"), "--skip-kind", "tensorrt"],
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert "skipped (--skip-kind): add_trt" in result.output
    lock = json.loads((tmp_path / "dist" / "trt" / "tritonkit.lock.json").read_text())
    assert sorted(lock["models"]) == ["add"]


def test_onnx_gpu_accelerator_is_rendered(tmp_path: Path) -> None:
    write_add_model(tmp_path / "model.onnx")
    (tmp_path / "tritonkit.yaml").write_text(
        "name: acc\nmodels:\n  - name: add\n    kind: onnx\n    file: model.onnx\n    max_batch_size: 8\n"
        "    accelerator: {name: tensorrt, precision_mode: FP16, max_workspace_size_bytes: 1073741824}\n"
    )
    result = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "dist", cache_dir=tmp_path / "cache")
    config = pbtxt.parse((result.path / "add" / "config.pbtxt").read_text())
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert dict(accelerator.parameters) == {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"}


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU_TRT, reason=WHY_NOT)
def test_real_engine_build_records_its_gpu(tmp_path: Path) -> None:
    write_add_model(tmp_path / "model.onnx")
    (tmp_path / "tritonkit.yaml").write_text(SPEC)
    result = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "dist", cache_dir=tmp_path / "cache")
    assert (result.path / "add_trt" / "1" / "model.plan").stat().st_size > 0
    entry = json.loads((result.path / "tritonkit.lock.json").read_text())["models"]["add_trt"]
    assert entry["engine"]["tensorrt"] == LOCAL.tensorrt
    assert entry["engine"]["compute_capability"] == LOCAL.compute_capability
    assert entry["engine"]["reproducible"] is False
    assert entry["engine"]["profiles"][0]["x"]["opt"][0] == 4
    again = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "dist", cache_dir=tmp_path / "cache")
    assert again.digest == result.digest  # the cache key decides reuse, not the engine bytes
    timing = list((tmp_path / "cache" / "tensorrt-timing").iterdir())
    assert timing and timing[0].stat().st_size > 0
