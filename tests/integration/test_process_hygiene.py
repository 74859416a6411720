"""Issue 17, item 6 and 7 on real processes: ``kill -9 tritonkit serve`` leaves no tritonserver
(nor model stub) behind, a stale server on our ports is named instead of "exited unexpectedly
(1)", registry credentials never reach tritonserver or its stubs, and a build removes what a
killed build left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonkit import BuildResult, Endpoints, TritonServer, build_repository, load_spec
from tritonkit.errors import ServerError
from tritonkit.serve.endpoints import free_port
from tritonkit.serve.process import port_owner

ROOT = Path(__file__).resolve().parents[2]
SPEC = """name: hygiene
models:
  - name: postprocess
    kind: python
    path: models/postprocess
    max_batch_size: 8
    inputs:
      - {name: logits, dtype: FP32, dims: [3]}
    outputs:
      - {name: probabilities, dtype: FP32, dims: [3]}
      - {name: label, dtype: BYTES, dims: [1]}
"""
SECRETS = {"TRITONKIT_REGISTRY_PASSWORD": "hunter2", "HF_TOKEN": "hf_secret", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}


def _project(root: Path) -> Path:
    shutil.copytree(ROOT / "model_repository" / "models" / "postprocess", root / "models" / "postprocess")
    (root / "tritonkit.yaml").write_text(SPEC)
    return root


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead: it holds no port and runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _session(sid: int) -> list[int]:
    """Every live process of session ``sid`` (tritonserver is a session leader; its stubs join it)."""
    members = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                members.append(int(proc.name))
    return members


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], Endpoints, int]]:
    """``tritonkit serve`` in its own process (credentials in its environment), ready."""
    project = _project(tmp_path_factory.mktemp("hygiene"))
    build = build_repository(load_spec(project / "tritonkit.yaml"), project / "dist", cache_dir=project / "cache")
    endpoints = Endpoints.allocate()
    log = (project / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tritonkit", "serve", str(build.path)]
        + [f"--http-port={endpoints.http_port}", f"--grpc-port={endpoints.grpc_port}"]
        + [f"--metrics-port={endpoints.metrics_port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **SECRETS, "TOKENIZERS_PARALLELISM": "false"},
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, (project / "serve.log").read_text()
        try:
            with urllib.request.urlopen(endpoints.http_url + "/v2/models/postprocess/ready", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    owner = port_owner(endpoints.http_port)
    assert owner is not None and "tritonserver" in owner[1]
    yield process, endpoints, owner[0]
    if process.poll() is None:
        process.kill()
        process.wait()
    if _alive(owner[0]):
        os.killpg(owner[0], signal.SIGKILL)
    log.close()


def test_no_credential_reaches_tritonserver_or_its_model_stubs(
    served: tuple[subprocess.Popen[bytes], Endpoints, int],
) -> None:
    _, _, triton = served
    members = _session(triton)
    stubs = [pid for pid in members if b"triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert triton in members and stubs, members
    for pid in [triton, *stubs]:
        environ = _environ(pid)
        assert not set(SECRETS) & set(environ), pid
        assert environ.get("TOKENIZERS_PARALLELISM") == "false"  # only credentials are dropped


def test_a_server_already_on_our_ports_is_named(served: tuple[subprocess.Popen[bytes], Endpoints, int]) -> None:
    _, endpoints, triton = served
    second = TritonServer(Path("/nonexistent"), endpoints=endpoints, models=[])
    with pytest.raises(ServerError) as caught:
        second.start(timeout=30)
    assert caught.value.message.startswith(f"HTTP port {endpoints.http_port} is already in use by a tritonserver")
    assert f"pid {triton}" in caught.value.message and second.pid is None  # nothing was started
    metrics_only = TritonServer(
        Path("/nonexistent"), endpoints=Endpoints("127.0.0.1", free_port(), free_port(), endpoints.metrics_port)
    )
    with pytest.raises(ServerError, match=f"metrics port {endpoints.metrics_port} is already in use"):
        metrics_only.start(timeout=30)


def test_kill_9_of_serve_takes_tritonserver_and_its_stubs_with_it(
    served: tuple[subprocess.Popen[bytes], Endpoints, int],
) -> None:
    process, endpoints, triton = served
    members = _session(triton)
    assert len(members) >= 2  # tritonserver and at least one stub
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in members):
        time.sleep(0.2)
    assert not [pid for pid in members if _alive(pid)], "orphaned after kill -9 of tritonkit serve"
    for port in (endpoints.http_port, endpoints.grpc_port, endpoints.metrics_port):
        assert port_owner(port) is None


def test_a_build_removes_what_a_killed_build_left(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    out, cache = project / "dist", project / "cache"
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    leftovers = [out / f".staging-{victim.pid}-x1", cache / f".work-{victim.pid}-x2"]
    for path in leftovers:
        (path / "model").mkdir(parents=True)
    victim.kill()  # the "build" that owned them is killed
    victim.wait()
    live = out / f".staging-{os.getpid()}-mine"  # a build of a live process keeps its staging
    live.mkdir()
    build_repository(load_spec(project / "tritonkit.yaml"), out, cache_dir=cache)
    assert not any(path.exists() for path in leftovers) and live.is_dir()


def test_a_path_the_os_refuses_is_one_line_for_build_release_and_export(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tritonkit.cli import main
    from tritonkit.errors import StorageError

    project = _project(tmp_path / "project")
    spec = ["-f", str(project / "tritonkit.yaml")]
    runner = CliRunner()
    refused = "/sys/tritonkit-test/out"  # sysfs: mkdir is refused (EPERM, or EACCES when not root)
    for args in (
        ["build", *spec, "-o", refused],
        ["release", *spec, "--store", refused, "--repository", str(project / "dist" / "hygiene")],
        ["export", "v1", refused, *spec],
    ):
        if args[0] == "release":  # needs a build, export a release
            assert runner.invoke(main, ["build", *spec, "-o", str(project / "dist")]).exit_code == 0
            assert (
                runner.invoke(main, ["release", *spec, "--repository", str(project / "dist" / "hygiene")]).exit_code
                == 0
            )
        result = runner.invoke(main, args)
        assert result.exit_code == StorageError.exit_code, (args, result.output, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 2 and "/sys/tritonkit-test" in lines[0] and lines[1].startswith("hint: "), lines
        assert "Traceback" not in result.output + result.stderr


def test_a_killed_servers_shared_memory_is_removed_when_it_is_stopped(demo_build: BuildResult) -> None:
    """Python backend stubs keep 1 MB regions in /dev/shm; a Triton that is killed leaves them.
    After stop, nothing this server created is left unless another live server maps it."""
    from tritonkit.serve.process import _mapped_regions, shm_regions

    before = shm_regions()
    server = TritonServer(demo_build.path, endpoints=Endpoints.allocate())
    server.start()
    ours = shm_regions() - before
    assert ours, "the demo's Python-based models map shared-memory regions"
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)  # a crash: Triton cannot clean up
    server.stop()
    left = shm_regions() & ours
    mapped = _mapped_regions()
    assert all(name in mapped for name in left), f"leaked: {sorted(n for n in left if n not in mapped)}"
