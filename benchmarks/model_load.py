"""How long Triton takes to load Python-backend models, with and without what tritonkit sets.

Loads the example repository's LLM (``model_repository/llm.yaml``: torch and transformers in its
stub) and the demo repository (an ONNX model on the Python-based onnxruntime backend, a Python
model, an ensemble) on a fresh embedded Triton, in alternating rounds, four ways:

- ``before``: auto-complete on and no stub bytecode (what tritonkit ran until 2026-12-07: the
  Python backend starts one extra stub per model to ask ``model.py`` for config changes, and every
  stub compiled what it imported from source);
- ``no auto-complete``: ``--disable-auto-complete-config`` only;
- ``stub bytecode``: the stubs' bytecode cache only;
- ``tritonkit``: both (the default).

The figure is the time from starting ``tritonserver`` to every model ready (median of the rounds,
with the spread), and the ratio to ``before``. Nothing is asserted: the numbers are printed for a
person to read. The stubs' cache is a scratch directory, warmed by one untimed start first.

A bar chart of the medians is written to ``reports/model_load.png``.

Usage: ``.venv/bin/python benchmarks/model_load.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tritonkit import Endpoints, TritonServer, build_repository, load_spec
from tritonkit.serve.binary import STUB_PYCACHE_ENV
from tritonkit.serve.server import AS_WRITTEN, DEFAULT_FLAGS

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "model_repository"
SPECS = {"LLM": EXAMPLE / "llm.yaml", "demo": EXAMPLE / "tritonkit.yaml"}
WAYS = ("before", "no auto-complete", "stub bytecode", "tritonkit")


class _Server(TritonServer):
    """A TritonServer whose stubs use ``pycache`` as their bytecode cache (``/nonexistent``: none)."""

    def __init__(self, repository: Path, pycache: str, flags: list[str]) -> None:
        super().__init__(repository, endpoints=Endpoints.allocate(), flags=flags)
        self.pycache = pycache

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env[STUB_PYCACHE_ENV] = self.pycache
        return env


def _load_seconds(repository: Path, way: str, cache: Path) -> float:
    with_cache = way in ("stub bytecode", "tritonkit")
    as_written = way in ("no auto-complete", "tritonkit")
    flags = [f for f in DEFAULT_FLAGS if as_written or f != AS_WRITTEN]
    server = _Server(repository, str(cache) if with_cache else "/nonexistent/no-bytecode", flags)
    started = time.perf_counter()
    server.start()
    seconds = time.perf_counter() - started
    server.stop()
    return seconds


def _plot(results: dict[str, dict[str, list[float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(WAYS)
    for i, way in enumerate(WAYS):
        xs = [n + i * width for n in range(len(results))]
        ax.bar(xs, [statistics.median(r[way]) for r in results.values()], width, label=way)
    ax.set_xticks([n + width * (len(WAYS) - 1) / 2 for n in range(len(results))], list(results))
    ax.set_ylabel("seconds from start to every model ready (median)")
    ax.legend()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    console = Console(stderr=True)
    table = Table(title="Triton start to every model ready (s): median (min–max), ratio to before")
    table.add_column("repository")
    for way in WAYS:
        table.add_column(way, justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        root, cache = Path(scratch), Path(scratch) / "stub-pycache"
        cache.mkdir()
        results: dict[str, dict[str, list[float]]] = {}
        for name, spec in SPECS.items():
            repository = build_repository(load_spec(spec), root / name, cache_dir=root / f"{name}-cache").path
            _load_seconds(repository, "tritonkit", cache)  # fills the stubs' bytecode cache
            times = results[name] = {way: [] for way in WAYS}
            for number in range(args.rounds):
                for way in WAYS:
                    times[way].append(_load_seconds(repository, way, cache))
                    console.print(f"{name} round {number + 1}/{args.rounds}: {way} {times[way][-1]:.1f} s")
            base = statistics.median(times["before"])
            table.add_row(
                name,
                *(
                    f"{statistics.median(t):.1f} ({min(t):.1f}–{max(t):.1f}) {statistics.median(t) / base:.2f}×"
                    for t in times.values()
                ),
            )
    Console().print(table)
    _plot(results, HERE.parent / "reports" / "model_load.png")


if __name__ == "__main__":
    main()
