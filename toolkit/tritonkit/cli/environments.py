"""Where releases are served: ``deploy`` (render or apply a release's KServe objects), ``promote``,
``rollback``, ``status`` and ``repair``; every environment through the one interface
(:func:`tritonkit.deploy.open_environment`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from tritonkit.cli._common import console, open_env, require_extra, store_for
from tritonkit.cli._output import json_mode, json_option, record
from tritonkit.cli.release import parse_release, plain, spec_option, store_option
from tritonkit.errors import UsageError

if TYPE_CHECKING:
    from tritonkit.events import Event
    from tritonkit.release.store import Release
    from tritonkit.spec.schema import EnvironmentSpec, Spec


_env_option = click.option("--env", "env_name", required=True, help="'local', or one declared in the spec.")
_url_option = click.option(
    "--url",
    default=None,
    envvar="TRITONKIT_URL",
    help="local only: HTTP address of the local Triton (or $TRITONKIT_URL; default: where "
    "'tritonkit serve --env local' serves it, else 127.0.0.1:8000).",
)


def _environment_options(command: Any) -> Any:
    """--env, --url, -f, --store and --json: what every environment command takes."""
    for option in (json_option, store_option, spec_option, _url_option, _env_option):
        command = option(command)
    return command


@click.command()
@click.argument("name")
@_env_option
@_url_option
@spec_option
@store_option
@click.option("--canary", type=int, default=None, help="KServe Serverless only: send this percentage to NAME.")
@click.option(
    "--analysis",
    default=None,
    help="Watch NAME under traffic this long (60s, 2m) against its SLO and the previous release; "
    "roll back automatically on a violation (KServe: reads the environment's prometheus_url).",
)
@click.option(
    "--steps",
    default=None,
    help="With --analysis, KServe Serverless: traffic percentages on NAME, each watched (default 10,50,100).",
)
@click.option("--metrics-url", default=None, help="local only: Triton's metrics (default: port 8002 of --url's host).")
@json_option
def promote(
    name: str,
    env_name: str,
    url: str | None,
    spec_file: Path,
    store: Path | None,
    canary: int | None,
    analysis: str | None,
    steps: str | None,
    metrics_url: str | None,
) -> None:
    """Switch environment ENV to release NAME (e.g. v3), gated on the new version being ready
    (and, with --analysis, on meeting its SLO and the previous release's numbers under real
    traffic; on KServe Serverless in canary steps, 10 → 50 → 100 % by default)."""
    from tritonkit.perf.tune import parse_duration

    analysis_s = parse_duration(analysis) if analysis else None
    percentages = _percentages(steps) if steps is not None else None
    if percentages is not None and analysis_s is None:
        raise UsageError("--steps are the steps of an analysis", hint="add --analysis 60s (each step's window)")
    env = open_env(spec_file, store, env_name, url, metrics_url)
    judged: list[dict[str, Any]] = []

    def progress(event: Event, update: Callable[[str], None]) -> None:
        if "step" in event.data:  # recorded as it comes: a failed walk still reports its steps
            judged.append(dict(event.data["step"]))
            record(analysis={"window_s": analysis_s, "steps": judged})
            console.print(_step_line(judged[-1]))
        update(event.message)

    with console.status(f"promoting {name} to {env_name} …") as status:
        entry = env.promote(
            parse_release(name),
            canary=canary,
            progress=lambda e: progress(e, status.update),
            analysis_s=analysis_s,
            steps=percentages,
        )
    record(promotion=entry)
    console.print(
        f"{env_name}: {entry.from_release or 'nothing'} → [bold]{entry.to_release}[/] ({entry.to_digest[:19]}…)"
    )


def _percentages(text: str) -> list[int]:
    """``10,50,100`` → ``[10, 50, 100]`` (the library checks the values)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(
            f"--steps takes percentages separated by commas, got '{text}'", hint="e.g. 10,50,100"
        ) from None


def _step_line(step: dict[str, Any]) -> str:
    """One line per analysed step: the share of traffic, the verdict, and each broken model."""
    if step["ok"]:
        return f"  {step['percent']:>3}%  [green]passed[/]"
    broken = "; ".join(f"{v['model']}: {', '.join(v['violations'])}" for v in step["verdicts"] if not v["ok"])
    return f"  {step['percent']:>3}%  [red]failed[/]  {broken}"


@click.command()
@_environment_options
def rollback(env_name: str, url: str | None, spec_file: Path, store: Path | None) -> None:
    """Switch environment ENV back to the release it served before the current one."""
    env = open_env(spec_file, store, env_name, url)
    with console.status(f"rolling back {env_name} …") as status:
        entry = env.rollback(progress=lambda e: status.update(e.message))
    record(promotion=entry)
    console.print(f"{env_name}: rolled back {entry.from_release} → [bold]{entry.to_release}[/]")


