"""Bench and tune reports a person can look at: a PNG plot and a self-contained HTML page.

For bench, the plot shows throughput against p99 latency for every measured point (client-limited points
are drawn hollow and labelled, since their numbers describe the client, not the server); the
HTML page embeds the same plot (base64) above a table of every point. matplotlib is an optional
dependency (``tritonkit[report]``) imported here only. For tune, the plot shows every measured
point coloured by settings, the p99 budget as a vertical line, the original settings' best point
and the chosen one; the table lists every point. An ``llm`` model's tune gets requests/s against
its TTFT and its TPOT p99 (:func:`write_tune_llm_report`).

Example:
    >>> png, html = write_bench_report(points, Path("reports/classifier"), title="classifier over grpc")
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
from collections.abc import Sequence
from pathlib import Path

from tritonkit.errors import require
from tritonkit.perf.stats import BenchPoint
from tritonkit.perf.tune import TuneResult
from tritonkit.perf.tune_llm import LlmTuneResult
from tritonkit.perf.variants import VariantResult


def write_bench_report(points: Sequence[BenchPoint], out_dir: Path, *, title: str) -> tuple[Path, Path]:
    """Write ``bench.png`` and ``bench.html`` into ``out_dir``; return their paths."""
    matplotlib = require("matplotlib", "report")
    matplotlib.use("Agg")  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "bench.png"
    figure, axis = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for point in points:
        r = point.result
        if math.isnan(r.p99_ms):
            continue
        limited = bool(point.client_limited)
        colour = "tab:gray" if limited else "tab:blue"
        fill = colour if point.stable and not limited else "none"
        axis.plot([r.p50_ms, r.p99_ms], [r.throughput, r.throughput], "-", color=colour, alpha=0.4)
        axis.plot(r.p50_ms, r.throughput, "o", color=colour, markerfacecolor=fill, markersize=7)
        axis.plot(r.p99_ms, r.throughput, "^", color=colour, markerfacecolor=fill, markersize=8)
        note = " (client-limited)" if limited else "" if point.stable else " (unstable)"
        axis.annotate(_load(point) + note, (r.p99_ms, r.throughput), textcoords="offset points", xytext=(6, 4))
    axis.plot([], [], "o", color="tab:blue", label="p50")
    axis.plot([], [], "^", color="tab:blue", label="p99")
    axis.plot([], [], "^", color="tab:blue", markerfacecolor="none", label="hollow: not stable in its windows")
    axis.plot([], [], "^", color="tab:gray", markerfacecolor="none", label="gray: client-limited (not the server's)")
    axis.set_xlabel("latency (ms, from intended send time)")
    axis.set_ylabel("throughput (requests/s)")
    axis.set_xlim(left=0)
    axis.set_ylim(bottom=0)  # linear axes from zero: differences are not exaggerated
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.margins(x=0.15, y=0.12)  # room for the point labels
    axis.legend(fontsize=7, loc="lower right")
    figure.text(0.01, 0.005, run_metadata(points[0].meter if points else ""), fontsize=6, color="dimgray")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(png)
    plt.close(figure)
    _write_csv(out_dir / "bench.csv", _bench_rows(points))

    page = out_dir / "bench.html"
    image = base64.b64encode(png.read_bytes()).decode()
    page.write_text(_html(points, title, image))
    return png, page


def _load(point: BenchPoint) -> str:
    return f"c={point.level:g}" if point.mode == "concurrency" else f"{point.level:g}/s"


def _html(points: Sequence[BenchPoint], title: str, image_b64: str) -> str:
    header = ["load", "inf/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "stable", "queue µs",
              "compute µs", "mean batch", "client overhead ms", "client-limited"]  # fmt: skip
    rows = []
    for p in points:
        r, s = p.result, p.server
        compute = s.compute_input_us + s.compute_infer_us + s.compute_output_us
        cells = [_load(p), f"{r.throughput:.1f}", f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}",
                 f"{r.max_ms:.2f}", "yes" if p.stable else "no", f"{s.queue_us:.0f}",
                 f"{compute:.0f}", f"{s.mean_batch_size:.2f}", f"{p.client_overhead_ms:.2f}",
                 p.client_limited or "no"]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    summary = (
        f'<p>{html.escape(run_metadata(points[0].meter if points else ""))} · <a href="bench.csv">bench.csv</a></p>'
    )
    return _page(title, summary, image_b64, head, rows)


def write_tune_report(
    result: TuneResult, out_dir: Path, *, title: str, variants: VariantResult | None = None
) -> tuple[Path, Path]:
    """Write ``tune.png`` and ``tune.html`` into ``out_dir``; return their paths. With ``variants``
    (``tune --variants``) the page opens with every variant's accuracy and screening point."""
    matplotlib = require("matplotlib", "report")
    matplotlib.use("Agg")  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "tune.png"
    figure, axis = plt.subplots(figsize=(8, 5), dpi=110)
    colours = plt.get_cmap("tab10")
    order = list(dict.fromkeys(p.settings for p in result.points))
    for index, settings in enumerate(order):
        mine = [p for p in result.points if p.settings == settings and not math.isnan(p.p99_ms)]
        mine.sort(key=lambda p: p.bench.level)
        colour = colours(index % 10)
        axis.plot([p.p99_ms for p in mine], [p.throughput for p in mine], "-", color=colour, alpha=0.35)
        for p in mine:
            face = colour if p.within_slo else "none"
            axis.plot(p.p99_ms, p.throughput, "o", color=colour, markerfacecolor=face, markersize=6)
        axis.plot([], [], "o-", color=colour, label=settings.label())
    axis.plot([], [], "o", color="gray", label="filled: within the p99 budget")
    axis.plot([], [], "o", color="gray", markerfacecolor="none", label="hollow: over the budget")
    axis.axvline(result.p99_ms, color="tab:red", linestyle="--", label=f"p99 budget {result.p99_ms:g} ms")
    for point, marker, name in ((result.baseline, "s", "original settings"), (result.best, "*", "chosen")):
        if point is not None:
            star = marker == "*"
            axis.plot(
                point.p99_ms,
                point.throughput,
                marker,
                color="black",
                markersize=15 if star else 10,
                markerfacecolor="gold" if star else "none",
                label=f"{name}: {point.throughput:.0f}/s",
            )
    axis.set_xlabel("p99 latency (ms); each line: one settings, points in order of concurrency")
    axis.set_ylabel("throughput (requests/s)")
    axis.set_xlim(left=0)
    axis.set_ylim(bottom=0)
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    meter = result.points[0].bench.meter if result.points else ""
    figure.text(0.01, 0.005, run_metadata(meter), fontsize=6, color="dimgray")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(png)
    plt.close(figure)
    _write_csv(out_dir / "tune.csv", _tune_rows(result))

    header = ["#", "settings", "load", "inf/s", "p50 ms", "p99 ms", "queue µs", "compute µs",
              "mean batch", "within budget", "client-limited"]  # fmt: skip
    rows = []
    for number, p in enumerate(result.points, 1):
        r, s = p.bench.result, p.bench.server
        compute = s.compute_input_us + s.compute_infer_us + s.compute_output_us
        mark = " (chosen)" if p is result.best else " (original best)" if p is result.baseline else ""
        cells = [str(number), p.settings.label() + mark, p.offered, f"{r.throughput:.1f}", f"{r.p50_ms:.2f}",
                 f"{r.p99_ms:.2f}", f"{s.queue_us:.0f}", f"{compute:.0f}", f"{s.mean_batch_size:.2f}",
                 "yes" if p.within_slo else "no", p.bench.client_limited or "no"]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    confirmed = ""
    if result.confirmation is not None:
        verdict = "confirmed" if result.confirmation.confirmed else "not confirmed: the original settings were kept"
        confirmed = f" Winner against the original: {result.confirmation.describe()}, {verdict}."
    summary = (
        f"<p>{len(result.points)} points over {result.configs_tried} settings in {result.elapsed_s:.0f} s; "
        f"stopped: {html.escape(result.stopped or 'finished')}.{html.escape(confirmed)}</p>"
        f'<p>{html.escape(run_metadata(meter))} · <a href="tune.csv">tune.csv</a></p>'
    )
    if variants is not None:
        summary = _variants_table(variants) + summary
    return png, _write_tune_page(out_dir, png, title, summary, header, rows)


