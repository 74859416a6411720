"""Issue 17, items 6 and 7 (the pure parts): credentials never echoed nor inherited, a full or
read-only disk is one line + hint, scratch space of killed builds is found, stale ports named,
and ``serve --env local`` outside a project creates nothing."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonkit.artifact.layout import KEPT, remove_abandoned, scratch_dir
from tritonkit.cli import main
from tritonkit.errors import ServerError, StorageError, UsageError, mask_credentials
from tritonkit.release.oci import Reference
from tritonkit.serve.endpoints import Endpoints, free_port
from tritonkit.serve.process import check_ports_free, port_owner, scrubbed_environment

GONE = 4_194_304 + 17  # above Linux's largest pid_max: no such process, ever


def test_credentials_are_scrubbed_from_a_servers_environment() -> None:
    env = {
        "PATH": "/bin",
        "TRITONKIT_REGISTRY_USERNAME": "bob",
        "TRITONKIT_REGISTRY_PASSWORD": "hunter2",
        "DOCKER_CONFIG": "/home/bob/.docker",
        "KUBECONFIG": "/home/bob/.kube/config",
        "HF_TOKEN": "hf_x",
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "s",
        "PGPASSWORD": "p",
        "OPENAI_API_KEY": "k",
        "TRITONKIT_SIGNING_KEY": "/home/bob/release.key",  # the release signing key never reaches a stub
        "TRITONKIT_KEY_PASSWORD": "p",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    kept, dropped = scrubbed_environment(env)
    assert sorted(kept) == ["OMP_NUM_THREADS", "PATH", "TOKENIZERS_PARALLELISM"]
    assert "TRITONKIT_REGISTRY_PASSWORD" in dropped and "HF_TOKEN" in dropped
    assert {"TRITONKIT_SIGNING_KEY", "TRITONKIT_KEY_PASSWORD"} <= set(dropped)


def test_the_allow_list_mode_passes_only_what_it_names_and_never_a_credential() -> None:
    env = {"PATH": "/bin", "HOME": "/root", "MY_CONFIG": "db=postgres://u:secret@h", "OMP_NUM_THREADS": "2",
           "OMP_PROC_BIND": "true", "HF_TOKEN": "x", "CUDA_VISIBLE_DEVICES": "0"}  # fmt: skip
    kept, dropped = scrubbed_environment(env, "OMP_*, CUDA_VISIBLE_DEVICES,HF_TOKEN")
    assert sorted(kept) == ["CUDA_VISIBLE_DEVICES", "HOME", "OMP_NUM_THREADS", "OMP_PROC_BIND", "PATH"]
    assert dropped == ["HF_TOKEN", "MY_CONFIG"]  # a secret under an ordinary name; a credential even when listed
    assert "MY_CONFIG" in scrubbed_environment(env)[0]  # the default mode reads names only (documented)


def test_credentials_in_a_url_are_masked_and_refused_as_a_reference() -> None:
    assert mask_credentials("push to oci://bob:hunter2@reg.io/ml/demo:v1 failed") == (
        "push to oci://***@reg.io/ml/demo:v1 failed"
    )
    assert mask_credentials("oci://reg.io/ml/demo@sha256:abc") == "oci://reg.io/ml/demo@sha256:abc"
    with pytest.raises(UsageError) as caught:
        Reference.parse("oci://bob:hunter2@127.0.0.1:5000/ml/demo:v1")
    assert "hunter2" not in caught.value.message + caught.value.hint
    assert "TRITONKIT_REGISTRY_PASSWORD" in caught.value.hint


def test_the_cli_never_echoes_url_credentials(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["pull", "oci://bob:hunter2@127.0.0.1:1/x@sha256:" + "0" * 64, str(tmp_path / "d")]
    )
    assert result.exit_code == UsageError.exit_code
    assert "hunter2" not in result.output + result.stderr and "oci://***@127.0.0.1:1/x" in result.stderr


SECRETS = ["pa/ss", "p@ss", "p:a@s/s", "hunter2"]


@pytest.mark.parametrize("password", SECRETS)
@pytest.mark.parametrize("scheme", ["oci://", ""])
def test_a_password_with_slash_at_or_colon_is_never_echoed(password: str, scheme: str, tmp_path: Path) -> None:
    """A '/' in the password ended the old mask's user part early; '@' left its tail; a reference
    without oci:// was not masked at all — in the error line and in --json alike."""
    reference = f"{scheme}bob:{password}@127.0.0.1:1/x:v1"
    assert password not in mask_credentials(f"push to '{reference}' failed")
    for args in (["pull", reference + "@sha256:" + "0" * 64, str(tmp_path / "d")], ["publish", "v1", reference]):
        result = CliRunner().invoke(main, [*args, "--json"])
        assert result.exit_code == UsageError.exit_code, result.output
        assert password not in result.output + result.stderr, (args, result.output)


