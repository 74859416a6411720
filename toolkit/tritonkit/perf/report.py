"""Bench and tune reports a person can look at: a PNG plot and a self-contained HTML page.

For bench, the plot shows throughput against p99 latency for every measured point (client-limited points
are drawn hollow and labelled, since their numbers describe the client, not the server); the
HTML page embeds the same plot (base64) above a table of every point. matplotlib is an optional
dependency (``tritonkit[report]``) imported here only. For tune, the plot shows every measured
point coloured by settings, the p99 budget as a vertical line, the original settings' best point
and the chosen one; the table lists every point.

Example:
    >>> png, html = write_bench_report(points, Path("reports/classifier"), title="classifier over grpc")
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path

from tritonkit.errors import require
from tritonkit.perf.bench import BenchPoint
from tritonkit.perf.tune import TuneResult


def write_bench_report(points: Sequence[BenchPoint], out_dir: Path, *, title: str) -> tuple[Path, Path]:
    """Write ``bench.png`` and ``bench.html`` into ``out_dir``; return their paths."""
    matplotlib = require("matplotlib", "report")
    matplotlib.use("Agg")  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "bench.png"
    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=110)
    for point in points:
        label = _load(point)
        x, y = point.result.p99_ms, point.result.throughput
        if math.isnan(x):
            continue
        hollow = bool(point.client_limited)
        axis.plot(x, y, "o", markerfacecolor="none" if hollow else "tab:blue", markeredgecolor="tab:blue", markersize=8)
        axis.annotate(
            label + (" (client-limited)" if hollow else ""), (x, y), textcoords="offset points", xytext=(6, 4)
        )
    axis.set_xlabel("p99 latency (ms, from intended send time)")
    axis.set_ylabel("throughput (inferences/s)")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.margins(x=0.15, y=0.12)  # room for the point labels
    figure.tight_layout()
    figure.savefig(png)
    plt.close(figure)

    page = out_dir / "bench.html"
    image = base64.b64encode(png.read_bytes()).decode()
    page.write_text(_html(points, title, image))
    return png, page


def _load(point: BenchPoint) -> str:
    return f"c={point.level:g}" if point.mode == "concurrency" else f"{point.level:g}/s"


def _html(points: Sequence[BenchPoint], title: str, image_b64: str) -> str:
    header = ["load", "inf/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "stable", "queue µs",
              "compute µs", "mean batch", "client overhead ms", "client-limited"]  # fmt: skip
    rows = []
    for p in points:
        r, s = p.result, p.server
        compute = s.compute_input_us + s.compute_infer_us + s.compute_output_us
        cells = [_load(p), f"{r.throughput:.1f}", f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}",
                 f"{r.max_ms:.2f}", str(r.errors), "yes" if p.stable else "no", f"{s.queue_us:.0f}",
                 f"{compute:.0f}", f"{s.mean_batch_size:.2f}", f"{p.client_overhead_ms:.2f}",
                 p.client_limited or "no"]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return _page(title, "", image_b64, head, rows)


def write_tune_report(result: TuneResult, out_dir: Path, *, title: str) -> tuple[Path, Path]:
    """Write ``tune.png`` and ``tune.html`` into ``out_dir``; return their paths."""
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
        axis.plot([], [], "o", color=colour, label=settings.label())
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
    axis.set_xlabel("p99 latency (ms)")
    axis.set_ylabel("throughput (inferences/s)")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(png)
    plt.close(figure)

    header = ["#", "settings", "load", "inf/s", "p50 ms", "p99 ms", "errors", "queue µs", "compute µs",
              "mean batch", "within budget", "client-limited"]  # fmt: skip
    rows = []
    for number, p in enumerate(result.points, 1):
        r, s = p.bench.result, p.bench.server
        compute = s.compute_input_us + s.compute_infer_us + s.compute_output_us
        mark = " (chosen)" if p is result.best else " (original best)" if p is result.baseline else ""
        cells = [str(number), p.settings.label() + mark, p.offered, f"{r.throughput:.1f}", f"{r.p50_ms:.2f}",
                 f"{r.p99_ms:.2f}", str(r.errors), f"{s.queue_us:.0f}", f"{compute:.0f}", f"{s.mean_batch_size:.2f}",
                 "yes" if p.within_slo else "no", p.bench.client_limited or "no"]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    summary = (
        f"<p>{len(result.points)} points over {result.configs_tried} settings in {result.elapsed_s:.0f} s; "
        f"stopped: {html.escape(result.stopped or 'finished')}.</p>"
    )
    page = out_dir / "tune.html"
    image = base64.b64encode(png.read_bytes()).decode()
    page.write_text(_page(title, summary, image, "".join(f"<th>{html.escape(h)}</th>" for h in header), rows))
    return png, page


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
