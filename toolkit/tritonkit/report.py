"""Bench reports a person can look at: a PNG plot and a self-contained HTML page.

The plot shows throughput against p99 latency for every measured point (client-limited points
are drawn hollow and labelled, since their numbers describe the client, not the server); the
HTML page embeds the same plot (base64) above a table of every point. matplotlib is an optional
dependency (``tritonkit[report]``) imported here only.

Example:
    >>> png, html = write_bench_report(points, Path("reports/classifier"), title="classifier over grpc")
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path

from .bench import BenchPoint
from .errors import require


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
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>{html.escape(title)}</h1>
<img alt="throughput vs p99" src="data:image/png;base64,{image_b64}">
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