def test_digest_references_and_plain_mentions_stay_readable() -> None:
    assert mask_credentials("oci://reg.io/ml/demo@sha256:abc") == "oci://reg.io/ml/demo@sha256:abc"
    assert mask_credentials("ask bob@example.com") == "ask bob@example.com"
    assert mask_credentials("'oci://u:p@reg.io/x@sha256:abc'") == "'oci://***@reg.io/x@sha256:abc'"


def test_a_token_service_that_redirects_never_passes_the_password_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib copies a request's headers onto a redirect; the Basic credentials sent to the token
    realm must not reach where it redirects (another origin here: another port)."""
    import http.server
    import threading

    from tritonkit.release.registry import Registry

    seen: dict[str, str | None] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_HEAD(self) -> None:
            self._answer()

        def _answer(self) -> None:
            port = self.server.server_address[1]
            body = b""
            if port == gate.server_address[1]:
                bearer = (self.headers.get("Authorization") or "").startswith("Bearer ")
                self.send_response(200 if bearer else 401)
                realm = f"http://127.0.0.1:{realm_server.server_address[1]}/token"
                self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="s"')
            elif port == realm_server.server_address[1]:
                seen["realm"] = self.headers.get("Authorization")
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{other.server_address[1]}/elsewhere")
            else:
                seen["redirect target"] = self.headers.get("Authorization")
                body = b'{"token": "t"}'
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(3)]
    gate, realm_server, other = servers
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TRITONKIT_REGISTRY_USERNAME", "bob")
    monkeypatch.setenv("TRITONKIT_REGISTRY_PASSWORD", "hunter2")
    try:
        registry = Registry(Reference.parse(f"oci://127.0.0.1:{gate.server_address[1]}/x:v1"))
        assert registry.has_blob("sha256:" + "0" * 64)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert (seen["realm"] or "").startswith("Basic ")  # the realm itself gets the credentials
    assert seen["redirect target"] is None  # where it redirects does not


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on the device: /srv/out/v1/model.onnx"),
        (errno.EACCES, "permission denied: /srv/out/v1/model.onnx"),
        (errno.EROFS, "read-only file system: /srv/out/v1/model.onnx"),
    ],
)
def test_a_full_or_forbidden_disk_is_one_line_and_a_hint(
    code: int, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tritonkit.release.store import ReleaseStore

    def fail(self: object, number: int, destination: Path) -> Path:
        raise OSError(code, os.strerror(code), "/srv/out/v1/model.onnx")

    monkeypatch.setattr(ReleaseStore, "export", fail)
    result = CliRunner().invoke(main, ["export", "v1", str(tmp_path / "out"), "--store", str(tmp_path)])
    assert result.exit_code == StorageError.exit_code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {words}", lines[1]] and lines[1].startswith("hint: ")
    assert StorageError.from_os_error(OSError(errno.ENOENT, "x")) is None  # others stay what they are


def test_only_scratch_space_of_dead_processes_is_removed(tmp_path: Path) -> None:
    mine = scratch_dir(tmp_path, ".staging-")
    assert mine.name.startswith(f".staging-{os.getpid()}-")
    dead = tmp_path / f".staging-{GONE}-abc123"
    (dead / "model" / "1").mkdir(parents=True)
    os.chmod(dead / "model", 0o555)
    kept = tmp_path / f".staging-{GONE}-kept"
    kept.mkdir()
    (kept / KEPT).touch()
    legacy = tmp_path / ".staging-q1w2e3r4"  # named before pids were: whose it is is unknown
    legacy.mkdir()
    assert remove_abandoned(tmp_path, ".staging-") == [dead]
    assert mine.is_dir() and kept.is_dir() and legacy.is_dir() and not dead.exists()


def test_a_port_in_use_is_named_with_its_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_owner(port) == (os.getpid(), port_owner(port)[1])  # type: ignore[index]
        with pytest.raises(
            ServerError, match=rf"metrics port {port} is already in use by another process: pid {os.getpid()}"
        ):
            check_ports_free(Endpoints("127.0.0.1", free_port(), free_port(), port))
    assert port_owner(port) is None


def test_serve_env_local_outside_a_project_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRITONKIT_STORE", raising=False)
    from tests.helpers import port_flags

    # ports of its own: the default 8000-8002 may be another test's (or the README's) server
    result = CliRunner().invoke(main, ["serve", "--env", "local", *port_flags(Endpoints.allocate())])
    assert result.exit_code == UsageError.exit_code, result.output
    assert "no release store at" in result.stderr and "tritonkit release" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_goes_away_does_not_turn_the_exit_code_into_a_silent_1() -> None:
    """``tritonkit status | head -1`` exited 1 with nothing said (click's answer to EPIPE): the
    rest of the output is now dropped and the exit code is the command's own."""
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write: every write is EPIPE
    done = subprocess.run(
        [sys.executable, "-m", "tritonkit", "schema"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120
    )
    os.close(write)
    assert done.returncode == 0 and done.stderr == "", done.stderr
