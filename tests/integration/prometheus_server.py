"""Debian's real prometheus on 127.0.0.1, scraping one Triton every second (optionally with rule files),
and the classifier traffic it is shown."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from tritonkit.serve.endpoints import free_port


@contextmanager
def running_prometheus(metrics_url: str, root: Path, rule_files: Sequence[Path] = ()) -> Iterator[str]:
    """Start prometheus scraping ``metrics_url`` as job ``triton``; yields its base URL."""
    target = metrics_url.removeprefix("http://").removesuffix("/metrics")
    rules = "".join(f"  - {path}\n" for path in rule_files)
    config = (
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        + (f"rule_files:\n{rules}" if rules else "")
        + f"scrape_configs:\n  - job_name: triton\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    with prometheus_with_config(root, config) as url:
        yield url


@contextmanager
def prometheus_with_config(root: Path, config: str) -> Iterator[str]:
    """Start prometheus with the configuration text ``config`` (written to ``root``); yields its
    base URL once it is ready (30 s at most)."""
    (root / "prometheus.yml").write_text(config)
    port = free_port()
    log = (root / "prometheus.log").open("wb")  # kept for a failing test's reader
    process = subprocess.Popen(
        ["prometheus", f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def classifier_traffic(url: str, seconds: float, done: threading.Event | None = None) -> threading.Thread:
    """A started thread sending the example classifier requests over gRPC for ``seconds`` (or
    until ``done`` is set); join it when the test is through."""

    def run() -> None:
        client = grpcclient.InferenceServerClient(url)
        tensor = grpcclient.InferInput("features", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        stop = time.monotonic() + seconds
        while time.monotonic() < stop and not (done is not None and done.is_set()):
            try:
                client.infer("classifier", [tensor])
            except Exception:  # a test beside this one may be reloading the model: keep sending
                time.sleep(0.05)
        client.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread
