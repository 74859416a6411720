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
