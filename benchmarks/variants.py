"""Variant × config tune against config-only tune and Triton's default config, re-measured by perf_analyzer.

On one model, one embedded Triton, in one run:

1. ``tune`` (config only: batching and instances) with ``--budget``;
2. ``tune_variants`` (variant × config, :mod:`tritonkit.perf.variants`) with the same budget, the
   variants checked against the fp32 model on real inputs within an accuracy budget;
3. the default config (one instance, no dynamic batching, the original model), both winners
   re-measured by NVIDIA's perf_analyzer on the same server, in alternating rounds (``--rounds``),
   each at its own concurrency (the default's: the best of a doubling sweep within the budget).
   A variant is loaded through the repository API with its model file, as tune does.

Prints a table (search wall time, accuracy against fp32, re-measured throughput and p99, rounds
within the budget, ratio to config-only tune) and writes a bar chart (``--out``, default
``reports/variants-<model>.png``). Targets (issue "the fastest accurate model"): variant × config
≥ 1.5× config-only tune on MiniLM at the same p99 with accuracy in budget, and a search time
≤ 1.5× config-only tune's.

Model Navigator 0.14 is not run: it does not install here as published (it hard-requires
tensorrt, onnxruntime-gpu and nvidia-modelopt, whose wheels download from an index out of reach).

Inputs: MiniLM gets real text (its model card's sentences, tokenized by its own tokenizer, padded
to 32 tokens each: benchmarks/tune_vs_model_analyzer.py), and its accuracy budget leaves the
padded positions out (``mask: attention_mask``: the example's ``embed`` ensemble pools token
embeddings only where the mask is 1; ``--no-mask`` counts them); the example classifier (a
random-init MLP) gets 256 rows of standard-normal features.

Setup: ``make perf-tools``. Usage: ``.venv/bin/python benchmarks/variants.py [--model minilm]
[--budget 300] [--rounds 3] [--min-cosine X] [--no-mask]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table
from tune_vs_model_analyzer import as_json, best_concurrency, text_input

from tritonkit import Endpoints, TritonServer, build_repository, load_spec
from tritonkit.build import pbtxt
from tritonkit.perf.analyzer import find_analyzer, parse_csv
from tritonkit.perf.tune import tune, with_files_tag
from tritonkit.perf.variants import MODEL_FILE, tune_variants
from tritonkit.serve.repository_api import load_model
from tritonkit.spec.intent import AccuracyBudget

ROOT = Path(__file__).resolve().parents[1]
# name -> (spec, served model, p99 budget in ms, accuracy budget)
MODELS = {
    # the embed ensemble's pooling step reads minilm's token embeddings only where attention_mask is 1
    "minilm": (
        ROOT / "model_repository" / "embeddings.yaml",
        "minilm",
        50.0,
        AccuracyBudget(min_cosine=0.98, mask="attention_mask"),
    ),  # fmt: skip
    "classifier": (ROOT / "model_repository" / "tritonkit.yaml", "classifier", 10.0, AccuracyBudget(min_top1=0.95)),
}
console = Console(width=170)


def _classifier_input(scratch: Path) -> Path:
    path = scratch / "features.npy"
    np.save(path, np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32))
    return path


def _config(built: Path, model: str, settings: Any | None) -> dict:
    config = json.loads(
        json_format.MessageToJson(
            pbtxt.parse((built / model / "config.pbtxt").read_text()), preserving_proto_field_name=True
        )
    )
    return settings.apply(config) if settings is not None else config


def _remeasure(
    server: TritonServer, built: Path, model: str, candidates: list[dict], rounds: int, data: Path, p99_ms: float
) -> None:
    analyzer = find_analyzer()
    assert analyzer is not None
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.endpoints.http_url.removeprefix("http://"))
    pa_data = data
    if data.suffix == ".npy":  # perf_analyzer reads JSON: the first rows, one request each
        rows = np.load(data)[:64]
        pa_data = data.with_suffix(".json")
        entries = [{"features": {"content": row.tolist(), "shape": list(row.shape)}} for row in rows]
        pa_data.write_text(json.dumps({"data": entries}))

    def load(candidate: dict) -> None:
        config = candidate["config"]
        if candidate["files"]:
            config = with_files_tag(config, candidate["files"])
        load_model(client, model, config, files=candidate["files"])

    for candidate in candidates:
        if candidate["concurrency"] is None:
            load(candidate)
            candidate["concurrency"], _ = best_concurrency(server, model, p99_ms, pa_data)
    for round_ in range(rounds):
        for candidate in candidates:
            load(candidate)
            c = candidate["concurrency"]
            with tempfile.TemporaryDirectory() as scratch:
                csv_file = Path(scratch) / "pa.csv"
                command = [str(analyzer.binary), "-m", model, "-u", server.endpoints.grpc_url, "-i", "grpc",
                           "--concurrency-range", f"{c}:{c}:1", "--measurement-interval", "3000", "-s", "1000",
                           "--percentile=99", "-f", str(csv_file), "--input-data", str(pa_data)]  # fmt: skip
                subprocess.run(command, capture_output=True, text=True, env=analyzer.environment(), check=True)
                row = parse_csv(csv_file.read_text())
            tput, p99 = row["Inferences/Second"], row["p99 latency"] / 1e3
            candidate.setdefault("measured", []).append((tput, p99))
            console.print(f"round {round_ + 1}: {candidate['name']}: {tput:.0f}/s p99 {p99:.2f} ms at c={c}")
    load_model(client, model, as_json(pbtxt.parse((built / model / "config.pbtxt").read_text()), model))
    client.close()


def _plot(candidates: list[dict], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [textwrap.fill(c["name"], 22) for c in candidates]
    medians = [statistics.median(m[0] for m in c["measured"]) for c in candidates]
    lows = [medians[i] - min(m[0] for m in c["measured"]) for i, c in enumerate(candidates)]
    highs = [max(m[0] for m in c["measured"]) - medians[i] for i, c in enumerate(candidates)]
    ax.bar(names, medians, yerr=[lows, highs], capsize=6, color=["#999999", "#4c72b0", "#55a868"][: len(names)])
    for i, c in enumerate(candidates):
        note = textwrap.fill(c["accuracy"].split(", max abs error")[0], 28)  # the cosine, or "fp32 (the original)"
        ax.annotate(note, (i, medians[i]), ha="center", va="bottom", fontsize=8, xytext=(0, 8),
                    textcoords="offset points")  # fmt: skip
    ax.set_ylim(0, max(medians) * 1.3)
    ax.set_ylabel("inferences/s within p99\n(perf_analyzer: median, range)")
    ax.set_title(title, fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="minilm")
    parser.add_argument("--budget", type=float, default=300.0, help="each search's time budget, seconds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--min-cosine", type=float, default=None, help="the accuracy budget's min_cosine instead")
    parser.add_argument("--no-mask", action="store_true", help="count the padded positions' outputs too")
    args = parser.parse_args()
    if find_analyzer() is None:
        print("run 'make perf-tools' first", file=sys.stderr)
        return 2
    spec_path, model, p99_ms, budget = MODELS[args.model]
    if args.min_cosine is not None:
        budget = budget.model_copy(update={"min_cosine": args.min_cosine})
    if args.no_mask:
        budget = budget.model_copy(update={"mask": None})
    with tempfile.TemporaryDirectory(prefix="variants-") as scratch_name:
        scratch = Path(scratch_name)
        data = text_input(scratch, count=64) if args.model == "minilm" else _classifier_input(scratch)
        built = build_repository(load_spec(spec_path), scratch / "dist", cache_dir=scratch / "cache").path
        default = _config(built, model, None)
        default.pop("dynamic_batching", None)
        default["instance_group"] = [{"count": 1, "kind": "KIND_CPU"}]
        candidates: list[dict] = [{"name": "Triton default config", "config": default, "files": None,
                                   "concurrency": None, "wall_s": 0.0, "accuracy": "fp32 (the original)"}]  # fmt: skip
        with TritonServer(built, endpoints=Endpoints.allocate(), models=[model]) as server:
            url = server.endpoints.grpc_url
            started = time.monotonic()
            plain = tune(model, p99_ms=p99_ms, url=url, budget_s=args.budget, input_data=data)
            plain_wall = time.monotonic() - started
            if plain.best is None:
                console.print(f"config-only tune claims no winner: {plain.not_confirmed or plain.stopped}")
                return 1
            console.print(f"config-only tune picked {plain.best.settings.label()} at c={plain.best.bench.level:g}")
            candidates.append({"name": "config-only tune", "config": _config(built, model, plain.best.settings),
                               "files": None, "concurrency": int(plain.best.bench.level), "wall_s": plain_wall,
                               "accuracy": "fp32 (the original)"})  # fmt: skip
            started = time.monotonic()
            found = tune_variants(model, source=built / model / "1" / "model.onnx", p99_ms=p99_ms, input_data=data,
                                  accuracy_budget=budget, url=url, budget_s=args.budget)  # fmt: skip
            found_wall = time.monotonic() - started
            for trial in found.trials:
                screen = f"{trial.screen.throughput:.0f}/s at {trial.screen.offered}" if trial.screen else "-"
                accuracy = trial.accuracy.describe() if trial.accuracy else "exact"
                console.print(f"variant {trial.label}: {accuracy}; screened {screen}; {trial.dropped or 'admitted'}")
            assert found.tune is not None and found.tune.best is not None and found.chosen is not None
            chosen = found.chosen
            console.print(f"variant x config tune picked {chosen.label} with {found.tune.best.settings.label()} "
                          f"at c={found.tune.best.bench.level:g}")  # fmt: skip
            made = sum(t.made_s for t in found.trials)
            rest = found_wall - made - found.tune.elapsed_s
            console.print(f"search time {found_wall:.0f} s: making the variants {made:.0f} s, the config search "
                          f"{found.tune.elapsed_s:.0f} s, checking and screening the rest ({rest:.0f} s); "
                          f"config-only tune {plain_wall:.0f} s")  # fmt: skip
            files = None
            if chosen.variant is not None:  # made again, as the build would: the same bytes
                from tritonkit.build.variants import make_variant
                from tritonkit.spec.inputdata import load_samples

                signature = {"input_ids": ([-1, -1], "INT64"), "attention_mask": ([-1, -1], "INT64")}
                if args.model == "classifier":
                    signature = {"features": ([-1, 4], "FP32")}
                samples = load_samples(data, signature, batching=True)[:512]
                target = scratch / "chosen.onnx"
                make_variant(built / model / "1" / "model.onnx", target, chosen.variant, samples=samples,
                             batching=True, workdir=scratch / "make")  # fmt: skip
                files = {MODEL_FILE: target.read_bytes()}
            accuracy = chosen.accuracy.describe() if chosen.accuracy else "fp32 (the original)"
            candidates.append({"name": f"variant x config tune ({chosen.label})",
                               "config": _config(built, model, found.tune.best.settings), "files": files,
                               "concurrency": int(found.tune.best.bench.level), "wall_s": found_wall,
                               "accuracy": accuracy})  # fmt: skip
            _remeasure(server, built, model, candidates, args.rounds, data, p99_ms)
    table = Table(title=f"{args.model}: p99 <= {p99_ms:g} ms, accuracy {budget.model_dump(exclude_none=True)}, "
                  f"re-measured by perf_analyzer ({args.rounds} rounds)")  # fmt: skip
    for column in ("candidate", "accuracy vs fp32", "search s", "c", "re-measured /s", "spread /s", "p99 ms",
                   "rounds in budget", "x config-only"):  # fmt: skip
        table.add_column(column, justify="right")
    reference = statistics.median(m[0] for m in candidates[1]["measured"])
    for c in candidates:
        tputs, p99s = [m[0] for m in c["measured"]], [m[1] for m in c["measured"]]
        table.add_row(
            c["name"], c["accuracy"], f"{c['wall_s']:.0f}", str(c["concurrency"]), f"{statistics.median(tputs):.0f}",
            f"{min(tputs):.0f}-{max(tputs):.0f}", f"{statistics.median(p99s):.2f}",
            f"{sum(p <= p99_ms for p in p99s)}/{len(p99s)}", f"{statistics.median(tputs) / reference:.2f}",
        )  # fmt: skip
    console.print(table)
    ratio = statistics.median(m[0] for m in candidates[2]["measured"]) / reference
    console.print(
        f"variant x config / config-only: {ratio:.2f}x throughput (target >= 1.5x); search time "
        f"{candidates[2]['wall_s'] / max(candidates[1]['wall_s'], 1e-9):.2f}x (target <= 1.5x)"
    )
    out = args.out or ROOT / "reports" / f"variants-{args.model}.png"
    _plot(candidates, f"{args.model}: throughput within p99 {p99_ms:g} ms", out)
    console.print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
