"""Intent commands: ``tritonkit plan`` (replicas, queue policy, autoscaling target from the spec's
SLO and the capacity tune measured, :mod:`tritonkit.slo.plan`) and ``tritonkit check`` (live
metrics against the SLO, :mod:`tritonkit.slo.analysis`)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from tritonkit.cli._common import console
from tritonkit.cli._output import json_option, record
from tritonkit.errors import UsageError
from tritonkit.spec import SPEC_FILE


@click.command()
@click.option("-f", "--file", "spec_file", type=click.Path(path_type=Path), default=Path(SPEC_FILE), show_default=True)
@click.option("--env", "env_name", default=None, help="A KServe environment of the spec (default: local).")
@json_option
def plan(spec_file: Path, env_name: str | None) -> None:
    """Plan replicas, the queue policy and the autoscaling target from each model's slo: and capacity:."""
    from tritonkit.slo.plan import plan_spec
    from tritonkit.spec.loader import load_spec

    spec = load_spec(spec_file).spec
    env = spec.environment(env_name) if env_name else None
    result = plan_spec(spec, env)
    record(**result.as_dict())  # the --json document (docs/json.md); the table goes to stderr then
    table = Table(title=f"plan for {result.env}", title_justify="left")
    for column in ("model", "peak /s", "capacity /s", "replicas' worth", "queue (timeout, size)", "target c", "note"):
        table.add_column(column, justify="left" if column in ("model", "note") else "right")
    for m in result.models:
        queue = f"{m.queue.timeout_us / 1000:g} ms, {m.queue.max_queue_size or 'unbounded'}" if m.queue else "-"
        table.add_row(
            m.model,
            f"{m.peak_rps:g}" if m.peak_rps else "-",
            f"{m.capacity_rps:.0f}" if m.capacity_rps else "-",
            f"{m.load:.2f}" if m.load is not None else "-",
            queue,
            str(m.target_concurrency or "-"),
            "; ".join(
                [f"missing {x}" for x in m.missing] + ([m.queue.note] if m.queue and m.queue.note else []) + m.doubts
            ),
        )
    console.print(table)
    gpus = f", {result.gpus} GPU(s)" if result.gpus_per_replica else ""
    console.print(
        f"replicas: [bold]{result.replicas}[/] (autoscale {result.min_replicas}–{result.max_replicas}){gpus}",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


@click.command()
@click.argument("models", nargs=-1)
@click.option("-f", "--file", "spec_file", type=click.Path(path_type=Path), default=Path(SPEC_FILE), show_default=True)
@click.option("--metrics-url", default="http://127.0.0.1:8002/metrics", show_default=True, help="Triton's metrics.")
@click.option(
    "--prometheus",
    "prometheus_url",
    default=None,
    help="Read through this Prometheus (http://host:9090) instead: rates over the last --window, no waiting.",
)
@click.option("--window", default="30s", show_default=True, help="How long to watch: 30s, 5m.")
@click.option(
    "--env",
    "env_name",
    default=None,
    help="Compare traffic with this environment's plan (replicas); with --prometheus, read only its namespace.",
)
@json_option
def check(
    models: tuple[str, ...],
    spec_file: Path,
    metrics_url: str,
    prometheus_url: str | None,
    window: str,
    env_name: str | None,
) -> None:
    """Watch live Triton metrics for a window and judge each model (default: those with an slo:) against it.

    llm models are judged on the engine's TTFT/TPOT p99 (ttft_p99_ms, tpot_p99_ms) and error rate,
    with its waiting/running sequences and KV-cache usage. Exits 15 when any model breaks its SLO,
    17 when one had too little traffic to be judged (no data is not a pass): usable as a CI or
    cron gate.
    """
    from tritonkit.errors import Inconclusive, SloViolation
    from tritonkit.perf.tune import parse_duration
    from tritonkit.serve.metrics import watch, window_counters
    from tritonkit.slo.analysis import analyse
    from tritonkit.slo.plan import plan_spec
    from tritonkit.spec.loader import load_spec
    from tritonkit.spec.schema import LlmModel

    spec = load_spec(spec_file).spec
    chosen = [spec.model(name) for name in models] or [m for m in spec.models if m.slo is not None]
    if not chosen:
        raise UsageError("no model to check", hint="name models, or give them an slo: in the spec")
    seconds = parse_duration(window)
    replicas = plan_spec(spec, spec.environment(env_name)).replicas if env_name else 1
    if prometheus_url is not None:  # a cluster's view: rates over the window that just passed
        from tritonkit.serve.prometheus import query_window

        # one environment's pods only: its namespace (a Prometheus scrapes every namespace's)
        scope = f'namespace="{spec.environment(env_name).namespace}"' if env_name else ""
        reads = {  # llm models: the engine's series too (a scrape has them whenever they exist)
            m.name: query_window(prometheus_url, m.name, seconds, selector=scope, llm=isinstance(m, LlmModel))
            for m in chosen
        }
    else:  # one server: its own metrics, scraped through the window
        with console.status(f"watching {metrics_url} for {seconds:.0f}s …"):
            scrapes = watch(metrics_url, seconds)
        reads = {m.name: window_counters(scrapes, m.name) for m in chosen}
    verdicts = [analyse(m.name, *reads[m.name], slo=m.slo, capacity=m.capacity, replicas=replicas) for m in chosen]
    record(models=[v.as_dict() for v in verdicts])  # "ok"/"exit_code" come from the outcome below
    for verdict in verdicts:
        state = "[green]ok[/]" if verdict.ok else "[bold red]violates its SLO[/]"
        if verdict.inconclusive and len(verdict.violations) == 1:
            state = "[yellow]inconclusive[/]"
        console.print(f"{verdict.model}: {state} — {_summary(verdict.numbers)}", highlight=False)
        for line in verdict.violations:
            console.print(f"  [red]✗[/] {line}", highlight=False)
        for line in verdict.advice:
            console.print(f"  → {line}", highlight=False)
    broken = [v for v in verdicts if not v.ok and not (v.inconclusive and len(v.violations) == 1)]
    unjudged = [v for v in verdicts if not v.ok and v not in broken]
    if unjudged and not broken:
        raise Inconclusive(
            f"{', '.join(v.model for v in unjudged)}: too little traffic to judge ({unjudged[0].inconclusive})",
            hint="check again over a window with traffic (--window), or send some",
        )
    if broken:
        raise SloViolation(
            f"{', '.join(v.model for v in broken)}: live metrics break the SLO ({broken[0].violations[0]})",
            hint="see the advice above; 'tritonkit plan' for the replicas the traffic needs",
        )


def _summary(n: dict[str, float]) -> str:
    """One line of a verdict's numbers (an ``llm`` model's: the engine's latencies and load)."""
    if "ttft_p99_ms" in n:
        return (
            f"{n['rps']:.1f} req/s, TTFT p99 {n['ttft_p99_ms']:.1f} ms, TPOT p99 {n['tpot_p99_ms']:.1f} ms, "
            f"errors {n['error_rate']:.2%}, peak {n['waiting']:.0f} waiting / {n['running']:.0f} running, "
            f"KV cache {n['kv_usage']:.0%}"
        )
    span = n.get("p99_span_s", 0.0)
    beyond = f" (over the last {span:.0f} s: Triton's summaries reach that far back)" if span > n["seconds"] + 1 else ""
    return (
        f"{n['rps']:.0f} req/s, p99 {n['p99_ms']:.2f} ms{beyond}, errors {n['error_rate']:.2%}, "
        f"queue {n['queue_share']:.0%} of request time, mean batch {n['mean_batch']:.1f}"
    )


COMMANDS = [plan, check]
