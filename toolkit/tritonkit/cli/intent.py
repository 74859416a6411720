"""``tritonkit plan``: replicas, queue policy and autoscaling target from the spec's SLO and the
capacity tune measured (:mod:`tritonkit.deploy.plan`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from tritonkit.cli._common import console
from tritonkit.spec import SPEC_FILE


@click.command()
@click.option("-f", "--file", "spec_file", type=click.Path(path_type=Path), default=Path(SPEC_FILE), show_default=True)
@click.option("--env", "env_name", default=None, help="A KServe environment of the spec (default: local).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def plan(spec_file: Path, env_name: str | None, as_json: bool) -> None:
    """Plan replicas, the queue policy and the autoscaling target from each model's slo: and capacity:."""
    from tritonkit.deploy.plan import plan_spec
    from tritonkit.spec.loader import load_spec

    spec = load_spec(spec_file).spec
    env = spec.environment(env_name) if env_name else None
    result = plan_spec(spec, env)
    if as_json:
        sys.stdout.write(json.dumps({"schema": "tritonkit/plan/v1", **result.as_dict()}, indent=2) + "\n")
        return
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
            "; ".join(f"missing {x}" for x in m.missing),
        )
    console.print(table)
    gpus = f", {result.gpus} GPU(s)" if result.gpus_per_replica else ""
    console.print(
        f"replicas: [bold]{result.replicas}[/] (autoscale {result.min_replicas}–{result.max_replicas}){gpus}",
        highlight=False,
    )


COMMANDS = [plan]
