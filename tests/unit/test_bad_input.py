"""Bad input a user can hand tritonkit gets one line and a hint, never a traceback (issue "a root
of trust", row 6): .npy files that are text, truncated or object arrays; an address that is not
HOST:PORT; a non-UTF-8 or absurdly nested spec; a negative batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tritonkit.cli import main
from tritonkit.errors import SpecError, UsageError
from tritonkit.perf.inputs import load_inputs
from tritonkit.serve.client import check_address, connect
from tritonkit.spec.dtypes import load_npy
from tritonkit.spec.loader import load_spec


def _npy_cases(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "text.npy"
    text.write_text("1, 2, 3, 4\n")
    whole = tmp_path / "whole.npy"
    np.save(whole, np.arange(64, dtype=np.float32))
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(whole.read_bytes()[:100])
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    header_only = tmp_path / "header.npy"
    header_only.write_bytes(whole.read_bytes()[:6])
    return {"text": text, "truncated": truncated, "objects": objects, "header": header_only}


def test_an_unreadable_npy_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    for kind, path in _npy_cases(tmp_path).items():
        with pytest.raises(UsageError) as caught:
            load_npy(path, "input 'x'")
        assert str(path) in caught.value.message and "not a readable .npy array" in caught.value.message, kind
        assert "numpy.save" in caught.value.hint
    with pytest.raises(UsageError, match="object arrays and pickles are refused"):
        load_npy(tmp_path / "objects.npy", "input 'x'")


def test_bench_and_tune_input_data_refuse_an_unreadable_npy(tmp_path: Path) -> None:
    signature = {"x": ([-1, 4], "FP32")}
    for path in _npy_cases(tmp_path).values():
        with pytest.raises(UsageError, match="not a readable .npy array"):
            load_inputs(path, signature, batching=True)


@pytest.mark.parametrize("address", [":::", "host", "host:port", "http://h:1", "a:1/x", "u@h:1", ""])
def test_an_address_that_is_not_host_port_is_refused_before_any_client(address: str) -> None:
    with pytest.raises(UsageError, match="is not a HOST:PORT address"):
        connect(address, "http")
    with pytest.raises(UsageError):
        connect(address, "grpc")


def test_addresses_that_are_host_port_pass() -> None:
    for address in ("127.0.0.1:8000", "localhost:1", "[::1]:8001", "triton.example:443"):
        check_address(address)


def test_infer_with_a_bad_url_is_one_line_not_a_traceback() -> None:
    result = CliRunner().invoke(main, ["infer", "classifier", "--url", ":::"])
    assert result.exit_code == UsageError.exit_code, result.output
    assert "is not a HOST:PORT address" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", [["infer", "m"], ["bench", "m"]])
def test_a_batch_size_below_one_is_refused_by_the_option(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--batch-size", "-3"])
    assert result.exit_code == 2 and "-3 is not in the range x>=1" in result.output, result.output


def test_a_spec_that_is_not_utf8_names_the_byte_and_line(tmp_path: Path) -> None:
    spec = tmp_path / "tritonkit.yaml"
    spec.write_bytes(b"name: t\nmodels:\n  - name: caf\xe9\n    kind: python\n")
    with pytest.raises(SpecError, match=r"not UTF-8 text \(byte 0xe9 on line 3\)"):
        load_spec(spec)


@pytest.mark.parametrize(
    "nesting", ["[" * 5000 + "]" * 5000, "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 3000))]
)
def test_a_spec_nested_thousands_deep_is_a_spec_error(tmp_path: Path, nesting: str) -> None:
    spec = tmp_path / "tritonkit.yaml"
    spec.write_text("name: t\nmodels: " + nesting + "\n")
    with pytest.raises(SpecError):
        load_spec(spec)
