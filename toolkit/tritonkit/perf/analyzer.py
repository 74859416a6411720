"""NVIDIA's perf_analyzer as bench's meter: the field's own.

A Python load generator shares the machine's cores with the server it measures; on two cores
it measured 0.43–0.66× of the throughput perf_analyzer measured on the same server, and its
p99 was mostly its own. perf_analyzer (C++, the meter Model Analyzer uses) is therefore the
one meter of ``tritonkit bench`` and ``tune``; without it they stop with the install line.

Where it comes from: the ``tritonclient`` 2.51.0 wheel (the embedded server's own version)
ships a real ``perf_analyzer`` binary, which runs on CPU with Debian's ``libb64-0d`` and
``libcudart.so.12`` from PyPI's ``nvidia-cuda-runtime-cu12`` (no GPU used). ``make
perf-tools`` installs both into ``.venv-perf`` (PyPI's ``perf-analyzer`` package is an empty
placeholder here, and its real wheels need glibc 2.38). :func:`find_analyzer` looks, in order,
at an explicit path, ``$TRITONKIT_PERF_ANALYZER``, the ``.venv-perf`` beside the running
interpreter's venv, and ``PATH``.

One point = one perf_analyzer run at one concurrency or request rate, in time windows of
``window_s``, until three windows agree within 10% (throughput and p99) or ``max_windows``;
a run that never stabilises is measured once more with the bar lifted and reported unstable,
instead of failing (tune's points are one run of three windows: see :func:`run_point`).

Example:
    >>> analyzer = find_analyzer()
    >>> run = run_point(analyzer, "classifier", "127.0.0.1:8001", "grpc", "concurrency", 8,
    ...                 shapes={"features": [4]}, batch_size=1, window_s=2.0, max_windows=10)
    >>> run.throughput, run.p99_ms
"""

from __future__ import annotations

import csv
import enum
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tritonkit.errors import DependencyError, ServerError
from tritonkit.perf.inputs import Workload
from tritonkit.perf.stats import BenchPoint, WindowStats, server_delta
from tritonkit.serve.client import model_statistics

ENV_VAR = "TRITONKIT_PERF_ANALYZER"
INSTALL_HINT = (
    "run 'make perf-tools' (a checkout), or: pip install tritonclient==2.51.0 nvidia-cuda-runtime-cu12 "
    "and apt-get install libb64-0d (or point $TRITONKIT_PERF_ANALYZER at a perf_analyzer binary)"
)


@dataclass(frozen=True)
class Analyzer:
    """A perf_analyzer binary and the library directories it needs."""

    binary: Path
    library_path: tuple[str, ...] = ()

    def environment(self) -> dict[str, str]:
        """The environment to run it in: ``libcudart`` on ``LD_LIBRARY_PATH``, nothing else changed."""
        env = dict(os.environ)
        paths = [*self.library_path, *filter(None, env.get("LD_LIBRARY_PATH", "").split(os.pathsep))]
        if paths:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(paths)
        return env

    def version(self) -> str:
        """``2.51.0``, read from ``--version``.

        Raises:
            DependencyError: it does not start (a missing library) or is not perf_analyzer.
        """
        try:
            done = subprocess.run(
                [str(self.binary), "--version"], capture_output=True, text=True, timeout=30, env=self.environment()
            )
        except OSError as exc:
            raise DependencyError(f"{self.binary} cannot run: {exc}", hint=INSTALL_HINT) from exc
        match = re.search(r"Perf Analyzer Version (\S+)", done.stdout + done.stderr)
        if match is None:
            first = (done.stderr or done.stdout).strip().splitlines()[:1]
            raise DependencyError(
                f"{self.binary} is not a working perf_analyzer ({first[0] if first else 'no output'})",
                hint=INSTALL_HINT,
            )
        return match.group(1)


@dataclass(frozen=True)
class AnalyzerRun:
    """What one perf_analyzer run measured (latencies in milliseconds, client side)."""

    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    stable: bool


