"""A model of several GB through build, verify, release, publish and pull: wall time and peak RSS.

Makes an ONNX model whose weights (random, seeded) live in an external-data file of ``--gb``
GB, written in 16 MiB pieces so this script stays small too. Each step then runs as a user
would run it — ``tritonkit …`` in a fresh process — and its peak resident memory is that
process's own ``ru_maxrss`` (``os.wait4``); its wall time includes a ``sync`` of what it
wrote. ``cp`` of the same release tree, timed in the same
run on the same disk, is the yardstick for publish and pull speed. A local Debian
``docker-registry`` is started on 127.0.0.1 and everything is deleted at the end.

The model is packaged as a ``kind: python`` model that ships ``model.onnx`` and its
``model.onnx.data`` as ``assets`` (by default): copying an ONNX model's external data is
being added to the ONNX builder separately. ``--kind onnx`` builds it as ``kind: onnx``
(``file: model.onnx``) once that has landed. The memory and streaming properties measured
are the same: every step handles one multi-GB file.

Targets (issue 13): peak RSS < 500 MB at every step; a no-change rebuild < 5 % of the clean
build; publish and pull at >= 50 % of ``cp`` speed.

    .venv/bin/python benchmarks/big_model.py [--gb 2] [--kind python|onnx] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from rich.console import Console
from rich.table import Table

ROWS = 1024
_PIECE = 16 << 20
TRITONKIT = [sys.executable, "-m", "tritonkit"]

MODEL_PY = '''"""Runs model.onnx (external weights beside it) with onnxruntime inside Triton's Python backend."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.session = ort.InferenceSession(str(Path(__file__).parent / "model.onnx"))

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy().astype(np.float32)
            (y,) = self.session.run(["y"], {"x": x})
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]))
        return responses
