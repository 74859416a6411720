"""``tritonkit bench`` and ``tritonkit tune``: measure a served model, and tune its batching.

Same rules as every command module (:mod:`tritonkit.cli`): parse, call the library, render
with rich; :data:`COMMANDS` is what :mod:`tritonkit.cli` registers.

Length: about 520 lines: two commands' options, checks and output (bench, and tune for every
objective: ``_Objective`` and ``_Search`` by kind); tune's llm and variant parts live in ``_tune_llm`` and
``_tune_variants``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.table import Table

from tritonkit.cli._common import console, default_repository, err_console, require_extra, require_verified
from tritonkit.cli._output import json_mode, json_option, record
from tritonkit.errors import NotConfirmed, UsageError
from tritonkit.events import Event
from tritonkit.spec import SPEC_FILE


def _load_options(command: Any) -> Any:
    """What the load sends: shared by bench and tune (both measure with perf_analyzer)."""
    command = click.option(
        "--shape", "shapes", multiple=True, metavar="NAME:D1,D2", help="Size of variable dims (repeatable)."
    )(command)
    return click.option(
        "--input-data",
        type=click.Path(path_type=Path),
        default=None,
        help="Real inputs: a .npy file, a directory of <input>.npy / <input>.txt, or perf_analyzer JSON.",
    )(command)


@click.command()
@click.argument("model")
@click.option(
    "--url",
    default=None,
    envvar="TRITONKIT_URL",
    help="Server address (default $TRITONKIT_URL, else 127.0.0.1:8001 grpc / :8000 http).",
)
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
@click.option("--concurrency", "-c", type=int, multiple=True, help="Closed loop: requests in flight (repeatable).")
@click.option("--rate", "-r", type=float, multiple=True, help="Open loop: requests per second (repeatable).")
@click.option("--constant", is_flag=True, help="Open loop with constant instead of Poisson arrivals.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--window", "window_s", default=2.0, show_default=True, help="Measurement window, seconds.")
@click.option("--max-windows", default=10, show_default=True)
@click.option("--report", "report_dir", type=click.Path(path_type=Path), help="Write bench.png and bench.html here.")
@_load_options
@json_option
def bench(
    model: str,
    url: str | None,
    protocol: str,
    concurrency: tuple[int, ...],
    rate: tuple[float, ...],
    constant: bool,
    batch_size: int,
    window_s: float,
    max_windows: int,
    report_dir: Path | None,
    input_data: Path | None,
    shapes: tuple[str, ...],
) -> None:
    """Load-test MODEL on a running Triton (closed loop --concurrency, or open loop --rate)."""
    if report_dir is not None:
        require_extra("report", "a bench report")
    from rich.progress import BarColumn, Progress, TextColumn

    from tritonkit.perf.bench import bench as run_bench
    from tritonkit.perf.inputs import parse_shapes

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} windows"),
        console=console,  # not rich's global console: with --json, stdout is the document's
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(event: Event) -> None:
            if event.subject not in tasks:
                tasks[event.subject] = bar.add_task(event.subject, total=event.total)
            bar.update(tasks[event.subject], completed=event.done)

        points = run_bench(
            model,
            url=url,
            protocol=protocol,
            concurrency=concurrency,
            rate=rate,
            poisson=not constant,
            batch_size=batch_size,
            window_s=window_s,
            max_windows=max_windows,
            progress=progress,
            input_data=input_data,
            shapes=parse_shapes(shapes),
        )
    meter = points[0].meter if points else "perf_analyzer"
    table = Table(
        title=f"{model} over {protocol}, measured by {meter}",
        title_justify="left",
        box=box.SIMPLE,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
        caption="latency in ms from intended send time; queue/compute: server µs per request; ovh: client overhead ms",
        caption_justify="left",
    )
    columns = ("load", "inf/s", "p50", "p90", "p99", "max", "stable", "queue", "compute", "batch", "ovh")
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True, min_width=max(len(column), 4))
    for p in points:
        r, srv = p.result, p.server
        load = f"c={p.level:g}" if p.mode == "concurrency" else f"{p.level:g}/s"
        if p.client_limited:
            table.add_row(load, f"[red]client-limited: {p.client_limited}[/]", *[""] * (len(columns) - 2))
            continue
        compute = srv.compute_input_us + srv.compute_infer_us + srv.compute_output_us
        table.add_row(
            load, f"{r.throughput:.0f}", f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.max_ms:.2f}",
            "yes" if p.stable else "no", f"{srv.queue_us:.0f}", f"{compute:.0f}",
            f"{srv.mean_batch_size:.1f}", f"{p.client_overhead_ms:.2f}",
        )  # fmt: skip
    console.print(table)
    record(model=model, protocol=protocol, meter=meter, batch_size=batch_size, points=[bench_point(p) for p in points])
    if report_dir is not None:
        from tritonkit.perf.report import write_bench_report

        png, page = write_bench_report(points, report_dir, title=f"{model} over {protocol}")
        console.print(f"report: {png}  {page}")
        record(report={"png": png, "html": page})


def bench_point(point: Any) -> dict[str, Any]:
    """One load level as docs/json.md describes it: the dataclass plus its derived numbers."""
    from tritonkit.cli._output import jsonable

    doc: dict[str, Any] = jsonable(point)
    doc["client_overhead_ms"] = jsonable(point.client_overhead_ms)
    doc["server"]["mean_batch_size"] = jsonable(point.server.mean_batch_size)
    return doc


@click.command()
@click.argument("model")
@click.option("-f", "--file", "spec_file", type=click.Path(path_type=Path), default=Path(SPEC_FILE), show_default=True)
@click.option(
    "--p99-ms", type=float, default=None, help="Latency budget: p99 in milliseconds (default: the model's slo.p99_ms)."
)
@click.option("--rate", type=float, default=None, help="Minimise p99 at this open-loop rate (requests/s) instead.")
@click.option("--max-throughput", is_flag=True, help="Maximise throughput within the budget (the default).")
@click.option("--budget", default="5m", show_default=True, help="Time limit: 90s, 5m, 1h.")
@click.option(
    "--url",
    default=None,
    envvar="TRITONKIT_URL",
    help="A running Triton in explicit mode (default $TRITONKIT_URL, else start the embedded one).",
)
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
@click.option("--repository", type=click.Path(path_type=Path), help="Repository to serve (default: the spec's build).")
@click.option("--max-points", default=30, show_default=True, help="Stop after this many measured points.")
@click.option("--max-instances", type=int, default=None, help="Largest instance count to try (default: max(4, cores)).")
@click.option("--max-batch", default=128, show_default=True, help="Largest max_batch_size to try.")
@click.option("--window", "window_s", default=1.0, show_default=True, help="Measurement window, seconds.")
@click.option(
    "--report", "report_dir", type=click.Path(path_type=Path), help="Report folder (default reports/tune-MODEL)."
)
@click.option("--yes", is_flag=True, help="Write the winning settings into the spec without asking.")
@click.option(
    "--variants",
    is_flag=True,
    help="onnx models: also search variants of the model (optimized graph, int8, fp16 on a GPU) within its "
    "slo.accuracy, checked on --input-data.",
)
@click.option("--ttft-p99-ms", type=float, default=None, help="llm models: TTFT budget (default: slo.ttft_p99_ms).")
@click.option("--tpot-p99-ms", type=float, default=None, help="llm models: TPOT budget (default: slo.tpot_p99_ms).")
@click.option("--prompt", default=None, help="llm models: the prompt each request sends (default: a 56-character one).")
@click.option(
    "--max-tokens", type=int, default=None, help="llm models: tokens each request generates (default: the model's)."
)
@click.option(
    "--metrics-url",
    default=None,
    help="llm models: Triton's metrics, to judge the engine's own TTFT/TPOT as well as the client's (default: "
    "the embedded Triton's; none with --url).",
)
@_load_options
@json_option
def tune(
    model: str,
    spec_file: Path,
    p99_ms: float | None,
    rate: float | None,
    max_throughput: bool,
    budget: str,
    url: str | None,
    protocol: str,
    repository: Path | None,
    max_points: int,
    max_instances: int | None,
    max_batch: int,
    window_s: float,
    report_dir: Path | None,
    yes: bool,
    variants: bool,
    ttft_p99_ms: float | None,
    tpot_p99_ms: float | None,
    prompt: str | None,
    max_tokens: int | None,
    metrics_url: str | None,
    input_data: Path | None,
    shapes: tuple[str, ...],
) -> None:
    """Search batching and instance settings for MODEL by reloading it on a running Triton.

    Changes go through config-override reloads only (no restarts); the original config is
    loaded back at the end or on Ctrl-C. The winner is written into the spec (after a diff).
    For a kind: llm model, measure its capacity within the TTFT/TPOT SLO (nothing is reloaded).
    """
    import os
    import shutil

    embedded = url is None and shutil.which("tritonserver") is None
    require_extra("report", "tune's report", *([("serve", "tuning on the embedded Triton")] if embedded else []))
    from tritonkit.perf.tune import Bounds, parse_duration
    from tritonkit.spec.loader import load_spec

    if rate is not None and max_throughput:
        raise UsageError("--rate and --max-throughput ask for different objectives", hint="give one of them")
    if rate is not None and rate <= 0:
        raise UsageError(f"--rate must be positive, got {rate:g}", hint="e.g. --rate 200")
    loaded = load_spec(spec_file)
    entry = loaded.spec.model(model)  # unknown model: a suggestion before anything starts
    objective = _Objective.of(
        model, entry, p99_ms=p99_ms, rate=rate, ttft_p99_ms=ttft_p99_ms, tpot_p99_ms=tpot_p99_ms, prompt=prompt,
        max_tokens=max_tokens, protocol=protocol, tensor_load=input_data is not None or bool(shapes),
    )  # fmt: skip
    variant_search = None
    if variants:
        from tritonkit.cli._tune_variants import VariantSearch

        variant_search = VariantSearch.prepare(
            loaded, entry, repository=lambda: repository or default_repository(spec_file), input_data=input_data,
            rate=rate, url=url, metrics_url=metrics_url,
        )  # fmt: skip
    search = _Search(
        model=model, objective=objective, rate=rate, budget_s=parse_duration(budget), max_points=max_points,
        bounds=Bounds(max_instances=max_instances or max(4, os.cpu_count() or 1), max_batch=max_batch),
        window_s=window_s, protocol=protocol, input_data=input_data, shapes=shapes, variant_search=variant_search,
    )  # fmt: skip
    server = None
    try:
        if url is None:
            server = _start_embedded(repository or default_repository(spec_file))
            url = server.endpoints.grpc_url if protocol == "grpc" else server.endpoints.http_url.removeprefix("http://")
            metrics_url = metrics_url or server.endpoints.metrics_url
        result = search.run(url, metrics_url)
    except KeyboardInterrupt:
        err_console.print("interrupted" if objective.llm else "interrupted: the original config was loaded back")
        sys.exit(130)
    finally:
        if server is not None:
            server.stop()
    if objective.llm:
        from tritonkit.cli._tune_llm import show_llm_tune

        show_llm_tune(result, spec_file=spec_file, report_dir=report_dir)
        _write_back(spec_file, model, result, yes)
        return
    _show_config_tune(model, result, rate=rate, p99_ms=objective.p99_ms, spec_file=spec_file, report_dir=report_dir,
                      variant_search=variant_search)  # fmt: skip
    _write_back(spec_file, model, result, yes, variant=variant_search.chosen() if variant_search else None)


@dataclass(frozen=True)
class _Objective:
    """What tune holds the model to: a p99 for a config search, TTFT/TPOT p99s (and the request's
    size) for an llm model — from the flags, else the spec's intent."""

    llm: bool
    p99_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    prompt: str | None = None
    max_tokens: int | None = None

    @classmethod
    def of(
        cls, model: str, entry: Any, *, p99_ms: float | None, rate: float | None, ttft_p99_ms: float | None,
        tpot_p99_ms: float | None, prompt: str | None, max_tokens: int | None, protocol: str, tensor_load: bool,
    ) -> _Objective:  # fmt: skip
        from tritonkit.spec.schema import LlmModel

        if isinstance(entry, LlmModel):
            from tritonkit.cli._tune_llm import llm_objective

            ttft, tpot = llm_objective(
                model, entry, p99_ms=p99_ms, rate=rate, ttft_p99_ms=ttft_p99_ms, tpot_p99_ms=tpot_p99_ms,
                protocol=protocol, tensor_load=tensor_load,
            )  # fmt: skip
            return cls(True, ttft_p99_ms=ttft, tpot_p99_ms=tpot, prompt=prompt,
                       max_tokens=max_tokens or entry.default_max_tokens)  # fmt: skip
        if ttft_p99_ms is not None or tpot_p99_ms is not None or prompt is not None or max_tokens is not None:
            raise UsageError(
                f"--ttft-p99-ms, --tpot-p99-ms, --prompt and --max-tokens are for llm models; '{model}' is not",
                hint="give --p99-ms",
            )
        if p99_ms is None:  # the objective comes from the spec's intent unless a flag overrides it
            p99_ms = entry.slo.p99_ms if entry.slo is not None else None
        if p99_ms is None:
            raise UsageError(
                f"no latency budget for '{model}'", hint="give --p99-ms, or set slo: {p99_ms: …} for it in the spec"
            )
        return cls(False, p99_ms=p99_ms)


