"""TTFT/TPOT SLOs of an llm model on the real engine: ``tritonkit check`` read straight from the
embedded Triton's metrics port and through Debian's real Prometheus, and the promotion analysis
gate, all under streamed generations."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.helpers import Background
from tests.integration.prometheus_server import running_prometheus
from tritonkit import Endpoints, TritonServer, build_repository, load_spec
from tritonkit.cli import main
from tritonkit.deploy.local import LocalEnvironment
from tritonkit.errors import PromoteError, SloViolation
from tritonkit.release.store import ReleaseStore
from tritonkit.serve.llm_client import generate
from tritonkit.serve.metrics import TTFT, Histogram
from tritonkit.serve.prometheus import query

pytest.importorskip("torch")
pytest.importorskip("transformers")

MODEL = "tiny-gpt2"
MET = "slo: {ttft_p99_ms: 60000, tpot_p99_ms: 60000, error_rate: 0.5}"
UNMEETABLE = "slo: {ttft_p99_ms: 0.001, tpot_p99_ms: 0.001}"  # no first token, no next token is that fast


def _spec(project: Path, slo: str, *, max_running: int = 8, max_tokens: int = 32) -> Path:
    """The example's llm.yaml with ``slo`` on its one model (and other engine settings)."""
    text = (Path(__file__).resolve().parents[2] / "model_repository" / "llm.yaml").read_text()
    text = text.replace("max_running: 8", f"max_running: {max_running}")
    text = text.replace("    default_max_tokens: 32\n", f"    default_max_tokens: {max_tokens}\n    {slo}\n")
    spec = project / f"llm-{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml"
    spec.write_text(text)
    return spec


class _Traffic(Background):
    """Streamed generations of ``max_tokens`` from ``clients`` threads until stopped; counts what came back."""

    def __init__(self, url: str, clients: int = 3, max_tokens: int = 12) -> None:
        super().__init__(threads=clients)
        self.url, self.done, self.failed = url, 0, 0
        self.params = {"max_tokens": max_tokens, "ignore_eos": True}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                result = generate(self.url, MODEL, "Hello there", self.params)
                self.done += result.error is None
                self.failed += result.error is not None
            except Exception:  # a version switching under the gate: keep sending
                self.failed += 1
                time.sleep(0.05)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[tuple[TritonServer, Path]]:
    """The example's tiny LLM on the embedded Triton; the project directory for specs."""
    project = tmp_path_factory.mktemp("llm-check")
    built = build_repository(load_spec(_spec(project, MET)), project / "dist", cache_dir=model_cache)
    server = TritonServer(built.path, endpoints=Endpoints.allocate())
    server.start()
    try:
        yield server, project
    finally:
        server.stop()


def _check(spec: Path, *source: str, window: str = "4s") -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(main, ["check", MODEL, "-f", str(spec), *source, "--window", window, "--json"])
    return result.exit_code, json.loads(result.stdout), result.stderr


@pytest.mark.parametrize(("slo", "code"), [(MET, 0), (UNMEETABLE, SloViolation.exit_code)])
def test_check_judges_ttft_and_tpot_read_from_the_metrics_port(
    served: tuple[TritonServer, Path], slo: str, code: int
) -> None:
    server, project = served
    with _Traffic(server.endpoints.grpc_url) as traffic:
        exit_code, document, stderr = _check(_spec(project, slo), "--metrics-url", server.endpoints.metrics_url)
    assert exit_code == code, stderr
    assert traffic.done > 3 and traffic.failed == 0, (traffic.done, traffic.failed)
    (verdict,) = document["models"]
    n = verdict["numbers"]
    print(f"direct: TTFT p99 {n['ttft_p99_ms']:.1f} ms, TPOT p99 {n['tpot_p99_ms']:.1f} ms, {n}")
    assert n["first_tokens"] >= 3 and 0 < n["ttft_p99_ms"] < 10_000 and 0 < n["tpot_p99_ms"] < 2_500
    assert n["running"] >= 1 and n["waiting"] >= 0 and 0 < n["kv_usage"] <= 1  # peaks while 3 generate
    assert n["rps"] > 0 and n["error_rate"] == 0
    assert f"TTFT p99 {n['ttft_p99_ms']:.1f} ms" in stderr
    if code:
        assert not verdict["ok"] and document["exit_code"] == code
        assert verdict["violations"][0].startswith("TTFT p99 ") and "> 0.001: " in verdict["violations"][0]
        assert "requests waiting, KV cache" in verdict["violations"][0]
        assert verdict["violations"][1].startswith("TPOT p99 ") and "sequences running" in verdict["violations"][1]
        assert "TTFT p99" in stderr and "hint:" in stderr
    else:
        assert verdict["ok"] and verdict["violations"] == []


def test_requests_the_client_got_wrong_are_counted_apart_from_the_error_budget(
    served: tuple[TritonServer, Path],
) -> None:
    """Issue 25 defect 11: the engine's answers to invalid requests counted as server errors."""
    server, project = served
    refused: list[str | None] = []

    def invalid() -> None:  # the engine answers each with an error response (INVALID_ARG)
        for _ in range(6):
            refused.append(generate(server.endpoints.grpc_url, MODEL, "Hi", {"max_tokens": -1}).error)
            time.sleep(0.3)

    sender = threading.Thread(target=invalid)
    with _Traffic(server.endpoints.grpc_url):
        sender.start()
        spec = _spec(project, "slo: {ttft_p99_ms: 60000, error_rate: 0.01}")
        exit_code, document, stderr = _check(spec, "--metrics-url", server.endpoints.metrics_url, window="3s")
        sender.join()
    assert len(refused) == 6 and all(refused), refused
    assert exit_code == 0, stderr
    (verdict,) = document["models"]
    numbers = verdict["numbers"]
    assert numbers["error_rate"] == 0 and numbers["client_invalid"] >= 1 and 0 < numbers["invalid_rate"] < 1, numbers
    assert numbers["tokens_per_s"] > numbers["rps"], numbers  # prompt + generated tokens, by the engine's counters