def _variants_table(found: VariantResult) -> str:
    """The variants searched: accuracy against the original, screening point, outcome."""
    cells = []
    for trial in found.trials:
        screen = trial.screen
        accuracy = (
            trial.accuracy.describe() if trial.accuracy else ("exact (the original)" if not trial.variant else "")
        )
        outcome = "chosen" if trial is found.chosen else (trial.dropped or "slower")
        row = [trial.label, accuracy, f"{screen.throughput:.0f}/s p99 {screen.p99_ms:.2f} ms at {screen.offered}"
               if screen else "", outcome]  # fmt: skip
        cells.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    not_tried = "".join(f"<li>{html.escape(line)}</li>" for line in found.not_tried)
    return (
        "<h2>Variants</h2><table><tr><th>variant</th><th>accuracy against the original</th>"
        "<th>screened at the served settings</th><th>outcome</th></tr>"
        + "".join(cells)
        + "</table>"
        + (f"<p>Not tried:</p><ul>{not_tried}</ul>" if not_tried else "")
    )


def run_metadata(meter: str) -> str:
    """Where and how the numbers were measured: date, host, cores, meter, versions."""
    import datetime
    import os
    import platform

    from tritonkit.build.builders.base import tool_version

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meter = f"meter {meter}" if meter else "meter unknown"
    return (
        f"{when} · {platform.node()} · {os.cpu_count()} cores · {meter} · "
        f"tritonkit {tool_version('tritonkit')} · tritonclient {tool_version('tritonclient')}"
    )


