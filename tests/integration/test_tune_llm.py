"""``tritonkit tune`` of an llm model on the real engine: the example's tiny-gpt2 on the embedded
Triton (test_check_llm's server and spec), its capacity within the TTFT/TPOT SLO measured with
streamed generations and written into the spec and, through the build, the lock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from tests.integration.test_check_llm import MET, MODEL, UNMEETABLE, _spec, served
from tritonkit import TritonServer, build_repository, load_spec
from tritonkit.artifact.lock import read_lock
from tritonkit.cli import main
from tritonkit.errors import TuneError, UsageError

__all__ = ["served"]  # the module-scoped server fixture, shared with test_check_llm's


def _tune(spec: Path, server: TritonServer, *args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(
        main,
        ["tune", MODEL, "-f", str(spec), "--url", server.endpoints.grpc_url, "--window", "0.5", "--json", *args],
    )
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_tune_measures_llm_capacity_into_the_spec_and_the_lock(
    served: tuple[TritonServer, Path], tmp_path: Path, model_cache: Path
) -> None:
    server, project = served
    spec = _spec(tmp_path, MET, max_tokens=8)
    metrics = ("--metrics-url", server.endpoints.metrics_url)
    budget = ("--max-points", "3", "--budget", "40s", "--report", str(tmp_path / "report"), "--yes", *metrics)
    code, doc, stderr = _tune(spec, server, *budget)
    assert code == 0, stderr
    print(stderr)
    assert doc["kind"] == "llm" and doc["ttft_p99_ms"] == 60000 and doc["p99_ms"] is None
    levels = [p["llm"]["concurrency"] for p in doc["points"]]
    assert levels[:2] == [1, 2] and 2 <= len(levels) <= 3, levels
    best = doc["best"]["llm"]
    assert doc["best"]["within_slo"] and best["rps"] > 0 and best["errors"] == 0
    assert 0 < best["ttft_p99_ms"] < 60000 and 0 < best["tpot_p99_ms"] < 60000 and best["samples"] >= 2
    assert best["tokens_per_s"] > best["rps"]  # 8 tokens a request
    assert best["engine_ttft_p99_ms"] > 0 and best["engine_tpot_p99_ms"] > 0  # the engine's view, beside
    # prompt + generated, by the engine's counters: more than the 8 generated tokens a request alone
    assert best["engine_tokens_per_s"] > best["tokens_per_s"] > best["rps"]
    assert (tmp_path / "report" / "tune.png").stat().st_size > 10_000
    assert doc["written"] and "capacity:" in doc["diff"]

    # the spec carries the capacity; a build carries it into the lock (and the digest's intent)
    entry = load_spec(spec).spec.model(MODEL)
    assert entry.capacity is not None and entry.capacity.rps == round(best["rps"], 2)
    assert entry.capacity.concurrency == best["concurrency"] and entry.capacity.output_tokens == 8
    rebuilt = build_repository(load_spec(spec), tmp_path / "dist", cache_dir=model_cache)
    capacity = read_lock(rebuilt.path).models[MODEL]["capacity"]
    assert capacity["rps"] > 0 and capacity["ttft_p99_ms"] > 0 and capacity["tpot_p99_ms"] > 0
    assert "p99_ms" not in capacity
    assert capacity["tokens_per_s"] > 8 * capacity["rps"]  # what an llm is planned in (issue 25 defect 11)
    on = capacity["measured_on"]
    assert on["meter"] == "llm_client" and int(on["cores"]) >= 1 and on["gpu"]
    assert on["tritonkit"] and on["triton"] not in ("", "unknown")


def test_a_budget_nobody_can_meet_is_one_clear_error(served: tuple[TritonServer, Path], tmp_path: Path) -> None:
    server, _ = served
    spec = _spec(tmp_path, UNMEETABLE, max_tokens=4)
    before = spec.read_text()
    code, doc, stderr = _tune(spec, server, "--budget", "30s")
    assert code == TuneError.exit_code, stderr
    assert "even one request at a time is over the SLO" in stderr and "hint: ask for ttft_p99_ms ≥" in stderr
    assert doc["exit_code"] == TuneError.exit_code and spec.read_text() == before


def test_an_llm_model_without_a_ttft_or_tpot_budget_is_a_usage_error(tmp_path: Path) -> None:
    # checked before anything is started or reached (no server listens on port 1)
    spec = _spec(tmp_path, "slo: {p99_ms: 100}")  # an SLO, but not one an llm is judged by
    for args, says in (((), "no TTFT or TPOT budget"), (("--p99-ms", "50"), "its budget is TTFT and TPOT")):
        done = CliRunner().invoke(main, ["tune", MODEL, "-f", str(spec), "--url", "127.0.0.1:1", *args])
        assert done.exit_code == UsageError.exit_code, done.output
        assert says in done.stderr and "--ttft-p99-ms" in done.stderr, done.stderr
