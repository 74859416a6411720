"""tritonkit check against the real Triton's metrics: a gate that fails when live latency breaks the SLO."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from click.testing import CliRunner

from tests.helpers import copy_example
from tritonkit import TritonServer
from tritonkit.cli import main
from tritonkit.errors import SloViolation


@pytest.mark.parametrize(("p99_ms", "code"), [(0.001, SloViolation.exit_code), (60_000, 0)])
def test_check_judges_live_traffic_against_the_slo(
    demo_server: TritonServer, tmp_path: Path, p99_ms: float, code: int
) -> None:
    project = copy_example(tmp_path / "model_repository")
    spec = project / "tritonkit.yaml"
    spec.write_text(spec.read_text() + f"slo: {{p99_ms: {p99_ms}}}\n")
    stop = time.monotonic() + 4

    def traffic() -> None:
        client = grpcclient.InferenceServerClient(demo_server.endpoints.grpc_url)
        tensor = grpcclient.InferInput("features", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        while time.monotonic() < stop:
            client.infer("classifier", [tensor])
        client.close()

    sender = threading.Thread(target=traffic)
    sender.start()
    args = [
        "check",
        "classifier",
        "-f",
        str(spec),
        "--metrics-url",
        demo_server.endpoints.metrics_url,
        "--window",
        "2s",
    ]
    result = CliRunner().invoke(main, args)
    sender.join()
    assert result.exit_code == code, result.output + result.stderr
    assert "classifier:" in result.output and "req/s" in result.output
    if code:
        assert "violates its SLO" in result.output and "p99" in result.stderr and "hint:" in result.stderr


def test_check_with_no_traffic_is_inconclusive_not_ok(demo_server: TritonServer, tmp_path: Path) -> None:
    """Issue 25, defect 6: check with no traffic said ok. No data is its own exit code (17)."""
    from tritonkit.errors import Inconclusive

    project = copy_example(tmp_path / "model_repository")
    spec = project / "tritonkit.yaml"
    spec.write_text(spec.read_text() + "slo: {p99_ms: 60000}\n")
    args = ["check", "postprocess", "-f", str(spec), "--metrics-url", demo_server.endpoints.metrics_url]
    result = CliRunner().invoke(main, [*args, "--window", "1s"])  # nobody calls postprocess here
    assert result.exit_code == Inconclusive.exit_code, result.output + result.stderr
    assert "inconclusive" in result.output and "too little traffic to judge" in result.stderr