def find_analyzer(explicit: str | Path | None = None) -> Analyzer | None:
    """The perf_analyzer to use, or ``None`` when there is none (see the module docstring for the order)."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    candidates.append(Path(sys.prefix).parent / ".venv-perf" / "bin" / "perf_analyzer")
    found = shutil.which("perf_analyzer")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return Analyzer(path, _cuda_runtime_dirs(path))
    return None


def _cuda_runtime_dirs(binary: Path) -> tuple[str, ...]:
    """``nvidia/cuda_runtime/lib`` of the venv the binary was installed into, if any."""
    venv = binary.resolve().parent.parent
    return tuple(str(p) for p in sorted(venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib")))


def command(
    analyzer: Analyzer,
    model: str,
    address: str,
    protocol: str,
    mode: str,
    level: float,
    *,
    shapes: dict[str, list[int]],
    batch_size: int,
    window_s: float,
    max_windows: int,
    poisson: bool = True,
    stability_percent: int = 10,
    csv_file: Path,
    input_data: Path | None = None,
) -> list[str]:
    """The perf_analyzer command line for one point (pure; shown by ``--verbose`` to reproduce it)."""
    args = [
        str(analyzer.binary),
        "-m", model,
        "-u", address,
        "-i", protocol,
        "-b", str(batch_size),
        "--measurement-mode", "time_windows",
        "--measurement-interval", str(max(100, int(window_s * 1000))),
        "--max-trials", str(max(3, max_windows)),
        "-s", str(stability_percent),
        "--percentile=99",
        "-f", str(csv_file),
    ]  # fmt: skip
    if mode == "concurrency":
        args += ["--concurrency-range", f"{int(level)}:{int(level)}:1"]
    else:
        args += ["--request-rate-range", f"{level:g}:{level:g}:1"]
        args += ["--request-distribution", "poisson" if poisson else "constant"]
        # open loop must not wait for answers: in its default synchronous mode perf_analyzer sends
        # from 4 threads, each blocked on its request (asked for 133/s Poisson of a 25 ms model it
        # sent 80/s; with --async 128/s, benchmarks/slo_admission.py)
        args += ["--async"]
    for name, dims in sorted(shapes.items()):
        args += ["--shape", f"{name}:{','.join(str(d) for d in dims)}"]
    if input_data is not None:
        args += ["--input-data", str(input_data)]
    return args


def parse_csv(text: str) -> dict[str, float]:
    """The first data row of perf_analyzer's ``-f`` CSV, by column name (latencies in µs)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError("perf_analyzer wrote no measurement row")
    return {key.strip(): float(value) for key, value in rows[0].items() if key and value not in (None, "")}


class Windows(enum.Enum):
    """How many perf_analyzer windows measure one point: bench's protocol and tune's."""

    UNTIL_STABLE = "until stable"
    """Windows until three agree within 10 % (at most ``max_windows``); a point that never does is
    measured once more in three windows with the bar lifted, and marked unstable (bench)."""
    THREE = "three"
    """Exactly three windows, marked stable when they agree within 10 % as perf_analyzer judges
    it: the same three-window result at half the cost on a host where p99 rarely settles (tune)."""


def run_point(
    analyzer: Analyzer,
    model: str,
    address: str,
    protocol: str,
    mode: str,
    level: float,
    *,
    shapes: dict[str, list[int]],
    batch_size: int = 1,
    window_s: float = 2.0,
    max_windows: int = 10,
    poisson: bool = True,
    input_data: Path | None = None,
    windows: Windows = Windows.UNTIL_STABLE,
) -> AnalyzerRun:
    """Measure one concurrency (closed loop) or request rate (open loop) with perf_analyzer, in
    ``windows`` (:class:`Windows`).

    Raises:
        ServerError: perf_analyzer failed for a reason other than an unstable measurement
            (its own first error line is the message).
    """
    with tempfile.TemporaryDirectory(prefix="tritonkit-pa-") as scratch:
        csv_file = Path(scratch) / "point.csv"

        def args(windows: int, stability_percent: int) -> list[str]:
            return command(analyzer, model, address, protocol, mode, level, shapes=shapes, batch_size=batch_size,
                           window_s=window_s, max_windows=windows, poisson=poisson,
                           stability_percent=stability_percent, csv_file=csv_file, input_data=input_data)  # fmt: skip

        until_stable = windows is Windows.UNTIL_STABLE
        if until_stable:
            stable = True
            done = _run(analyzer, args(max_windows, 10), model, window_s * (max(3, max_windows) + 4) + 60)
            unsettled = done.returncode != 0 and "stable measurement" in done.stdout + done.stderr
        if not until_stable or unsettled:  # three windows with the bar lifted; -v prints each
            done = _run(analyzer, [*args(3, 1000), "-v"], model, window_s * 7 + 60)
            passes = _passes(done.stdout)
            stable = not until_stable and _steady(passes[-3:])
            if passes and "stable measurement" in done.stdout + done.stderr:
                return _from_passes(passes, window_s, batch_size)  # even 1000% failed: nearly empty windows
        if done.returncode != 0 or not csv_file.is_file():
            raise ServerError(
                f"perf_analyzer failed on '{model}' at {mode} {level:g}: {_first_error(done)}",
                hint="check the model with 'tritonkit infer'; reproduce: " + " ".join(args(max_windows, 10)),
            )
        row = parse_csv(csv_file.read_text())
    requests = re.findall(r"Request count: (\d+)", done.stdout)
    return AnalyzerRun(
        throughput=row["Inferences/Second"] / max(1, batch_size),  # requests/s, whatever the batch size
        p50_ms=row["p50 latency"] / 1e3,
        p90_ms=row["p90 latency"] / 1e3,
        p99_ms=row["p99 latency"] / 1e3,
        requests=int(requests[-1]) if requests else 0,
        stable=stable,
    )


