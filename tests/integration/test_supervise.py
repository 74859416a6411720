"""A served Triton survives the request that aborts Triton 2.51 (issue 17, item 3).

``{"inputs":[{"name":"features","shape":[4294967296,4],...}]}`` makes the embedded 2.51 allocate
for 2^34 floats before it looks at the data: ``std::bad_alloc``, SIGABRT (fixed upstream after
2.51: triton-inference-server/server#8676). ``tritonkit serve`` must restart it on the same ports
with its models, say so on stderr, keep serving, and still stop promptly on SIGTERM, reaping
every child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import port_flags
from tritonkit import BuildResult, Endpoints

BAD = {"inputs": [{"name": "features", "shape": [4294967296, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
GOOD = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _post(url: str, body: dict[str, object], timeout: float = 10.0) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(proc.name))
    return found


def _gone(pid: int) -> bool:
    """Not running and not a zombie waiting to be reaped."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "X"


def test_serve_restarts_triton_after_the_bad_alloc_request_and_stops_on_sigterm(
    demo_build: BuildResult, tmp_path: Path
) -> None:
    endpoints = Endpoints.allocate()
    http, ports = endpoints.http_port, port_flags(endpoints)
    out_file = tmp_path / "serve.out"
    with out_file.open("w") as out:  # redirected to a file, as in the report
        serve = subprocess.Popen(
            [sys.executable, "-m", "tritonkit", "serve", str(demo_build.path), *ports],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    infer = f"http://127.0.0.1:{http}/v2/models/classifier/infer"
    try:
        deadline = time.monotonic() + 240
        while _post(infer, GOOD) != 200:
            assert serve.poll() is None and time.monotonic() < deadline, out_file.read_text()
            time.sleep(0.5)
        while "Ctrl-C to stop" not in out_file.read_text():  # flushed while running, not only at exit
            assert time.monotonic() < deadline, out_file.read_text()
            time.sleep(0.1)
        (first,) = _children(serve.pid)

        assert _post(infer, BAD) != 200  # the connection drops: Triton aborts
        crashed = time.monotonic()
        while _post(infer, GOOD, timeout=2) != 200:
            assert serve.poll() is None, out_file.read_text()
            assert time.monotonic() - crashed < 120, out_file.read_text()
            time.sleep(0.1)
        downtime = time.monotonic() - crashed
        print(f"downtime after the bad_alloc abort: {downtime:.2f}s (first answer after the crash)")
        while "restarted (pid" not in out_file.read_text():  # the other models may still be loading
            assert time.monotonic() - crashed < 120, out_file.read_text()
            time.sleep(0.1)
        text = out_file.read_text()
        assert "std::bad_alloc" in text, text
        assert "killed by SIGABRT" in text and "restarting (1/5)" in text and "restarted (pid" in text, text
        assert _gone(first), "the crashed tritonserver was not reaped"
        (second,) = _children(serve.pid)
        assert second != first

        serve.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert serve.wait(timeout=30) == 0, out_file.read_text()
        assert time.monotonic() - started < 15
        assert _gone(second) and "stopped (exit code" in out_file.read_text()
    finally:
        if serve.poll() is None:
            os.kill(serve.pid, signal.SIGKILL)
            serve.wait()


@pytest.mark.parametrize("restarts", [0])
def test_serve_with_restarts_off_exits_on_a_crash(demo_build: BuildResult, tmp_path: Path, restarts: int) -> None:
    endpoints = Endpoints.allocate()
    http, ports = endpoints.http_port, port_flags(endpoints)
    serve = subprocess.Popen(
        [sys.executable, "-m", "tritonkit", "serve", str(demo_build.path), *ports, "--max-restarts", str(restarts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    infer = f"http://127.0.0.1:{http}/v2/models/classifier/infer"
    try:
        deadline = time.monotonic() + 240
        while _post(infer, GOOD) != 200:
            assert serve.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        _post(infer, BAD)
        try:
            _out, err = serve.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            out, err = serve.communicate()
            raise AssertionError(f"serve did not exit after the crash:\n{out}\n{err}") from None
        # Either the crash came after the start (the supervisor's refusal to restart) or while the
        # last models were still loading (the load's lost connection): exit 5, one line, at once.
        assert serve.returncode == 5 and "Traceback" not in err, err
        assert ("killed by SIGABRT" in err and "not restarting" in err) or "lost the connection" in err, err
    finally:
        if serve.poll() is None:
            os.kill(serve.pid, signal.SIGKILL)
            serve.wait()


QUICK = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
                for r in requests]
"""
SLOW = QUICK.replace(
    "class TritonPythonModel:",
    "import time\n\n\nclass TritonPythonModel:\n    def initialize(self, args):\n        time.sleep(6)\n",
)


def _serve_python_models(tmp_path: Path, models: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``tritonkit serve`` on a build of python models (name -> model.py, input/output x/y of 4
    floats, batched); returns the process, the models' URL and its output file."""
    from tritonkit import build_repository, load_spec

    io = "    max_batch_size: 8\n    inputs: [{name: x, dtype: FP32, dims: [4]}]\n"
    io += "    outputs: [{name: y, dtype: FP32, dims: [4]}]\n"
    for name, code in models.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.py").write_text(code)
    entries = "".join(f"  - name: {n}\n    kind: python\n    path: {n}\n{io}" for n in models)
    (tmp_path / "tritonkit.yaml").write_text(f"name: t\nmodels:\n{entries}")
    built = build_repository(load_spec(tmp_path / "tritonkit.yaml"), tmp_path / "out", cache_dir=tmp_path / "cache")
    endpoints = Endpoints.allocate()
    out_file = tmp_path / "serve.out"
    with out_file.open("w") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "tritonkit", "serve", str(built.path), *port_flags(endpoints)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return serve, f"http://127.0.0.1:{endpoints.http_port}/v2/models", out_file


def test_a_crash_while_models_load_is_restarted_like_any_crash(tmp_path: Path) -> None:
    """Issue "busy machine", item 4: a second aborting request sent while the restarted server
    still loaded its models ended serve (exit 5) blaming the model being loaded. It is a crash
    like any other: restarted within --max-restarts, and said to be one."""
    bad = {"inputs": [{"name": "x", "shape": [4294967296, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    good = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    serve, base, out_file = _serve_python_models(tmp_path, {"a": QUICK, "b": SLOW})
    try:
        deadline = time.monotonic() + 240
        while _post(f"{base}/b/infer", good) != 200:  # both loaded
            assert serve.poll() is None and time.monotonic() < deadline, out_file.read_text()
            time.sleep(0.3)
        assert _post(f"{base}/a/infer", bad) != 200  # crash 1, after the start
        while _post(f"{base}/a/infer", good, timeout=2) != 200:  # restarted: a is back, b still loading
            assert serve.poll() is None and time.monotonic() < deadline, out_file.read_text()
            time.sleep(0.1)
        assert _post(f"{base}/a/infer", bad) != 200  # crash 2, while b loads
        while _post(f"{base}/b/infer", good, timeout=2) != 200:
            assert serve.poll() is None, out_file.read_text()  # serve did not give up
            assert time.monotonic() < deadline, out_file.read_text()
            time.sleep(0.3)
        text = out_file.read_text()
        assert "killed by SIGABRT while loading models" in text and "restarting (2/5)" in text, text
        assert "fix the model" not in text, text
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def test_sigterm_drains_requests_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    """Issue "busy machine", item 4: on SIGTERM Triton kept answering new requests for the whole
    stop timeout, was killed, and requests in flight were cut. serve now drains: every request
    sent before the SIGTERM is answered, the ones after it are refused at once, serve exits 0."""
    import threading

    slow = QUICK.replace("import numpy as np\n", "import time\n\nimport numpy as np\n")
    wait = "        time.sleep(max(float(pb_utils.get_input_tensor_by_name(r, 'x').as_numpy().flat[0])"
    wait += " for r in requests))\n"  # the first value of x: seconds to take
    slow = slow.replace("    def execute(self, requests):\n", "    def execute(self, requests):\n" + wait)
    good = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.3, 0, 0, 0]}]}
    # in flight longer than serve's 10 s stop timeout: what the SIGKILL after it used to cut
    long = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [12, 0, 0, 0]}]}
    serve, base, out_file = _serve_python_models(tmp_path, {"s": slow})
    infer = f"{base}/s/infer"
    log: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            status = _post(infer, good, timeout=30)
            log.append((started, time.monotonic(), status))
            if status != 200:
                time.sleep(0.05)

    try:
        deadline = time.monotonic() + 240
        while _post(infer, good) != 200:
            assert serve.poll() is None and time.monotonic() < deadline, out_file.read_text()
            time.sleep(0.3)
        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        long_started = time.monotonic()
        threads.append(threading.Thread(target=lambda: log.append((long_started, 0.0, _post(infer, long, timeout=60)))))
        threads[-1].start()
        time.sleep(1.0)
        sigterm = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0, out_file.read_text()
        stopped = time.monotonic() - sigterm
        stop.set()
        for thread in threads:
            thread.join(timeout=40)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    before = [entry for entry in log if entry[0] < sigterm]
    cut = [entry for entry in before if entry[2] != 200]
    after = [entry for entry in log if entry[0] >= sigterm]
    print(
        f"sigterm: {len(before)} requests before, {len(cut)} cut; {len(after)} after; serve stopped in {stopped:.1f}s"
    )
    assert before and not cut, (cut, out_file.read_text())
    answered_late = [entry for entry in after if entry[2] == 200 and entry[0] > sigterm + 1.0]
    assert not answered_late, f"{len(answered_late)} requests sent >1 s after SIGTERM were still taken"
    assert all(end - start < 5 for start, end, status in after if status != 200)  # refused at once, not hung
    assert "draining" in out_file.read_text()
