"""tritonkit check through a real Prometheus (Debian's), scraping the embedded Triton on 127.0.0.1:
the same PromQL a cluster would answer."""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import copy_example
from tests.integration.prometheus_server import classifier_traffic, running_prometheus
from tritonkit import TritonServer
from tritonkit.cli import main
from tritonkit.errors import SloViolation
from tritonkit.serve.prometheus import query

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="Debian's prometheus is not installed ('make sysdeps' installs it)"
)


@pytest.fixture(scope="module")
def prometheus(demo_server: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_prometheus(demo_server.endpoints.metrics_url, tmp_path_factory.mktemp("prometheus")) as url:
        yield url


def test_check_reads_the_same_numbers_through_prometheus(
    demo_server: TritonServer, prometheus: str, tmp_path: Path
) -> None:
    done = threading.Event()
    sender = classifier_traffic(demo_server.endpoints.grpc_url, 20, done)
    rate, deadline = math.nan, time.monotonic() + 15
    while not rate > 10 and time.monotonic() < deadline:  # until a few scrapes of traffic are stored
        time.sleep(1)
        rate = query(prometheus, 'sum(rate(nv_inference_request_success{model="classifier"}[5s]))')
    assert rate > 10, rate
    project = copy_example(tmp_path / "model_repository")
    spec = project / "tritonkit.yaml"
    spec.write_text(spec.read_text() + "slo: {p99_ms: 0.001}\n")  # a budget nothing meets
    args = ["check", "classifier", "-f", str(spec), "--prometheus", prometheus, "--window", "5s", "--json"]
    result = CliRunner().invoke(main, args)  # rates over the last 5 s: no waiting
    done.set()
    sender.join()
    assert result.exit_code == SloViolation.exit_code, result.output + result.stderr
    assert '"rps"' in result.stdout and '"ok": false' in result.stdout
    assert "p99" in result.stderr
