"""``tritonkit tune`` for ``kind: llm`` models: the objective from ``slo:``, the table, the document.

The measurement is :mod:`tritonkit.perf.tune_llm`; this module only turns flags and the spec
into its arguments and renders what it found, in the shape tune uses for every kind
(docs/json.md). :mod:`tritonkit.cli.perf` calls it when the model's kind is ``llm``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from tritonkit.cli._common import console
from tritonkit.cli._output import jsonable, record
from tritonkit.errors import UsageError


def llm_objective(
    model: str,
    entry: Any,
    *,
    p99_ms: float | None,
    rate: float | None,
    ttft_p99_ms: float | None,
    tpot_p99_ms: float | None,
    protocol: str,
    tensor_load: bool,
) -> tuple[float | None, float | None]:
    """``(ttft_p99_ms, tpot_p99_ms)`` for an llm model: each flag overrides the spec's ``slo:`` key.

    Raises:
        UsageError: a flag for tensor models (--p99-ms, --rate, --input-data, --shape), HTTP
            (streams need gRPC), or neither budget in the flags nor in the spec.
    """
    if p99_ms is not None:
        raise UsageError(
            f"'{model}' is an llm model: its budget is TTFT and TPOT, not p99",
            hint="give --ttft-p99-ms and/or --tpot-p99-ms (or slo: {ttft_p99_ms: …, tpot_p99_ms: …} in the spec)",
        )
    if rate is not None:
        raise UsageError(
            f"'{model}' is an llm model: tune measures its capacity in a closed loop, not at a rate",
            hint="drop --rate",
        )
    if tensor_load:
        raise UsageError(
            f"'{model}' is an llm model: its load is a prompt, not tensors",
            hint="drop --input-data/--shape; use --prompt and --max-tokens",
        )
    if protocol != "grpc":
        raise UsageError("an llm model streams its tokens over gRPC only", hint="drop --protocol http")
    slo = entry.slo
    ttft = ttft_p99_ms if ttft_p99_ms is not None else slo.ttft_p99_ms if slo is not None else None
    tpot = tpot_p99_ms if tpot_p99_ms is not None else slo.tpot_p99_ms if slo is not None else None
    if ttft is None and tpot is None:
        raise UsageError(
            f"no TTFT or TPOT budget for llm model '{model}'",
            hint="give --ttft-p99-ms / --tpot-p99-ms, or set slo: {ttft_p99_ms: 500, tpot_p99_ms: 50} in the spec",
        )
    return ttft, tpot


def show_llm_tune(result: Any, *, spec_file: Path, report_dir: Path | None) -> None:
    """The table, the summary, the ``--json`` fields and the report (tune.png, tune.html)."""
    from tritonkit.perf.report import write_tune_llm_report

    table = Table(title=f"tune {result.model} (llm)", title_justify="left", box=box.SIMPLE, pad_edge=False)
    engine = any(not math.isnan(p.engine_ttft_p99_ms) for p in result.points)
    columns = ["#", "load", "req/s", "tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "err", "ok"]
    for column in columns + (["engine TTFT p99", "engine TPOT p99"] if engine else []):
        table.add_column(column, justify="right", no_wrap=True)
    for number, p in enumerate(result.points, 1):
        cells = [
            str(number), p.offered, f"{p.rps:.2f}", f"{p.tokens_per_s:.0f}", f"{p.ttft_p50_ms:.1f}",
            f"{p.ttft_p99_ms:.1f}", f"{p.tpot_p50_ms:.1f}", f"{p.tpot_p99_ms:.1f}", str(p.errors),
            "yes" if p.within_slo else "[red]no[/]",
        ]  # fmt: skip
        if engine:
            cells += [f"{p.engine_ttft_p99_ms:.1f}", f"{p.engine_tpot_p99_ms:.1f}"]
        table.add_row(*cells, style="bold green" if p is result.best else "")
    console.print(table)
    console.print(
        f"{len(result.points)} levels, {result.elapsed_s:.0f}s; stopped: {result.stopped or 'finished'}; "
        f"each request: {len(result.prompt)} prompt characters, {result.max_tokens} tokens; "
        "latencies in ms, client side" + ("; the engine's from its histograms, judged too" if engine else "")
    )
    best = result.best
    console.print(
        f"[bold]capacity:[/] {best.rps:.2f} req/s at {best.offered} within {result.slo.describe()} "
        f"(TTFT p99 {best.ttft_p99_ms:.1f} ms, TPOT p99 {best.tpot_p99_ms:.1f} ms)"
    )
    record(
        model=result.model,
        kind="llm",
        objective="max-throughput",
        p99_ms=None,
        rate=None,
        ttft_p99_ms=result.slo.ttft_p99_ms,
        tpot_p99_ms=result.slo.tpot_p99_ms,
        prompt_chars=len(result.prompt),
        max_tokens=result.max_tokens,
        original=None,
        points=[_point(p) for p in result.points],
        baseline=_point(result.points[0]),
        best=_point(best),
        stopped=result.stopped or "finished",
        confirmation=None,
        unconfirmed=None,
        capacity=result.capacity(),
        elapsed_s=result.elapsed_s,
        spec_file=spec_file,
        written=False,
    )
    png, page = write_tune_llm_report(
        result,
        report_dir or Path("reports") / f"tune-{result.model}",
        title=f"{result.model}: max requests/s, {result.slo.describe()}",
    )
    console.print(f"report: {png}  {page}")
    record(report={"png": png, "html": page})


def _point(point: Any) -> dict[str, Any]:
    doc: dict[str, Any] = jsonable(point)
    return {"settings": None, "within_slo": point.within_slo, "llm": doc}
