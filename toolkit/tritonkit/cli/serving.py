"""``tritonkit serve``, ``infer`` and ``generate``: a real Triton over a repository, and requests to it."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from tritonkit.cli._common import console, err_console, open_env, require_extra, require_verified, resolve_repository
from tritonkit.cli._output import json_option, record
from tritonkit.errors import ServerError, UsageError
from tritonkit.spec import SPEC_FILE

# tritonkit sets these itself (from its own options); a second value would be ambiguous.
_OWN_TRITON_FLAGS = (
    "--model-repository",
    "--model-store",
    "--model-control-mode",
    "--http-port",
    "--grpc-port",
    "--metrics-port",
    "--http-address",
    "--grpc-address",
    "--metrics-address",
    "--backend-directory",
)
URL_ENV = "TRITONKIT_URL"


class _PassThrough(click.Command):
    """A command whose arguments after ``--`` are kept for tritonserver, not parsed by click."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "[-- TRITONSERVER_ARGS...]"]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["tritonkit.passthrough"] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)


def _triton_args(ctx: click.Context) -> list[str]:
    extra: list[str] = ctx.meta.get("tritonkit.passthrough", [])
    for arg in extra:
        flag = arg.split("=", 1)[0]
        if flag in _OWN_TRITON_FLAGS:
            raise UsageError(
                f"'{flag}' after -- is set by tritonkit itself",
                hint="use serve's own options (PATH, --host, --http-port, --grpc-port, --metrics-port)",
            )
    return extra


@click.command(cls=_PassThrough)
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
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Restart a crashed tritonserver at most this often in 10 minutes (0: exit instead).",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=25.0,
    show_default=True,
    help="On SIGTERM or Ctrl-C, seconds to let requests in flight finish (new ones are refused) before stopping.",
)
@click.pass_context
def serve(
    ctx: click.Context,
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
    max_restarts: int,
    drain_timeout: float,
) -> None:
    """Serve a built repository (or release vN, or --env local) on a real Triton until Ctrl-C.

    Arguments after -- go to tritonserver as they are, e.g.
    tritonkit serve dist/demo -- --log-verbose=1 --trace-config=mode=opentelemetry
    """
    import shutil

    if triton_bin is None and shutil.which("tritonserver") is None:
        require_extra("serve", "serving with the embedded Triton")
    extra_args = _triton_args(ctx)
    from tritonkit.events import Event
    from tritonkit.serve.endpoints import Endpoints
    from tritonkit.serve.models import repository_models
    from tritonkit.serve.process import check_ports_free
    from tritonkit.serve.server import TritonServer
    from tritonkit.serve.supervisor import start_supervised, supervise

    endpoints = Endpoints(host, http_port, grpc_port, metrics_port)
    check_ports_free(endpoints)  # before verifying: a busy port is known now, with its holder

    if env_name is not None:
        env = _local_environment(spec_file, env_name, f"{host}:{http_port}", endpoints.metrics_url)
    else:
        env = None
    if env is not None:
        ctx.call_on_close(env.release_serving)  # however serve ends
    if env is not None:
        root, no_verify = env.serving_root(), True  # live/: each release was verified when promoted
    else:
        root = resolve_repository(path, spec_file)
    if not no_verify:
        require_verified(root)
    server = TritonServer(
        root,
        endpoints=endpoints,
        triton_bin=triton_bin,
        models=list(models) or None,
        extra_args=extra_args,
    )
    from tritonkit.build.engines import check_servable

    check_servable(root, embedded=server.binary.embedded)
    stop = threading.Event()
    # SIGTERM interrupts whatever the main thread waits on (a restart included), like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)

    def show(event: Event) -> None:
        err_console.print(f"[bold yellow]{event.message}[/]", highlight=False, soft_wrap=True)

    try:
        with console.status(f"starting Triton on {root.resolve()} …"):
            t0 = time.perf_counter()
            # a crash while models load is a crash like any other: started again, within --max-restarts
            crashes = start_supervised(server, [], max_restarts=max_restarts, progress=show)
    except KeyboardInterrupt:
        err_console.print("interrupted while starting; Triton stopped")
        sys.exit(130)
    _print_ready(server, time.perf_counter() - t0)

    def before_restart() -> None:
        if env is not None:
            from tritonkit.errors import TritonkitError

            try:
                done = env.recover()
            except TritonkitError as exc:  # a promotion still holds the lock: restart on live/ as it is
                done = f"recovery skipped: {exc.message}"
            if done:
                err_console.print(f"[yellow]{done}[/]", highlight=False)
            if not models:
                server.models = repository_models(root)  # what was promoted since the start

    try:
        supervise(
            server, stop, max_restarts=max_restarts, before_restart=before_restart, progress=show, crashes=crashes
        )
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping now: a second SIGTERM must not cut it short
        console.print(f"draining: new requests are refused, those in flight finish (up to {drain_timeout:.0f}s)…")
        left = server.drain(timeout=drain_timeout)
        if left:
            err_console.print(f"[yellow]still answering after {drain_timeout:.0f}s: {', '.join(left)}[/]")
        console.print("stopping…")
        code = server.stop(timeout=10.0)
        console.print(f"stopped (exit code {code})")
        _flush()