@dataclass(frozen=True)
class _Search:
    """One tune, by kind: an llm model's capacity, a variant × config search, or a config search."""

    model: str
    objective: _Objective
    rate: float | None
    budget_s: float
    max_points: int
    bounds: Any
    window_s: float
    protocol: str
    input_data: Path | None
    shapes: tuple[str, ...]
    variant_search: Any

    def run(self, url: str, metrics_url: str | None) -> Any:
        goal, common = self.objective, dict(budget_s=self.budget_s, max_points=self.max_points, window_s=self.window_s)
        if goal.llm:
            from tritonkit.perf.tune_llm import DEFAULT_PROMPT, tune_llm

            return _run_with_progress(
                tune_llm, self.model, ttft_p99_ms=goal.ttft_p99_ms, tpot_p99_ms=goal.tpot_p99_ms, url=url,
                prompt=DEFAULT_PROMPT if goal.prompt is None else goal.prompt, max_tokens=goal.max_tokens,
                metrics_url=metrics_url, **common,
            )  # fmt: skip
        assert goal.p99_ms is not None
        if self.variant_search is not None:
            from tritonkit.perf.variants import tune_variants

            found = _run_with_progress(
                tune_variants, self.model, source=self.variant_search.source, p99_ms=goal.p99_ms,
                input_data=self.input_data, accuracy_budget=self.variant_search.budget, url=url,
                protocol=self.protocol, gpu=self.variant_search.gpu, bounds=self.bounds, **common,
            )  # fmt: skip
            self.variant_search.found = found
            return found.tune
        from tritonkit.perf.inputs import parse_shapes
        from tritonkit.perf.tune import tune as run_tune

        return _run_with_progress(
            run_tune, self.model, p99_ms=goal.p99_ms, url=url, protocol=self.protocol, rate=self.rate,
            bounds=self.bounds, input_data=self.input_data, shapes=parse_shapes(self.shapes), **common,
        )  # fmt: skip