_PASS = re.compile(r"Pass \[\d+\] throughput: ([\d.]+) infer/sec\. p99 latency: (\d+) usec")


def _passes(stdout: str) -> list[tuple[float, float]]:
    """``(throughput, p99 µs)`` of each window perf_analyzer ``-v`` printed (``--percentile=99``)."""
    return [(float(t), float(p99)) for t, p99 in _PASS.findall(stdout)]


def _steady(passes: list[tuple[float, float]], percent: float = 10.0) -> bool:
    """Whether three windows agree as perf_analyzer's ``-s`` judges: throughput and p99 of each
    within ``percent`` of their mean."""
    if len(passes) < 3:
        return False
    for values in zip(*passes, strict=True):
        mean = sum(values) / len(values)
        if any(abs(v - mean) > mean * percent / 100 for v in values):
            return False
    return True


def _from_passes(passes: list[tuple[float, float]], window_s: float, batch_size: int = 1) -> AnalyzerRun:
    """An unstable point from the last three windows: mean throughput, the worst p99 (p50 and p90
    are not printed per window: NaN)."""
    tail = passes[-3:]
    throughput = sum(t for t, _ in tail) / len(tail) / max(1, batch_size)
    nan = float("nan")
    return AnalyzerRun(
        throughput=throughput,
        p50_ms=nan,
        p90_ms=nan,
        p99_ms=max(p99 for _, p99 in tail) / 1e3,
        requests=round(throughput * window_s * len(tail)),
        stable=False,
    )


def _run(analyzer: Analyzer, args: list[str], model: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=analyzer.environment())
    except subprocess.TimeoutExpired as exc:
        raise ServerError(
            f"perf_analyzer did not finish within {timeout:.0f}s on '{model}'", hint="check the server's log"
        ) from exc


def _first_error(done: subprocess.CompletedProcess[str]) -> str:
    for line in (done.stderr + "\n" + done.stdout).splitlines():
        if re.search(r"error|failed|unable", line, re.IGNORECASE):
            return line.strip()
    return f"exit code {done.returncode}"


def require_analyzer() -> Analyzer:
    """The perf_analyzer to measure with, checked to run.

    Raises:
        DependencyError: none is installed, or the one found cannot run (a missing library).
    """
    analyzer = find_analyzer()
    if analyzer is None:
        raise DependencyError("perf_analyzer, bench's and tune's meter, is not installed", hint=INSTALL_HINT)
    analyzer.version()  # fails here, with the install hint, when it cannot run
    return analyzer


def measure_point(
    analyzer: Analyzer,
    model: str,
    address: str,
    protocol: str,
    mode: str,
    level: float,
    *,
    workload: Workload,
    input_data: Path,
    poisson: bool,
    batch_size: int,
    window_s: float,
    max_windows: int,
    report: Callable[[str, int, int], None],
    windows: Windows = Windows.UNTIL_STABLE,
) -> BenchPoint:
    """One point measured by perf_analyzer, with the server's breakdown over the same run."""
    label = f"{mode} {level:g}"
    report(label, 0, 1)
    shapes = {name: list(array.shape) for name, array in workload.sample.items()}
    before = model_statistics(model, address, protocol)
    started = time.monotonic()
    run = run_point(analyzer, model, address, protocol, mode, level, shapes=shapes, batch_size=batch_size,
                    window_s=window_s, max_windows=max_windows, poisson=poisson, input_data=input_data,
                    windows=windows)  # fmt: skip
    after = model_statistics(model, address, protocol)
    report(label, 1, 1)
    nan = float("nan")
    result = WindowStats(
        start=started,
        width=window_s,
        completed=run.requests,
        throughput=run.throughput,
        p50_ms=run.p50_ms,
        p90_ms=run.p90_ms,
        p99_ms=run.p99_ms,
        max_ms=nan,  # not reported by perf_analyzer
        lag_p99_ms=0.0,
    )
    limited = ""
    if mode == "rate" and run.requests and run.throughput > 0:
        # Poisson counts vary: flag only a shortfall beyond 3 standard deviations of the asked count
        expected = level * run.requests / run.throughput
        if run.requests < expected - 3 * expected**0.5:
            limited = f"only {run.throughput:.0f}/s of {level:g}/s were completed"
    return BenchPoint(
        mode=mode,
        level=level,
        windows=[result],
        result=result,
        stable=run.stable,
        client_limited=limited,
        server=server_delta(before, after),
        meter="perf_analyzer",
    )