# ------------------------------------------------------------------------------- through Prometheus


@pytest.fixture(scope="module")
def prometheus(served: tuple[TritonServer, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus is not installed ('make sysdeps' installs it)")
    server, _ = served
    with running_prometheus(server.endpoints.metrics_url, tmp_path_factory.mktemp("prometheus")) as url:
        _until(url, 'sum(up{job="triton"})', 1)  # rates need a sample from before the traffic
        yield url


def _until(url: str, promql: str, at_least: float) -> None:
    value, deadline = math.nan, time.monotonic() + 30
    while not value >= at_least and time.monotonic() < deadline:
        time.sleep(0.5)
        value = query(url, promql)
    assert value >= at_least, f"{promql} = {value} after 30 s"


def _at(url: str, promql: str, at: float) -> list[dict[str, Any]]:
    """One instant query evaluated at ``at`` (so two queries see the very same samples)."""
    query_string = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query_string}", timeout=10) as response:
        return json.loads(response.read())["data"]["result"]  # type: ignore[no-any-return]


WINDOW_S = 6  # six scrapes


def test_check_through_prometheus_judges_the_same_way(served: tuple[TritonServer, Path], prometheus: str) -> None:
    server, project = served
    selector = f'{{model="{MODEL}"}}'
    # longer generations than the direct test's: a scrape every second must find one running
    with _Traffic(server.endpoints.grpc_url, max_tokens=32):
        _until(prometheus, f"sum(increase({TTFT}_count{selector}[1m]))", 1)
        # the checks' window must lie inside the traffic, not over the idle time before it
        time.sleep(WINDOW_S + 1)
        through = ("--prometheus", prometheus)
        results = {slo: _check(_spec(project, slo), *through, window=f"{WINDOW_S}s") for slo in [MET, UNMEETABLE]}
    for slo, code in ((MET, 0), (UNMEETABLE, SloViolation.exit_code)):
        exit_code, document, stderr = results[slo]
        assert exit_code == code, stderr
        n = document["models"][0]["numbers"]
        print(f"prometheus: TTFT p99 {n['ttft_p99_ms']:.1f} ms, TPOT p99 {n['tpot_p99_ms']:.1f} ms, {n}")
        assert n["first_tokens"] >= 15 and 0 < n["ttft_p99_ms"] < 10_000 and 0 < n["tpot_p99_ms"] < 2_500
        assert n["running"] >= 1 and 0 < n["kv_usage"] <= 1 and n["error_rate"] == 0
    assert "TTFT p99" in results[UNMEETABLE][2] and "TPOT p99" in results[UNMEETABLE][1]["models"][0]["violations"][1]

    # the p99 from the bucket rates is PromQL's own histogram_quantile over the same rates
    at = time.time()
    rates = f"sum by (le) (rate({TTFT}_bucket{selector}[30s]))"
    buckets = sorted((float(row["metric"]["le"]), float(row["value"][1])) for row in _at(prometheus, rates, at))
    (promql,) = _at(prometheus, f"histogram_quantile(0.99, {rates})", at)
    assert Histogram(tuple(buckets)).quantile(0.99) == pytest.approx(float(promql["value"][1]), rel=1e-9)


# ------------------------------------------------------------------------------- the promotion gate


def test_promotion_gate_rolls_back_an_llm_release_that_breaks_its_ttft_slo(tmp_path: Path, model_cache: Path) -> None:
    store = ReleaseStore(tmp_path / "releases")

    def release(spec: Path) -> int:
        built = build_repository(load_spec(spec), tmp_path / "dist", cache_dir=model_cache)
        return store.create(built.path)[0].number

    good = release(_spec(tmp_path, MET))
    # one sequence at a time: with three clients a first token waits for up to two whole generations
    slow = release(_spec(tmp_path, "slo: {ttft_p99_ms: 100, tpot_p99_ms: 60000}", max_running=1))
    # no proof (a scratch Triton loading the LLM per promotion, ~100 s here): the gate is under test;
    # test_promote_transaction covers proving
    env = LocalEnvironment(store, prove=False)
    endpoints = Endpoints.allocate()
    with TritonServer(env.prepare(), endpoints=endpoints, models=[]) as server:
        env.url = server.endpoints.http_url.removeprefix("http://")
        env.metrics_url = server.endpoints.metrics_url
        env.promote(good)
        # (a release that meets its SLO after a rollback stays: test_promote_analysis, with no LLM to load)
        with (
            _Traffic(server.endpoints.grpc_url, max_tokens=48) as traffic,
            pytest.raises(PromoteError, match=f"v{slow} broke its SLO under traffic") as caught,
        ):
            env.promote(slow, analysis_s=4)
        assert traffic.done > 3, (traffic.done, traffic.failed)
    print(caught.value.message)
    assert "TTFT p99" in caught.value.message and "> 100: " in caught.value.message
    assert "requests waiting" in caught.value.message and f"v{good}" in caught.value.hint
    rolled = [p for p in env.history() if p.action.startswith(f"rollback (analysis of v{slow}")]
    assert rolled and rolled[0].ok and rolled[0].to_release == f"v{good}" and "TTFT p99" in rolled[0].action
    assert env.current() is not None and env.current().number == good  # type: ignore[union-attr]