def _show_config_tune(
    model: str, result: Any, *, rate: float | None, p99_ms: float | None, spec_file: Path, report_dir: Path | None,
    variant_search: Any,
) -> None:  # fmt: skip
    """A config (or variant × config) tune's table, --json document and report (an llm's:
    :func:`tritonkit.cli._tune_llm.show_llm_tune`)."""
    if variant_search is not None:
        variant_search.show()
    _print_tune(result)
    record(
        model=model,
        objective="max-throughput" if rate is None else "min-p99",
        p99_ms=p99_ms,
        rate=rate,
        original=result.original,
        points=[_tune_point(p) for p in result.points],
        baseline=_tune_point(result.baseline),
        best=_tune_point(result.best),
        stopped=result.stopped or "finished",
        confirmation=result.confirmation,
        unconfirmed=_tune_point(result.unconfirmed),
        not_confirmed=result.not_confirmed or None,
        elapsed_s=result.elapsed_s,
        spec_file=spec_file,
        written=False,
    )
    from tritonkit.perf.report import write_tune_report

    objective = f"max throughput, p99 ≤ {p99_ms:g} ms" if rate is None else f"min p99 at {rate:g}/s"
    png, page = write_tune_report(
        result, report_dir or Path("reports") / f"tune-{model}", title=f"{model}: {objective}",
        variants=variant_search.found if variant_search is not None else None,
    )  # fmt: skip
    console.print(f"report: {png}  {page}")
    record(report={"png": png, "html": page})


