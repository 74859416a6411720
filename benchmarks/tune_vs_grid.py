"""tritonkit tune vs a Model-Analyzer-style brute grid, on one server and model, in one run.

On the embedded Triton serving the example classifier:

(a) grid: instances 1-4 x max_batch_size 1-64 (powers of two) x concurrency 1-64 (powers of
    two), dynamic batching on with Triton's default delay (0) and no preferred sizes — Model
    Analyzer's brute search, which writes an empty ``dynamic_batching {}``. Every point of
    the sweep is measured, each config applied by a config-override reload (Model Analyzer
    restarts the server instead; that cost is not counted against it here).
(b) tune: :func:`tritonkit.perf.tune` started from Triton's default config (1 instance, the spec's
    max_batch_size, ``dynamic_batching {}``) with the same p99 budget.

Then the grid's best and tune's pick are measured again, alternating, so the final ratio
compares two configs under the same noise. Prints a side-by-side table (points, wall time,
best throughput within the budget, the default config's) and writes a plot.

    .venv/bin/python benchmarks/tune_vs_grid.py [--p99-ms 10] [--quick] [--out reports/tune_vs_grid]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tritonkit import Endpoints, TritonServer, TunePoint, TuneSettings, build_repository, load_spec
from tritonkit.perf.bench import bench
from tritonkit.perf.tune import tune
from tritonkit.serve.server import free_port

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "model_repository" / "tritonkit.yaml"
MODEL = "classifier"
WINDOW_S = 0.5


def _grid_config(settings: TuneSettings, original: dict[str, Any]) -> dict[str, Any]:
    config = settings.apply(original)
    for warmup in config.get("model_warmup", []):  # warm-up batches must fit max_batch_size
        warmup["batch_size"] = min(int(warmup.get("batch_size", 1)), settings.max_batch_size)
    return config


def _measure(url: str, concurrency: int, settings: TuneSettings, slo_ms: float) -> TunePoint:
    (point,) = bench(MODEL, url=url, concurrency=[concurrency], window_s=WINDOW_S, max_windows=6, warmup_s=0.5)
    r = point.result
    ok = not point.client_limited and r.errors == 0 and r.completed > 0 and r.p99_ms <= slo_ms
    return TunePoint(settings, point, ok)


def _best(points: list[TunePoint]) -> TunePoint | None:
    return max((p for p in points if p.within_slo), key=lambda p: p.throughput, default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p99-ms", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="a smaller grid (for trying the script out)")
    parser.add_argument("--budget", type=float, default=300.0, help="tune's time budget, seconds")
    parser.add_argument("--confirm", type=int, default=3, help="alternating re-measurements of both winners")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "tune_vs_grid")
    args = parser.parse_args()
    console = Console()
    instances = [1, 2] if args.quick else [1, 2, 3, 4]
    batches = [8, 32, 64] if args.quick else [1, 2, 4, 8, 16, 32, 64]
    levels = [1, 4, 16, 64] if args.quick else [1, 2, 4, 8, 16, 32, 64]

    with tempfile.TemporaryDirectory() as scratch:
        built = build_repository(load_spec(SPEC), Path(scratch) / "dist", cache_dir=Path(scratch) / "cache")
        server = TritonServer(
            built.path, endpoints=Endpoints("127.0.0.1", free_port(), free_port(), free_port()), models=[MODEL]
        )
        server.start()
        try:
            results = _run(server, args.p99_ms, instances, batches, levels, args.budget, args.confirm, console)
        finally:
            server.stop()
    _report(console, args, *results)


def _run(
    server: TritonServer,
    slo: float,
    instances: list[int],
    batches: list[int],
    levels: list[int],
    budget: float,
    confirm: int,
    console: Console,
) -> tuple[list[TunePoint], float, Any, float, list[float], list[float]]:
    import tritonclient.grpc as grpcclient

    url = server.endpoints.grpc_url
    control = grpcclient.InferenceServerClient(url)
    original = control.get_model_config(MODEL, as_json=True)["config"]
    spec_mbs = int(original["max_batch_size"])
    default = TuneSettings(1, spec_mbs, 0, ())
    pid = server.pid

    grid: list[TunePoint] = []
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("grid", total=len(instances) * len(batches) * len(levels))
        for count in instances:
            for mbs in batches:
                settings = TuneSettings(count, mbs, 0, ())
                control.load_model(MODEL, config=_json(_grid_config(settings, original)))
                for level in levels:
                    progress.update(task, description=f"grid {settings.label()} c={level}")
                    grid.append(_measure(url, level, settings, slo))
                    progress.advance(task)
    grid_s = time.perf_counter() - started

    control.load_model(MODEL, config=_json(default.apply(original)))  # tune starts where Triton's defaults leave off
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("tune", total=budget)
        tuned = tune(
            MODEL,
            p99_ms=slo,
            url=url,
            budget_s=budget,
            window_s=WINDOW_S,
            progress=lambda e: progress.update(task, completed=e.done, description=f"tune: {e.message}"),
        )
    tune_s = time.perf_counter() - started

    grid_best, tune_best = _best(grid), tuned.best
    again_grid: list[float] = []
    again_tune: list[float] = []
    if grid_best and tune_best:
        for _ in range(confirm):
            for winner, sink in ((grid_best, again_grid), (tune_best, again_tune)):
                control.load_model(MODEL, config=_json(_grid_config(winner.settings, original)))
                point = _measure(url, int(winner.bench.level), winner.settings, slo)
                sink.append(point.throughput if point.within_slo else 0.0)
    control.load_model(MODEL, config=_json(original))
    control.close()
    assert server.pid == pid, "the server was restarted"
    return grid, grid_s, tuned, tune_s, again_grid, again_tune


def _json(config: dict[str, Any]) -> str:
    import json

    return json.dumps(config)


def _report(
    console: Console,
    args: argparse.Namespace,
    grid: list[TunePoint],
    grid_s: float,
    tuned: Any,
    tune_s: float,
    again_grid: list[float],
    again_tune: list[float],
) -> None:
    grid_best, tune_best, baseline = _best(grid), tuned.best, tuned.baseline

    def thr(point: TunePoint | None) -> str:
        return f"{point.throughput:.0f}/s" if point else "none within budget"

    table = Table(title=f"{MODEL}: max throughput with p99 ≤ {args.p99_ms:g} ms", title_justify="left")
    for column in ("", "grid (brute)", "tritonkit tune"):
        table.add_column(column, justify="right")
    table.add_row("measured points", str(len(grid)), str(len(tuned.points)))
    table.add_row("wall time", f"{grid_s:.0f}s", f"{tune_s:.0f}s")
    table.add_row("best within budget", thr(grid_best), thr(tune_best))
    table.add_row(
        "its settings",
        f"{grid_best.settings.label()} @ {grid_best.offered}" if grid_best else "-",
        f"{tune_best.settings.label()} @ {tune_best.offered}" if tune_best else "-",
    )
    if again_grid and again_tune:
        table.add_row(
            f"re-measured, median of {len(again_grid)}",
            f"{statistics.median(again_grid):.0f}/s",
            f"{statistics.median(again_tune):.0f}/s",
        )
    table.add_row("default config within budget", "", thr(baseline))
    console.print(table)
    if grid_best and tune_best:
        same_run = tune_best.throughput / grid_best.throughput
        ratio = statistics.median(again_tune) / statistics.median(again_grid) if again_grid and again_tune else same_run
        console.print(f"tune's pick / grid's best: {ratio:.1%} re-measured side by side ({same_run:.1%} as searched)")
        console.print(f"tune's points / grid's points: {len(tuned.points) / len(grid):.1%}")
    if baseline and tune_best:
        console.print(
            f"tuned / default config throughput within budget: {tune_best.throughput / baseline.throughput:.2f}x"
        )
    console.print(f"tune stopped: {tuned.stopped}")
    _plot(args.out, args.p99_ms, grid, tuned)


def _plot(out: Path, slo: float, grid: list[TunePoint], tuned: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(8, 5), dpi=110)
    axis.scatter([p.p99_ms for p in grid], [p.throughput for p in grid], s=12, color="0.6", label="grid points")
    axis.scatter(
        [p.p99_ms for p in tuned.points], [p.throughput for p in tuned.points], s=22, color="tab:blue", label="tune"
    )
    for point, marker, name in ((_best(grid), "s", "grid best"), (tuned.best, "*", "tune pick")):
        if point is not None:
            axis.plot(point.p99_ms, point.throughput, marker, markersize=14, markerfacecolor="none", color="black",
                      label=f"{name}: {point.throughput:.0f}/s")  # fmt: skip
    axis.axvline(slo, color="tab:red", linestyle="--", label=f"p99 budget {slo:g} ms")
    axis.set_xscale("log")
    axis.set_xlabel("p99 latency (ms, log)")
    axis.set_ylabel("throughput (inferences/s)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "tune_vs_grid.png")
    plt.close(figure)
    Console().print(f"plot: {out / 'tune_vs_grid.png'}")


if __name__ == "__main__":
    main()