'''


@dataclass
class Step:
    name: str
    seconds: float
    peak_rss_mb: float
    note: str = ""


def make_model(folder: Path, size: int, seed: int) -> int:
    """``model.onnx`` (y = x @ W) with W in ``model.onnx.data``; returns W's byte size."""
    cols = size // (4 * ROWS)
    nbytes = 4 * ROWS * cols
    rng = np.random.default_rng(seed)
    with open(folder / "model.onnx.data", "wb") as handle:
        left = ROWS * cols
        while left:
            count = min(left, _PIECE // 4)
            handle.write(rng.standard_normal(count, dtype=np.float32).tobytes())
            left -= count
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[ROWS, cols])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "model.onnx.data"), ("offset", "0"), ("length", str(nbytes))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", ROWS])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", cols])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "big", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="big_model.py")
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    return nbytes


def write_project(folder: Path, kind: str, cols: int) -> Path:
    io = (
        f"inputs: [{{name: x, dtype: FP32, dims: [-1, {ROWS}]}}]\n"
        f"    outputs: [{{name: y, dtype: FP32, dims: [-1, {cols}]}}]"
    )
    if kind == "python":
        (folder / "models" / "big").mkdir(parents=True)
        (folder / "models" / "big" / "model.py").write_text(MODEL_PY)
        entry = (
            "kind: python\n    path: models/big\n    max_batch_size: 0\n    "
            + io
            + "\n    assets: {model.onnx: model.onnx, model.onnx.data: model.onnx.data}"
        )
    else:
        entry = "kind: onnx\n    file: model.onnx\n    max_batch_size: 0"
    spec = folder / "tritonkit.yaml"
    spec.write_text(f"name: big\nmodels:\n  - name: big\n    {entry}\n")
    return spec


# Runs the step and prints its own peak RSS. A child's ru_maxrss starts at its parent's size
# when it forks (Linux keeps the pre-exec high-water mark), so the step is forked from this
# small interpreter (python -S, a few MB; measured as the "launcher" row), not from the
# benchmark, which holds numpy and onnx.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
os.write(2, b"peak-rss-kib %d\\n" % usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(name: str, command: list[str], cwd: Path) -> tuple[Step, str]:
    """Run one step in a fresh process, then ``sync``: wall time includes writing what it wrote
    to disk, and the peak RSS is the step's own."""
    subprocess.run(["sync"], check=True)  # start from a clean page cache state for writes
    start = time.perf_counter()
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd.parent / "xdg-cache")}  # no layer digests from earlier runs
    done = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *command], cwd=cwd, env=env, capture_output=True)
    subprocess.run(["sync"], check=True)
    seconds = time.perf_counter() - start
    output = done.stdout.decode(errors="replace")
    errors = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{output}{errors}")
    kib = int(re.findall(r"peak-rss-kib (\d+)", errors)[-1])
    return Step(name, seconds, kib / 1024), output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_registry(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("Debian's docker-registry is not installed ('make sysdeps' installs it)")
    port = free_port()
    folder.mkdir()
    config = folder / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {folder / 'storage'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                return process, f"127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("docker-registry did not start") from None
            time.sleep(0.1)


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def measure(work: Path, gb: float, kind: str, seed: int) -> tuple[list[Step], int]:
    project = work / "project"
    project.mkdir()
    started = time.perf_counter()
    nbytes = make_model(project, int(gb * 1e9), seed)
    cols = nbytes // (4 * ROWS)
    spec = write_project(project, kind, cols)
    steps = [Step("make the model (not a tritonkit step)", time.perf_counter() - started, 0.0)]
    steps.append(run("launcher alone ('true')", ["true"], project)[0])
    build = [*TRITONKIT, "build", "-f", str(spec), "-o", str(work / "dist"), "--cache-dir", str(work / "cache")]
    steps.append(run("build (clean)", build, project)[0])
    steps.append(run("build (no change)", build, project)[0])
    steps.append(run("verify", [*TRITONKIT, "verify", str(work / "dist" / "big")], project)[0])
    store = work / "releases"
    release = [*TRITONKIT, "release", "-f", str(spec), "--store", str(store), "--repository", str(work / "dist/big")]
    steps.append(run("release", release, project)[0])
    copy = run("cp -r (yardstick)", ["cp", "-r", str(store / "v1"), str(work / "copy")], project)[0]
    steps.append(copy)
    registry, host = start_registry(work / "registry")
    try:
        publish = [*TRITONKIT, "publish", "v1", f"oci://{host}/big:v1", "-f", str(spec), "--store", str(store)]
        step, output = run("publish", publish, project)
        steps.append(step)
        match = re.search(r"oci://\S+@sha256:[0-9a-f]{64}", output.replace("\n", ""))
        if match is None:
            raise SystemExit(f"publish printed no reference:\n{output}")
        steps.append(run("pull", [*TRITONKIT, "pull", match.group(0), str(work / "pulled")], project)[0])
        steps.append(run("publish again (all blobs present)", publish, project)[0])
    finally:
        registry.terminate()
        registry.wait(timeout=30)
    for step in steps:
        if step.name in ("publish", "pull"):
            step.note = f"{copy.seconds / step.seconds:.0%} of cp speed"
    return steps, tree_size(store / "v1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="size of the external weights, in GB (1e9 bytes)")
    parser.add_argument("--kind", choices=["python", "onnx"], default="python")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: $TMPDIR)")
    args = parser.parse_args()
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="tritonkit-big-", dir=args.workdir))
    try:
        console.print(f"scratch: {work} (free: {shutil.disk_usage(work).free / 1e9:.0f} GB)")
        steps, size = measure(work, args.gb, args.kind, args.seed)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    clean = next(s for s in steps if s.name == "build (clean)")
    again = next(s for s in steps if s.name == "build (no change)")
    again.note = f"{again.seconds / clean.seconds:.0%} of the clean build"
    table = Table(title=f"{args.kind} model, release tree {size / 1e9:.2f} GB ({size / 2**20:.0f} MiB)")
    for column in ("step", "wall s", "MB/s", "peak RSS MB", "note"):
        table.add_column(column, justify="left" if column in ("step", "note") else "right")
    for step in steps:
        rss = f"{step.peak_rss_mb:.0f}" if step.peak_rss_mb else "—"
        table.add_row(step.name, f"{step.seconds:.1f}", f"{size / 1e6 / step.seconds:.0f}", rss, step.note)
    console.print(table)
    worst = max(steps, key=lambda s: s.peak_rss_mb)
    console.print(f"highest peak RSS: {worst.peak_rss_mb:.0f} MB ({worst.name}); target < 500 MB")


if __name__ == "__main__":
    main()