def _local_environment(spec_file: Path, env_name: str, url: str, metrics_url: str) -> Any:
    """The environment ``serve --env`` serves, with an interrupted promotion put back first."""
    env = open_env(spec_file, None, env_name, url, metrics_url)
    if env_name == "local" and not (env.store.root / "index.json").is_file():
        # not a project directory: create nothing rather than serve an empty store silently
        raise UsageError(
            f"no release store at {env.store.root} (no releases yet)",
            hint="run in the project (the store is releases/ beside the spec; -f names the spec, "
            "$TRITONKIT_STORE a store), or make one with 'tritonkit build' and 'tritonkit release'",
        )
    env.claim_serving()  # held while this process serves (released when it ends)
    root = env.serving_root()
    # A promotion killed mid-way left live/ between two releases: put it back to the record
    # before Triton reads it (nothing serves it yet, so this only touches files).
    recovered = env.recover()
    if recovered:
        err_console.print(f"[yellow]{recovered}[/]", highlight=False)
    if not any(root.iterdir()):
        err_console.print(
            f"nothing promoted to local yet: Triton will serve no model until "
            f"'tritonkit promote vN --env local' ({len(env.store.releases())} release(s) in {env.store.root})",
            highlight=False,
            soft_wrap=True,
        )
    return env


def _print_ready(server: Any, seconds: float) -> None:
    table = Table(title=f"Triton ready in {seconds:.1f}s (pid {server.pid})", title_justify="left")
    table.add_column("endpoint")
    table.add_column("address")
    table.add_row("HTTP", server.endpoints.http_url)
    table.add_row("gRPC", server.endpoints.grpc_url)
    table.add_row("metrics", server.endpoints.metrics_url)
    table.add_row("models", ", ".join(server.models))
    table.add_row("log", str(server.log_file))
    console.print(table)
    console.print("Ctrl-C to stop")
    _flush()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _flush() -> None:
    """Push buffered output out now: with stdout redirected to a file, Python buffers it in blocks,
    and a supervisor that runs for hours would show nothing until it exits."""
    sys.stdout.flush()
    sys.stderr.flush()


@click.command()
@click.argument("model")
@click.option(
    "--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="Input data; random data for omitted inputs."
)
@click.option(
    "--url",
    default=None,
    envvar=URL_ENV,
    help=f"Server address (default ${URL_ENV}, else 127.0.0.1:8000 for http, :8001 for grpc).",
)
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size for generated inputs."
)
@json_option
def infer(model: str, inputs: tuple[str, ...], url: str | None, protocol: str, batch_size: int) -> None:
    """Send one request to a running Triton and print the outputs."""
    from tritonkit.serve.client import infer as run_infer

    arrays = {}
    for item in inputs:
        name, sep, file = item.partition("=")
        if not sep:
            raise UsageError(f"--input '{item}' is not NAME=FILE.npy", hint="for example: --input features=x.npy")
        arrays[name] = Path(file)
    outputs = run_infer(model, arrays, url=url, protocol=protocol, batch_size=batch_size)
    record(
        model=model,
        outputs={
            name: {"datatype": str(value.dtype), "shape": list(value.shape), "data": value.tolist()}
            for name, value in outputs.items()
        },
    )
    for name, value in outputs.items():
        console.print(f"[bold]{name}[/] {value.dtype} {list(value.shape)}")
        console.print(value)


@click.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--stream/--no-stream", default=True, show_default=True, help="Print tokens as they arrive.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--top-k", type=int, default=-1, show_default=True, help="-1 = off.")
@click.option("--seed", type=int, default=None)
@click.option("--stop", "stops", multiple=True, help="Stop string (repeatable).")
@click.option(
    "--url", default="127.0.0.1:8001", envvar=URL_ENV, show_default=True, help=f"Triton gRPC address (or ${URL_ENV})."
)
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
    from tritonkit.serve.llm_client import check_llm
    from tritonkit.serve.llm_client import generate as run_generate

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


COMMANDS = [serve, infer, generate]