def _tune_point(point: Any) -> dict[str, Any] | None:
    if point is None:
        return None
    from tritonkit.cli._output import jsonable

    return {"settings": jsonable(point.settings), "within_slo": point.within_slo, "bench": bench_point(point.bench)}


def _start_embedded(root: Path) -> Any:
    from tritonkit.serve.endpoints import Endpoints
    from tritonkit.serve.server import TritonServer

    require_verified(root)
    server = TritonServer(root, endpoints=Endpoints.allocate())
    with console.status(f"starting Triton on {root.resolve()} …"):
        server.start()
    console.print(f"Triton pid {server.pid} serving {root} on {server.endpoints.grpc_url} (gRPC)")
    return server


def _run_with_progress(run: Any, model: str, **options: Any) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.fields[points]:>3} points"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting", total=options["budget_s"], points=0)

        def progress(event: Event) -> None:
            bar.update(task, completed=event.done, description=event.message, points=event.data.get("points", 0))

        return run(model, progress=progress, **options)


def _print_tune(result: Any) -> None:
    table = Table(title=f"tune {result.model}", title_justify="left", box=box.SIMPLE, pad_edge=False)
    for column in ("#", "settings", "load", "inf/s", "p99", "batch", "ok"):
        table.add_column(column, justify="left" if column == "settings" else "right", no_wrap=True)
    for number, p in enumerate(result.points, 1):
        style = "bold green" if p is result.best else ""
        ok = "yes" if p.within_slo else "[red]" + (p.bench.client_limited and "client" or "no") + "[/]"
        table.add_row(
            str(number), p.settings.label(), p.offered, f"{p.throughput:.0f}", f"{p.p99_ms:.2f}",
            f"{p.bench.server.mean_batch_size:.1f}", ok, style=style,
        )  # fmt: skip
    console.print(table)
    base, best = result.baseline, result.best
    console.print(
        f"{len(result.points)} points, {result.configs_tried} settings, {result.elapsed_s:.0f}s; "
        f"stopped: {result.stopped or 'finished'}"
    )
    if base is not None:
        console.print(f"original: {_describe(base)}")
    else:
        console.print(f"original: {result.original.label()} → nothing within the budget")
    if result.not_confirmed:
        console.print(f"[bold red]not confirmed:[/] {result.not_confirmed}; no winner is claimed")
    elif result.unconfirmed is not None and result.confirmation is not None:
        console.print(
            f"the search's winner {_describe(result.unconfirmed)} was not confirmed when re-measured against "
            f"the original: {result.confirmation.describe()}; keeping the original settings"
        )
    elif best is not None:
        gain = ""
        if result.confirmation is not None:
            gain = f" ({result.confirmation.describe()} the original settings)"
        console.print(f"[bold]chosen:[/]   {_describe(best)}{gain}")


