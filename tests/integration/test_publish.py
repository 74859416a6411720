"""OCI publishing against Debian's real docker-registry on 127.0.0.1: push, pull, verify, tamper."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import tracemalloc
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.helpers import copy_example
from tritonkit import build_repository, load_spec
from tritonkit.build.verify import verify
from tritonkit.cli import main
from tritonkit.errors import ClusterError, RegistryError, UsageError
from tritonkit.events import Event
from tritonkit.release.oci import LAYER_GZIP_TYPE, LAYER_TYPE, Layer, Reference, build_image, publish, pull
from tritonkit.release.store import ReleaseStore
from tritonkit.serve.endpoints import free_port


@pytest.fixture(autouse=True)
def layer_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test starts with no remembered layer digests (they live under $XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "tritonkit" / "oci-layers"


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReleaseStore, Path]:
    project = tmp_path_factory.mktemp("publish") / "project"
    copy_example(project)
    store = ReleaseStore(project / "releases")
    store.create(
        build_repository(load_spec(project / "tritonkit.yaml"), project / "dist", cache_dir=project / "cache").path
    )
    return store, project / "tritonkit.yaml"


def _bytes(layer: Layer) -> bytes:
    """A (small) layer's bytes, produced the way publish produces them."""
    out = io.BytesIO()
    layer.write(out.write)
    return out.getvalue()