def _bench_rows(points: Sequence[BenchPoint]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for p in points:
        r, s = p.result, p.server
        rows.append({
            "mode": p.mode, "level": p.level, "meter": p.meter, "throughput": r.throughput,
            "p50_ms": r.p50_ms, "p90_ms": r.p90_ms, "p99_ms": r.p99_ms, "max_ms": r.max_ms,
            "completed": r.completed, "stable": p.stable, "client_limited": p.client_limited,
            "queue_us": s.queue_us, "compute_input_us": s.compute_input_us, "compute_infer_us": s.compute_infer_us,
            "compute_output_us": s.compute_output_us, "mean_batch_size": s.mean_batch_size,
            "client_overhead_ms": p.client_overhead_ms,
        })  # fmt: skip
    return rows


def _tune_rows(result: TuneResult) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for number, (p, bench_row) in enumerate(zip(result.points, _bench_rows([q.bench for q in result.points])), 1):
        s = p.settings
        rows.append({
            "number": number, "instances": s.instances, "max_batch_size": s.max_batch_size,
            "max_queue_delay_microseconds": s.max_queue_delay_microseconds,
            "preferred_batch_size": " ".join(str(b) for b in s.preferred_batch_size),
            "within_slo": p.within_slo, "chosen": p is result.best, "original_best": p is result.baseline,
            **bench_row,
        })  # fmt: skip
    return rows


def _write_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    import csv

    with path.open("w", newline="") as handle:
        if not rows:
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_tune_page(
    out_dir: Path, png: Path, title: str, summary: str, header: Sequence[str], rows: Sequence[str]
) -> Path:
    """``tune.html``: the plot embedded above the summary and the table of every point."""
    page = out_dir / "tune.html"
    image = base64.b64encode(png.read_bytes()).decode()
    page.write_text(_page(title, summary, image, "".join(f"<th>{html.escape(h)}</th>" for h in header), rows))
    return page


def _page(title: str, summary: str, image_b64: str, head: str, rows: Sequence[str]) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>{html.escape(title)}</h1>{summary}
<img alt="throughput vs p99" src="data:image/png;base64,{image_b64}">
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


def write_tune_llm_report(result: LlmTuneResult, out_dir: Path, *, title: str) -> tuple[Path, Path]:
    """Write an llm tune's ``tune.png`` and ``tune.html`` into ``out_dir``; return their paths.

    Two panels, requests/s against TTFT p99 and against TPOT p99, each point a concurrency level
    (filled: within the SLO), the budget as a vertical line and the capacity starred.
    """
    matplotlib = require("matplotlib", "report")
    matplotlib.use("Agg")  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "tune.png"
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.6), dpi=110, sharey=True)
    points = sorted(result.points, key=lambda p: p.concurrency)
    panels = (("TTFT", "ttft_p99_ms", result.slo.ttft_p99_ms), ("TPOT", "tpot_p99_ms", result.slo.tpot_p99_ms))
    for axis, (name, key, budget) in zip(axes, panels):
        xs = [getattr(p, key) for p in points]
        axis.plot(xs, [p.rps for p in points], "-", color="tab:blue", alpha=0.35)
        for p, x in zip(points, xs):
            face = "tab:blue" if p.within_slo else "none"
            axis.plot(x, p.rps, "o", color="tab:blue", markerfacecolor=face, markersize=7)
            axis.annotate(p.offered, (x, p.rps), textcoords="offset points", xytext=(6, 4), fontsize=7)
        if budget is not None:
            axis.axvline(budget, color="tab:red", linestyle="--", label=f"{name} budget {budget:g} ms")
        if result.best is not None:
            axis.plot(getattr(result.best, key), result.best.rps, "*", color="black", markersize=15,
                      markerfacecolor="gold", label=f"capacity {result.best.rps:.2f}/s")  # fmt: skip
        axis.set_xlabel(f"{name} p99 (ms, client side)")
        axis.set_xlim(left=0)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("requests/s (filled: within the SLO)")
    figure.suptitle(title)
    figure.text(0.01, 0.005, run_metadata("llm_client"), fontsize=6, color="dimgray")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(png)
    plt.close(figure)
    rows_csv = [
        {"number": n, **dataclasses.asdict(p), "chosen": p is result.best} for n, p in enumerate(result.points, 1)
    ]
    _write_csv(out_dir / "tune.csv", rows_csv)

    header = ["#", "load", "req/s", "tok/s", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms", "errors",
              "samples", "within SLO"]  # fmt: skip
    rows = []
    for number, p in enumerate(result.points, 1):
        mark = " (capacity)" if p is result.best else ""
        cells = [str(number), p.offered + mark, f"{p.rps:.2f}", f"{p.tokens_per_s:.0f}", f"{p.ttft_p50_ms:.1f}",
                 f"{p.ttft_p99_ms:.1f}", f"{p.tpot_p50_ms:.2f}", f"{p.tpot_p99_ms:.2f}", str(p.errors),
                 str(p.samples), "yes" if p.within_slo else "no"]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    summary = (
        f"<p>{len(result.points)} levels in {result.elapsed_s:.0f} s; stopped: "
        f"{html.escape(result.stopped or 'finished')}. Each request: {len(result.prompt)} prompt characters, "
        f"{result.max_tokens} output tokens.</p>"
        f'<p>{html.escape(run_metadata("llm_client"))} · <a href="tune.csv">tune.csv</a></p>'
    )
    return png, _write_tune_page(out_dir, png, title, summary, header, rows)