@click.command()
@_environment_options
def status(env_name: str, url: str | None, spec_file: Path, store: Path | None) -> None:
    """Show the release ENV serves, its history, and where the server disagrees with the record.

    Exits 8 when what is served differs from the record ('tritonkit repair' fixes it).
    """
    env = open_env(spec_file, store, env_name, url)
    state = env.status()
    current = state.current
    record(
        env=env_name,
        current=None if current is None else {"name": current.name, **plain(current)},
        history=state.history,
        differences=state.differences,
        note=state.note,
        traffic=state.traffic,
    )
    console.print(
        f"{env_name} serves [bold]{current.name if current else 'nothing yet'}[/]"
        + (f" ({current.digest})" if current else "")
    )
    table = Table(title=f"history ({env.root / 'history.jsonl'})", title_justify="left")
    for column in ("at (UTC)", "action", "from", "to", "user", "outcome"):
        table.add_column(column)
    for entry in state.history:
        outcome = entry.outcome if entry.ok else f"[red]{entry.outcome}[/]"
        table.add_row(entry.at, entry.action, entry.from_release or "—", entry.to_release, entry.user, outcome)
    console.print(table)
    if state.note:
        console.print(f"[yellow]note:[/] {state.note}", highlight=False)
    for line in state.traffic:
        console.print(f"traffic: {line}", highlight=False)
    if state.differences:
        from tritonkit.errors import PromoteError

        for line in state.differences:
            console.print(f"[red]differs:[/] {line}", highlight=False)
        where = f"; compared with the Triton at {env.url}" if getattr(env, "url", None) else ""
        raise PromoteError(
            f"{env_name} does not serve what its record says ({len(state.differences)} differences{where})",
            hint=f"run 'tritonkit repair --env {env_name}'",
        )


@click.command()
@_environment_options
def repair(env_name: str, url: str | None, spec_file: Path, store: Path | None) -> None:
    """Make ENV serve exactly the release its record names (finishing any interrupted promotion)."""
    env = open_env(spec_file, store, env_name, url)
    with console.status(f"repairing {env_name} …") as shown:
        found = env.repair(progress=lambda e: shown.update(e.message))
    current = env.current()
    record(env=env_name, fixed=found, current=current.name if current else None)
    for line in found:
        console.print(f"fixed: {line}", highlight=False)
    console.print(f"{env_name} serves [bold]{current.name if current else 'nothing'}[/], as recorded")


@click.command()
@click.argument("name")
@click.option("--env", "env_name", required=True, help="An environment declared in the spec.")
@click.option("--dry-run", is_flag=True, help="Write the YAML instead of applying it (GitOps).")
@click.option("--out", "out_file", type=click.Path(path_type=Path), help="With --dry-run: write here, not stdout.")
@click.option(
    "--observability",
    "observability_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Also write the SLO alert rules (prometheusrule.yaml) and a Grafana dashboard (dashboard.json) here.",
)
@click.option(
    "--helm-values",
    "helm_values",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write values for helm/tritonkit (the same release, plan, alerts and dashboard) to this file.",
)
@spec_option
@store_option
@json_option
def deploy(
    name: str,
    env_name: str,
    dry_run: bool,
    out_file: Path | None,
    observability_dir: Path | None,
    helm_values: Path | None,
    spec_file: Path,
    store: Path | None,
) -> None:
    """Render (or server-side apply) the KServe ServingRuntime and InferenceService for release NAME."""
    if not dry_run:
        require_extra("k8s", "applying to a cluster")
    from tritonkit.deploy.cluster import apply
    from tritonkit.manifests.crd import require_valid
    from tritonkit.manifests.kserve import render, to_yaml
    from tritonkit.release.view import as_released
    from tritonkit.spec.loader import load_spec

    loaded = load_spec(spec_file)
    env = loaded.spec.environment(env_name)
    releases = store_for(spec_file, store)
    number = parse_release(name)
    release = releases.get(number)
    # its lock still matches the index entry (a tampered store is not deployed); everything
    # rendered for it takes its intent (SLO, capacity) from that lock, not from today's spec
    released = as_released(loaded.spec, releases.path(number))
    references = releases.publications(number)
    if not references:
        raise UsageError(
            f"{name} has not been published to a registry",
            hint=f"run 'tritonkit publish {name} oci://HOST/REPO:{name}' first; KServe pulls the image by digest",
        )
    documents = render(released, env, release, references[-1])
    require_valid(documents)  # KServe's CRD schemas: nothing is written or applied that a cluster would refuse or prune
    record(release=name, env=env_name, namespace=env.namespace, image=references[-1], dry_run=dry_run)
    _write_extras(released, env, release, references[-1], observability_dir, helm_values)
    if dry_run:
        text = to_yaml(documents)
        record(objects=documents, out=out_file)
        if out_file is None:
            if not json_mode():  # with --json the objects are in the document
                click.echo(text, nl=False)
        else:
            out_file.write_text(text)
            console.print(f"wrote {out_file} ({len(documents)} objects for {env.namespace})")
        return
    with console.status(f"applying {name} to {env_name} ({env.namespace}) …"):
        applied = apply(documents, env)
    record(applied=applied)
    console.print(f"applied {', '.join(applied)} in {env.namespace}")


def _write_extras(
    spec: Spec,
    env: EnvironmentSpec,
    release: Release,
    reference: str,
    observability_dir: Path | None,
    helm_values: Path | None,
) -> None:
    """The files ``--observability`` and ``--helm-values`` ask for, written before anything is applied."""
    import json

    import yaml

    from tritonkit.manifests.chart import chart_values
    from tritonkit.manifests.kserve import monitoring

    if observability_dir is not None:
        rule, board = monitoring(spec, env)
        observability_dir.mkdir(parents=True, exist_ok=True)
        (observability_dir / "prometheusrule.yaml").write_text(yaml.safe_dump(rule, sort_keys=False))
        (observability_dir / "dashboard.json").write_text(json.dumps(board, indent=2) + "\n")
        record(observability=observability_dir)
        console.print(f"wrote {observability_dir}/prometheusrule.yaml and dashboard.json")
    if helm_values is not None:
        values = chart_values(spec, env, release, reference)
        helm_values.write_text(yaml.safe_dump(values, sort_keys=False))
        record(helm_values=helm_values)
        console.print(f"wrote {helm_values} (helm install NAME helm/tritonkit -n {env.namespace} -f {helm_values})")


COMMANDS = [promote, rollback, status, repair, deploy]
