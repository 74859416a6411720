"""The ``tritonkit`` command: a thin click layer over the library.

It parses arguments, calls the library, renders results with rich, and maps
:class:`~tritonkit.errors.TritonkitError` to one ``error:`` line, one ``hint:`` line and the
error's exit code. Nothing here decides anything the library could.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ServerError, SpecError, TritonkitError
from .spec import SPEC_FILE

console = Console()
err_console = Console(stderr=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TritonkitError as exc:
            # Messages are plain text: "pip install 'tritonkit[serve]'" must not read as markup.
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
            if exc.hint:
                err_console.print(f"[bold cyan]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(package_name="tritonkit")
def main() -> None:
    """Build, verify and serve immutable, content-hashed Triton model repositories."""


@main.command()
@click.argument("path", type=click.Path(path_type=Path), default=Path(SPEC_FILE))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, force: bool) -> None:
    """Write a commented starter tritonkit.yaml."""
    from .starter import STARTER_SPEC

    if path.exists() and not force:
        raise SpecError("already exists; not overwritten", file=path, hint="pass --force to replace it")
    path.write_text(STARTER_SPEC)
    console.print(f"wrote {path} — edit it, then run [bold]tritonkit build -f {path}[/]")


@main.command()
@click.option("-f", "--file", "spec_file", type=click.Path(path_type=Path), default=Path(SPEC_FILE), show_default=True)
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=Path("dist"), show_default=True)
@click.option(
    "--cache-dir", type=click.Path(path_type=Path), help="Model cache (default .tritonkit/cache beside the spec)."
)
@click.option("--no-cache", is_flag=True, help="Rebuild every model.")
@click.option(
    "--skip-kind",
    "skip_kinds",
    multiple=True,
    type=click.Choice(["onnx", "python", "llm", "tensorrt"]),
    help="Leave models of this kind out (e.g. tensorrt on a host without a GPU); repeatable.",
)
def build(spec_file: Path, out_dir: Path, cache_dir: Path | None, no_cache: bool, skip_kinds: tuple[str, ...]) -> None:
    """Build the spec into <out>/<name>-<digest12>/ and point <out>/<name> at it."""
    from .build import build as run_build
    from .spec import load_spec

    loaded = load_spec(spec_file)
    with console.status("building…") as status:

        def progress(model: str, message: str) -> None:
            status.update(f"[bold]{model}[/]: {message}")
            if message not in ("building", "cached"):
                console.print(f"  {model}: {message}", highlight=False)

        result = run_build(
            loaded,
            out_dir,
            cache_dir=cache_dir,
            use_cache=not no_cache,
            progress=progress,
            skip_kinds=frozenset(skip_kinds),
        )
    table = Table(title=f"{loaded.spec.name} → {result.path}", title_justify="left")
    for column in ("model", "kind", "source", "seconds"):
        table.add_column(column)
    for model in result.models:
        source = "generated" if model.kind == "ensemble" else "cache" if model.cached else "built"
        table.add_row(model.name, model.kind, source, f"{model.seconds:.2f}")
    console.print(table)
    skipped = [m.name for m in loaded.spec.models if getattr(m, "kind", "") in skip_kinds]
    if skipped:
        console.print(f"skipped (--skip-kind): {', '.join(skipped)}", highlight=False)
    state = "new build" if result.created else "unchanged (identical build already present)"
    console.print(f"digest [bold]{result.digest}[/] — {state} in {result.seconds:.2f}s", highlight=False)
    console.print(f"alias  {result.alias} -> {result.path.name}", highlight=False)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
def verify(path: Path) -> None:
    """Re-hash a built repository and check configs, layout and artifacts."""
    from .verify import verify as run_verify

    with console.status(f"re-hashing and checking {path} …"):
        report = run_verify(path)
    if report.ok:
        console.print(f"[green]ok[/] {report.root} — {report.files} files, {report.digest}", highlight=False)
        return
    table = Table(title=f"{len(report.findings)} finding(s) in {report.root}", title_justify="left")
    for column in ("kind", "path", "problem"):
        table.add_column(column)
    for finding in report.findings:
        table.add_row(finding.kind, finding.path, finding.message)
    console.print(table)
    from .errors import VerifyError

    raise VerifyError(
        f"{report.root} does not match its lock file or Triton's schema ({len(report.findings)} finding(s))",
        hint="rebuild with 'tritonkit build'; a built repository is never edited in place",
    )


@main.command()
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(path_type=Path),
    default=Path(SPEC_FILE),
    help="Spec whose newest build (or release, when PATH is vN) to serve.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 exposes the server).")
@click.option("--http-port", default=8000, show_default=True)
@click.option("--grpc-port", default=8001, show_default=True)
@click.option("--metrics-port", default=8002, show_default=True)
@click.option(
    "--triton-bin", type=click.Path(path_type=Path), help="Use this tritonserver instead of the embedded one."
)
@click.option("--model", "models", multiple=True, help="Load only these models (repeatable).")
@click.option("--no-verify", is_flag=True, help="Skip verifying the repository before serving.")
@click.option("--env", "env_name", default=None, help="Serve an environment's live repository (promote into it).")
def serve(
    path: Path | None,
    spec_file: Path,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    triton_bin: Path | None,
    models: tuple[str, ...],
    no_verify: bool,
    env_name: str | None,
) -> None:
    """Serve a built repository (or release vN, or --env local) on a real Triton until Ctrl-C."""
    from .server import Endpoints, TritonServer

    if env_name is not None:
        from .promote import LocalEnvironment
        from .releases import ReleaseStore, default_store

        if env_name != "local":
            raise SpecError(f"'serve --env {env_name}': only the local environment runs here", hint="use --env local")
        env = LocalEnvironment(ReleaseStore(default_store(spec_file.resolve().parent)))
        root = env.prepare()  # mutable view of immutable releases: each release is verified when promoted
        no_verify = True
    else:
        root = _resolve_repository(path, spec_file)
    if not no_verify:
        _require_verified(root)
    server = TritonServer(
        root,
        endpoints=Endpoints(host, http_port, grpc_port, metrics_port),
        triton_bin=triton_bin,
        models=list(models) or None,
    )
    from .builders.tensorrt import check_servable

    check_servable(root, embedded=server.binary.embedded)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with console.status(f"starting Triton on {root.resolve()} …"):
            t0 = time.perf_counter()
            server.start()  # stops the process itself if interrupted
    except KeyboardInterrupt:
        err_console.print("interrupted while starting; Triton stopped")
        sys.exit(130)
    table = Table(title=f"Triton ready in {time.perf_counter() - t0:.1f}s (pid {server.pid})", title_justify="left")
    table.add_column("endpoint")
    table.add_column("address")
    table.add_row("HTTP", server.endpoints.http_url)
    table.add_row("gRPC", server.endpoints.grpc_url)
    table.add_row("metrics", server.endpoints.metrics_url)
    table.add_row("models", ", ".join(server.models))
    table.add_row("log", str(server.log_file))
    console.print(table)
    console.print("Ctrl-C to stop")
    try:
        while not stop.wait(0.5):
            code = server.exit_code()
            if code is not None:
                raise ServerError(f"tritonserver exited unexpectedly ({code})", hint=f"see {server.log_file}")
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping…")
        code = server.stop()
        console.print(f"stopped (exit code {code})")


@main.command()
@click.argument("model")
@click.option(
    "--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="Input data; random data for omitted inputs."
)
@click.option("--url", default=None, help="Server address (default 127.0.0.1:8000 for http, :8001 for grpc).")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option("--batch-size", default=1, show_default=True, help="Batch size for generated inputs.")
def infer(model: str, inputs: tuple[str, ...], url: str | None, protocol: str, batch_size: int) -> None:
    """Send one request to a running Triton and print the outputs."""
    from .client import infer as run_infer

    arrays = {}
    for item in inputs:
        name, sep, file = item.partition("=")
        if not sep:
            raise SpecError(f"--input '{item}' is not NAME=FILE.npy", hint="for example: --input features=x.npy")
        arrays[name] = Path(file)
    outputs = run_infer(model, arrays, url=url, protocol=protocol, batch_size=batch_size)
    for name, value in outputs.items():
        console.print(f"[bold]{name}[/] {value.dtype} {list(value.shape)}")
        console.print(value)


@main.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--stream/--no-stream", default=True, show_default=True, help="Print tokens as they arrive.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--top-k", type=int, default=-1, show_default=True, help="-1 = off.")
@click.option("--seed", type=int, default=None)
@click.option("--stop", "stops", multiple=True, help="Stop string (repeatable).")
@click.option("--url", default="127.0.0.1:8001", show_default=True, help="Triton gRPC address.")
def generate(
    model: str,
    prompt: str,
    stream: bool,
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    seed: int | None,
    stops: tuple[str, ...],
    url: str,
) -> None:
    """Generate text with an llm model on a running Triton, streaming tokens to the terminal."""
    from .llm_client import check_llm
    from .llm_client import generate as run_generate

    check_llm(url, model)
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "top_k": top_k}
    if seed is not None:
        params["seed"] = seed
    if stops:
        params["stop"] = list(stops)

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    result = run_generate(url, model, prompt, params, stream=stream, on_text=show)
    sys.stdout.write("\n")
    if result.error is not None:
        raise ServerError(f"'{model}' failed the request: {result.error}", hint="check the sampling parameters")
    total_ms = 1000 * ((result.done_at or result.sent_at) - result.sent_at)
    err_console.print(
        f"[dim]{result.finish_reason} · {result.output_tokens} tokens · "
        f"first token {1000 * (result.ttft or 0):.0f} ms · total {total_ms:.0f} ms[/]"
    )


def _require_verified(root: Path) -> None:
    from .verify import verify as run_verify

    report = run_verify(root)
    if not report.ok:
        raise ServerError(
            f"{root} failed verification ({report.findings[0]})",
            hint=f"run 'tritonkit verify {root}' for all findings, then rebuild",
        )


def _resolve_repository(path: Path | None, spec_file: Path) -> Path:
    """PATH as given, a release name (``v3``) from the spec's release store, or the newest build."""
    if path is None:
        return _default_repository(spec_file)
    if not path.exists() and str(path)[:1] == "v" and str(path)[1:].isdigit():
        from .releases import ReleaseStore, default_store, parse_release

        return ReleaseStore(default_store(spec_file.resolve().parent)).path(parse_release(str(path)))
    return path


def _default_repository(spec_file: Path) -> Path:
    """The newest build of the spec: ``dist/<name>`` here or beside the spec, whichever was built last."""
    from .spec import load_spec

    loaded = load_spec(spec_file)
    candidates = [c for c in (Path("dist") / loaded.spec.name, loaded.root / "dist" / loaded.spec.name) if c.exists()]
    if candidates:
        return max(candidates, key=lambda c: c.lstat().st_mtime)  # the alias is re-pointed by every build
    raise ServerError(
        f"no build of '{loaded.spec.name}' found in dist/",
        hint=f"run 'tritonkit build -f {spec_file}' first, or pass a PATH",
    )


from . import cli_load, cli_release  # noqa: E402,F401  (they register their commands on main)