def _describe(point: Any) -> str:
    return f"{point.settings.label()} → {point.throughput:.0f}/s, p99 {point.p99_ms:.2f} ms at {point.offered}"


def _write_back(spec_file: Path, model: str, result: Any, yes: bool, *, variant: dict[str, Any] | None = None) -> None:
    from tritonkit.spec.update import update_settings

    if result.best is None:
        why = "no winner was confirmed" if getattr(result, "not_confirmed", "") else "nothing met the budget"
        console.print(f"{why}; {spec_file} unchanged")
        return
    settings = getattr(result.best, "settings", None)  # an llm tune measures capacity only: no settings
    update = update_settings(spec_file, model, settings, capacity=result.capacity(), variant=variant)
    if not update.changed:
        console.print(f"{spec_file} already has these settings")
        return
    console.print(update.diff, highlight=False, markup=False)
    record(diff=update.diff)
    if not yes:
        # A CI job (no terminal) or a --json run (stdout is the document) cannot answer a prompt:
        # exiting 0 there would pass a job that changed nothing.
        if json_mode() or not sys.stdin.isatty():
            raise NotConfirmed(
                f"{spec_file} not changed: no terminal to confirm the settings found for '{model}'",
                hint="rerun with --yes to write them without asking",
            )
        if not click.confirm(f"write these settings into {spec_file}?", default=True):
            raise NotConfirmed(f"{spec_file} not changed: the new settings were not confirmed", hint="")
    update.write()
    record(written=True)
    console.print(f"wrote {spec_file}; 'tritonkit build -f {spec_file}' makes a new repository digest")


COMMANDS = [bench, tune]