def test_image_is_deterministic_and_laid_out_for_kserve_modelcars(released: tuple[ReleaseStore, Path]) -> None:
    store, _ = released
    first, second = build_image(store.path(1)), build_image(store.path(1))
    assert first.manifest == second.manifest and first.digest == second.digest
    assert [_bytes(layer) for layer in first.layers] == [_bytes(layer) for layer in second.layers]
    for layer in first.layers:  # the descriptor says what the streamed bytes are
        data = _bytes(layer)
        assert (layer.digest, layer.size) == ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    assert [layer.media_type for layer in first.layers] == [LAYER_GZIP_TYPE, LAYER_TYPE]  # weights do not compress
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(_bytes(first.layers[0])))) as tar:
        shell = {m.name: m for m in tar.getmembers()}
    assert shell["bin/sh"].issym() and shell["bin/sh"].linkname == "busybox" and shell["bin/busybox"].mode == 0o755
    with tarfile.open(fileobj=io.BytesIO(_bytes(first.layers[1]))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert (
        names == sorted(names) and "models/classifier/1/model.onnx" in names and "models/tritonkit.lock.json" in names
    )
    assert {(m.mtime, m.uid, m.gid) for m in members} == {(0, 0, 0)}


def test_the_images_shell_runs_what_modelcars_and_the_helm_chart_need(
    released: tuple[ReleaseStore, Path], tmp_path: Path
) -> None:
    image = build_image(released[0].path(1))
    root = tmp_path / "image"
    for layer in image.layers:
        with tarfile.open(fileobj=io.BytesIO(_bytes(layer)), mode="r:*") as tar:
            tar.extractall(root, filter="tar")
    script = "cp -R models/. copy/ && ln -s copy link && sleep 0"
    (root / "copy").mkdir()
    done = subprocess.run(
        [str(root / "bin" / "sh"), "-c", script], cwd=root, env={"PATH": str(root / "bin")}, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert verify(root / "link").ok  # the copied repository still matches its lock


def test_publish_then_pull_round_trips_every_hash(
    registry: tuple[str, Path], released: tuple[ReleaseStore, Path], tmp_path: Path
) -> None:
    store, _ = released
    host, _ = registry
    first: list[Event] = []
    reference = publish(store.path(1), f"oci://{host}/tritonkit/demo:v1", progress=first.append)
    image = build_image(store.path(1))
    assert reference == f"oci://{host}/tritonkit/demo@{image.digest}"
    assert {e.message for e in first if e.subject == "models layer"} == {"uploading"}  # hashed while sent
    again: list[Event] = []
    assert publish(store.path(1), f"oci://{host}/tritonkit/demo:again", progress=again.append) == reference
    skipped = {e.subject for e in again if e.message == "already in the registry"}
    assert skipped == {layer.digest for layer in image.layers} | {image.config.digest}
    assert not [e for e in again if e.message in ("hashing", "uploading") and e.subject == "models layer"]
    pulled = pull(reference, tmp_path / "pulled")
    report = verify(pulled)
    assert report.ok and report.digest == store.get(1).digest
    assert pulled.stat().st_mode & 0o222 == 0


@pytest.mark.parametrize("blob", ["models layer", "shell layer", "image config"])
def test_a_tampered_blob_is_refused_and_leaves_nothing(
    registry: tuple[str, Path], released: tuple[ReleaseStore, Path], tmp_path: Path, blob: str
) -> None:
    """Every blob pull fetches is checked, not only the models layer (issue 17 item 4)."""
    store, _ = released
    host, storage = registry
    reference = publish(store.path(1), f"oci://{host}/tritonkit/demo:v1")
    manifest = json.loads(build_image(store.path(1)).manifest)
    descriptor = {"models layer": manifest["layers"][1], "shell layer": manifest["layers"][0]}.get(
        blob, manifest["config"]
    )
    digest = descriptor["digest"].removeprefix("sha256:")
    data = storage / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    tampered = bytearray(data.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    data.write_bytes(bytes(tampered))
    assert hashlib.sha256(bytes(tampered)).hexdigest() != digest
    with pytest.raises(RegistryError, match=f"{'layer' if 'layer' in blob else blob} digest mismatch"):
        pull(reference, tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()
    done = CliRunner().invoke(main, ["pull", reference, str(tmp_path / "pulled")])
    assert done.exit_code == RegistryError.exit_code and "digest mismatch" in done.output and "hint:" in done.output
    assert not (tmp_path / "pulled").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pulled")] == []


def test_cli_records_the_digest_reference_and_rejects_bad_input(
    registry: tuple[str, Path], released: tuple[ReleaseStore, Path], tmp_path: Path
) -> None:
    store, spec = released
    host, _ = registry
    runner = CliRunner()
    done = runner.invoke(main, ["publish", "v1", f"oci://{host}/demo:v1", "-f", str(spec)])
    assert done.exit_code == 0, done.output
    assert store.publications(1)[-1].startswith(f"oci://{host}/demo@sha256:")
    tagged = runner.invoke(main, ["pull", f"oci://{host}/demo:v1", str(tmp_path / "x")])
    assert tagged.exit_code == UsageError.exit_code and "not pinned by digest" in tagged.output
    nowhere = runner.invoke(main, ["publish", "v1", f"oci://127.0.0.1:{free_port()}/demo:v1", "-f", str(spec)])
    assert nowhere.exit_code == RegistryError.exit_code and "cannot reach the registry" in nowhere.output
    malformed = runner.invoke(main, ["publish", "v1", "docker.io/demo", "-f", str(spec)])
    assert malformed.exit_code == UsageError.exit_code and "is not an OCI reference" in malformed.output
    with pytest.raises(UsageError, match="not pinned by digest"):
        pull(f"oci://{host}/demo:v1", tmp_path / "y")

    again = runner.invoke(main, ["publish", "v1", f"oci://{host}/demo:v1", "-f", str(spec), "--json"])
    published = json.loads(again.stdout)
    assert (published["schema"], published["release"]) == ("tritonkit/publish/v1", "v1")
    assert published["reference"] == store.publications(1)[-1]
    pulled = runner.invoke(main, ["pull", published["reference"], str(tmp_path / "z"), "--json"])
    assert pulled.exit_code == 0 and json.loads(pulled.stdout)["path"] == str(tmp_path / "z")
    refused = runner.invoke(main, ["publish", "v1", f"oci://127.0.0.1:{free_port()}/d:v1", "-f", str(spec), "--json"])
    assert json.loads(refused.stdout)["exit_code"] == refused.exit_code == RegistryError.exit_code


ENVIRONMENTS = """
environments:
  - name: staging
    namespace: ml-staging
    mode: RawDeployment
    runtime_image: nvcr.io/nvidia/tritonserver@sha256:{digest}
"""


def test_deploy_dry_run_points_kserve_at_the_published_digest(
    registry: tuple[str, Path], released: tuple[ReleaseStore, Path], tmp_path: Path
) -> None:
    store, spec = released
    host, _ = registry
    _declare_environments(spec)
    runner = CliRunner()
    reference = publish(store.path(1), f"oci://{host}/demo:v1")
    store.record_publication(1, reference)
    out = tmp_path / "kserve.yaml"
    done = runner.invoke(main, ["deploy", "v1", "--env", "staging", "--dry-run", "--out", str(out), "-f", str(spec)])
    assert done.exit_code == 0, done.output
    runtime, service = yaml.safe_load_all(out.read_text())
    assert service["spec"]["predictor"]["model"]["storageUri"] == reference
    assert service["metadata"]["annotations"]["tritonkit.dev/digest"] == store.get(1).digest
    assert runtime["metadata"]["namespace"] == "ml-staging"
    as_json = runner.invoke(main, ["deploy", "v1", "--env", "staging", "--dry-run", "-f", str(spec), "--json"])
    objects = json.loads(as_json.stdout)["objects"]  # the YAML is not printed: stdout is the document
    assert [o["kind"] for o in objects] == ["ServingRuntime", "InferenceService"]
    assert objects[1]["spec"]["predictor"]["model"]["storageUri"] == reference
    unknown = runner.invoke(main, ["deploy", "v1", "--env", "prod", "--dry-run", "-f", str(spec)])
    assert unknown.exit_code == UsageError.exit_code and "no environment named 'prod'" in unknown.output


def test_deploy_writes_the_slo_rules_dashboard_and_helm_values_of_the_same_release(
    registry: tuple[str, Path], released: tuple[ReleaseStore, Path], tmp_path: Path
) -> None:
    _, spec = released
    _declare_environments(spec)
    intent = spec.parent / "intent.yaml"  # the same project with an SLO (the shared spec stays as it is)
    intent.write_text(spec.read_text() + "slo: {p99_ms: 50, error_rate: 0.001}\n")
    # released with that SLO, in a store of its own: what deploy renders is the release's intent
    store = ReleaseStore(tmp_path / "store")
    store.create(build_repository(load_spec(intent), tmp_path / "dist", cache_dir=spec.parent / "cache").path)
    store.record_publication(1, reference := publish(store.path(1), f"oci://{registry[0]}/demo:v1"))
    args = ["deploy", "v1", "--env", "staging", "--dry-run", "--out", str(tmp_path / "kserve.yaml"), "-f", str(intent)]
    args += ["--store", str(store.root)]
    out = tmp_path / "observability"
    done = CliRunner().invoke(main, [*args, "--observability", str(out), "--helm-values", str(tmp_path / "v.yaml")])
    assert done.exit_code == 0, done.output
    rule = yaml.safe_load((out / "prometheusrule.yaml").read_text())
    assert (rule["kind"], rule["metadata"]["namespace"]) == ("PrometheusRule", "ml-staging")
    alerts = rule["spec"]["groups"][1]["rules"]
    assert any(r["alert"] == "TritonkitErrorBudgetBurn" and "> 0.0144 and" in r["expr"] for r in alerts)
    assert 'pod=~"demo-predictor-.*"' in rule["spec"]["groups"][0]["rules"][0]["expr"]  # the InferenceService's pods
    board = json.loads((out / "dashboard.json").read_text())
    assert board["uid"] == "tritonkit-demo" and any(p["title"] == "p99 latency vs SLO" for p in board["panels"])
    values = yaml.safe_load((tmp_path / "v.yaml").read_text())
    assert values["release"] == {"image": reference.removeprefix("oci://"), "name": "v1"}
    assert values["triton"]["image"] == "nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64
    assert 'job="demo"' in values["prometheusRule"]["groups"][0]["rules"][0]["expr"]  # the chart's Service


def _declare_environments(spec: Path) -> None:
    if "environments:" not in spec.read_text():
        spec.write_text(spec.read_text() + ENVIRONMENTS.format(digest="0" * 64))


def test_kserve_promotion_refuses_what_it_cannot_do_before_touching_a_cluster(
    registry: tuple[str, Path], released: tuple[ReleaseStore, Path], tmp_path: Path
) -> None:
    store, spec = released
    _declare_environments(spec)
    store.record_publication(1, publish(store.path(1), f"oci://{registry[0]}/demo:v1"))
    runner = CliRunner(env={"KUBECONFIG": str(tmp_path / "no-such-kubeconfig")})
    canary = runner.invoke(main, ["promote", "v1", "--env", "staging", "--canary", "10", "-f", str(spec)])
    assert canary.exit_code == UsageError.exit_code and "silently ignored" in canary.output, canary.output
    nowhere = runner.invoke(main, ["promote", "v1", "--env", "staging", "-f", str(spec)])
    assert (
        nowhere.exit_code == ClusterError.exit_code
        and "no Kubernetes cluster for environment 'staging'" in nowhere.output
    )
    history = store.root / "envs" / "staging" / "history.jsonl"
    assert not history.exists()  # nothing happened, so nothing is recorded


@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a Kubernetes cluster with KServe (set KUBECONFIG)")
def test_deploy_applies_to_a_live_cluster(released: tuple[ReleaseStore, Path]) -> None:  # pragma: no cover
    store, spec = released
    references = store.publications(1)
    if not references:
        pytest.skip("release v1 was not published in this run")
    result = CliRunner().invoke(main, ["deploy", "v1", "--env", "staging", "-f", str(spec)])
    assert result.exit_code == 0, result.output
    assert "ServingRuntime/tritonkit-demo" in result.output


# --------------------------------------------------------------------------- big blobs: chunks, memory, restarts

BIG_SPEC = """name: big
models:
  - name: weights
    kind: python
    path: models/weights
    max_batch_size: 0
    inputs: [{name: x, dtype: FP32, dims: [1]}]
    outputs: [{name: y, dtype: FP32, dims: [1]}]
    assets: {weights.bin: weights.bin}
"""
BIG_MB = 96


@pytest.fixture(scope="module")
def big_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release whose one python model ships a 96 MiB asset of random bytes."""
    project = tmp_path_factory.mktemp("big")
    (project / "tritonkit.yaml").write_text(BIG_SPEC)
    (project / "models" / "weights").mkdir(parents=True)
    (project / "models" / "weights" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    with open(project / "weights.bin", "wb") as handle:
        for _ in range(BIG_MB):
            handle.write(os.urandom(1 << 20))
    build = build_repository(load_spec(project / "tritonkit.yaml"), project / "dist", cache_dir=project / "cache")
    store = ReleaseStore(project / "releases")
    store.create(build.path)
    return store.path(1)


def test_a_big_release_goes_out_and_back_in_flat_memory(
    registry: tuple[str, Path], big_release: Path, tmp_path: Path
) -> None:
    """The old publish held every layer in memory (twice, with gzip); now an upload holds one chunk."""
    host, _ = registry
    events: list[Event] = []
    tracemalloc.start()
    try:
        reference = publish(big_release, f"oci://{host}/big:v1", progress=events.append, chunk_size=4 << 20)
        pulled = pull(reference, tmp_path / "pulled", progress=events.append)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verify(pulled).ok
    assert peak < 32 << 20, f"peak traced memory {peak / 2**20:.0f} MiB for a {BIG_MB} MiB release"
    models_layer = json.loads(build_image(big_release).manifest)["layers"][1]
    uploads = [e for e in events if e.stage == "publish" and e.subject == "models layer"]  # digest not known yet
    downloads = [e for e in events if e.stage == "pull" and e.subject == models_layer["digest"]]
    for moves in (uploads, downloads):  # byte progress: monotonic, in bytes, ending at the blob's size
        assert {e.unit for e in moves} == {"bytes"} and len(moves) > 3
        assert [e.done for e in moves] == sorted(e.done or 0 for e in moves)
        assert moves[-1].done == moves[-1].total == models_layer["size"]


_KILLED_PUSH = """
import os, signal, sys
from pathlib import Path
from tritonkit.release.oci import publish

def progress(event):
    if event.message == "uploading" and (event.done or 0) >= 32 << 20:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would, mid-upload

publish(Path(sys.argv[1]), sys.argv[2], progress=progress, chunk_size=1 << 20)
"""


def test_a_killed_push_is_completed_by_running_it_again(
    registry: tuple[str, Path], big_release: Path, tmp_path: Path
) -> None:
    host, storage = registry
    target = f"oci://{host}/big:v1"
    killed = subprocess.run([sys.executable, "-c", _KILLED_PUSH, str(big_release), target], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    image = build_image(big_release)
    shell, models = (layer.digest for layer in image.layers)
    partial = list((storage / "docker/registry/v2/repositories/big/_uploads").glob("*/data"))
    assert partial and max(p.stat().st_size for p in partial) >= 32 << 20  # chunks landed, then it died
    assert _status(f"http://{host}/v2/big/blobs/{models}") == 404
    assert _status(f"http://{host}/v2/big/manifests/{image.digest}") == 404
    events: list[Event] = []
    reference = publish(big_release, target, progress=events.append)
    assert reference == f"oci://{host}/big@{image.digest}"
    skipped = {e.subject for e in events if e.message == "already in the registry"}
    assert shell in skipped and models not in skipped  # what was complete is not sent again
    assert verify(pull(reference, tmp_path / "pulled")).ok


_KILLED_PULL = """
import os, signal, sys
from pathlib import Path
from tritonkit.release.oci import pull

def progress(event):
    if event.stage == "pull" and event.unit == "bytes" and (event.done or 0) >= 16 << 20:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-download

pull(sys.argv[1], Path(sys.argv[2]), progress=progress)
"""


def test_a_killed_pull_leaves_staging_that_the_next_pull_removes(
    registry: tuple[str, Path], big_release: Path, tmp_path: Path
) -> None:
    reference = publish(big_release, f"oci://{registry[0]}/big:v1")
    target = tmp_path / "pulled"
    killed = subprocess.run([sys.executable, "-c", _KILLED_PULL, reference, str(target)], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".pulled.")]
    assert left and not target.exists()  # the killed pull's half-written staging directory
    assert verify(pull(reference, target)).ok
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".pulled.")] == []


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# --------------------------------------------------------------------------- anonymous token auth (public registries)

PUBLIC = "tritonkit/demo"


class _TokenGate(http.server.BaseHTTPRequestHandler):
    """A public registry's front, as Docker Hub or GHCR behave: a Bearer challenge, an anonymous
    token service for public repositories, and blob downloads redirected to a "CDN" that, like
    S3 signed URLs, refuses any Authorization header. Everything else goes to the real registry."""

    server: _GateServer

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        gate = f"http://127.0.0.1:{self.server.server_port}"
        if url.path == "/token":
            query = urllib.parse.parse_qs(url.query)
            self.server.token_requests.append((query, self.headers.get("Authorization")))
            if query.get("service") != ["gate"] or query.get("scope") != [f"repository:{PUBLIC}:pull"]:
                return self._reply(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}')
            return self._reply(200, json.dumps({"token": "anonymous-pull"}).encode())
        if url.path.startswith("/cdn/"):
            if self.headers.get("Authorization"):
                return self._reply(400, b"only one auth mechanism allowed")
            return self._forward(url.path.removeprefix("/cdn"), truncate=self.server.truncate)
        if self.headers.get("Authorization") != "Bearer anonymous-pull":
            repo = url.path.removeprefix("/v2/").rsplit("/", 2)[0]
            challenge = f'Bearer realm="{gate}/token",service="gate",scope="repository:{repo}:pull"'
            return self._reply(401, b'{"errors": []}', {"WWW-Authenticate": challenge})
        if "/blobs/" in url.path and self.command == "GET":
            return self._reply(307, b"", {"Location": f"{gate}/cdn{url.path}"})
        return self._forward(url.path)

    def _forward(self, path: str, *, truncate: bool = False) -> None:
        accept = {"Accept": self.headers["Accept"]} if self.headers.get("Accept") else {}
        request = urllib.request.Request(f"http://{self.server.upstream}{path}", method=self.command, headers=accept)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                if truncate and len(body) > 1 << 20:  # the connection drops mid-blob
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self._reply(response.status, body, {"Content-Type": response.headers["Content-Type"]})
        except urllib.error.HTTPError as exc:
            self._reply(exc.code, exc.read())

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _GateServer(http.server.ThreadingHTTPServer):
    upstream: str
    truncate: bool = False
    token_requests: list[tuple[dict[str, list[str]], str | None]]


@pytest.fixture()
def token_gate(registry: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_GateServer]:
    for name in ("TRITONKIT_REGISTRY_USERNAME", "TRITONKIT_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))  # no credentials anywhere
    server = _GateServer(("127.0.0.1", 0), _TokenGate)
    server.upstream, server.token_requests = registry[0], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_pull_from_a_public_registry_gets_an_anonymous_token(
    registry: tuple[str, Path], released: tuple[ReleaseStore, Path], token_gate: _GateServer, tmp_path: Path
) -> None:
    store, _ = released
    digest = Reference.parse(publish(store.path(1), f"oci://{registry[0]}/{PUBLIC}:v1")).digest
    gate = f"127.0.0.1:{token_gate.server_port}"
    pulled = pull(f"oci://{gate}/{PUBLIC}@{digest}", tmp_path / "pulled")
    assert verify(pulled).ok
    query, authorization = token_gate.token_requests[0]
    assert authorization is None and query["scope"] == [f"repository:{PUBLIC}:pull"]  # anonymous, scoped
    done = CliRunner().invoke(main, ["pull", f"oci://{gate}/private/demo@{digest}", str(tmp_path / "private")])
    assert done.exit_code == RegistryError.exit_code, done.output
    assert "refused a token for repository:private/demo:pull anonymously" in done.output
    assert "hint:" in done.output and not (tmp_path / "private").exists()


def test_a_download_that_breaks_off_is_a_registry_error_and_leaves_nothing(
    registry: tuple[str, Path], big_release: Path, token_gate: _GateServer, tmp_path: Path
) -> None:
    digest = Reference.parse(publish(big_release, f"oci://{registry[0]}/{PUBLIC}:big")).digest
    token_gate.truncate = True
    with pytest.raises(RegistryError, match="broke off after"):
        pull(f"oci://127.0.0.1:{token_gate.server_port}/{PUBLIC}@{digest}", tmp_path / "pulled")
    assert sorted(p.name for p in tmp_path.iterdir() if "pulled" in p.name) == []
