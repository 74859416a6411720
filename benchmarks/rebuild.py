"""Clean build vs no-change rebuild of the example repository, measured side by side.

Runs ``tritonkit build`` as a user would (a fresh process each time, so interpreter start-up
and imports are counted) N times each way, in one invocation, and prints a table with the
median wall times and their ratio. Nothing is hard-coded; the machine's noise shows in the
min/max columns.

    .venv/bin/python benchmarks/rebuild.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "model_repository" / "tritonkit.yaml"


def _run(out: Path, cache: Path) -> float:
    command = [
        sys.executable,
        "-m",
        "tritonkit",
        "build",
        "-f",
        str(SPEC),
        "-o",
        str(out),
        "--cache-dir",
        str(cache),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    clean: list[float] = []
    cached: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        for i in track(range(args.repeat), description="clean build + no-change rebuild"):
            out, cache = base / f"out{i}", base / f"cache{i}"
            clean.append(_run(out, cache))
            cached.append(_run(out, cache))
            shutil.rmtree(cache, ignore_errors=True)
            subprocess.run(["chmod", "-R", "u+w", str(out)], check=True)
    table = Table(title=f"tritonkit build of {SPEC.relative_to(ROOT)} ({args.repeat} runs each, wall seconds)")
    for column in ("build", "median", "min", "max"):
        table.add_column(column)
    for name, times in (("clean (export + check)", clean), ("no-change rebuild", cached)):
        table.add_row(name, f"{statistics.median(times):.3f}", f"{min(times):.3f}", f"{max(times):.3f}")
    console = Console()
    console.print(table)
    console.print(
        f"no-change rebuild is {statistics.median(clean) / statistics.median(cached):.1f}x faster than a clean build"
    )


if __name__ == "__main__":
    main()
