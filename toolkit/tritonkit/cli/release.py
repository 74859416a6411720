"""Releases and where they go: ``keygen``, ``release``, ``releases``, ``export``, ``publish``, ``pull``,
``deploy``, ``promote``, ``rollback``, ``status`` and ``repair``; every environment through the one interface."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.table import Table

from tritonkit.cli._common import console, default_repository, open_env, require_extra, store_for
from tritonkit.cli._output import json_mode, json_option, record
from tritonkit.errors import UsageError, mask_credentials
from tritonkit.spec import SPEC_FILE

if TYPE_CHECKING:
    from rich.progress import TaskID

    from tritonkit.events import Event
    from tritonkit.release.store import Release
    from tritonkit.spec.schema import EnvironmentSpec, Spec

T = TypeVar("T")

_spec_option = click.option(
    "-f", "--file", "spec_file", type=click.Path(path_type=Path), default=Path(SPEC_FILE), show_default=True
)
_store_option = click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="Release store (default: $TRITONKIT_STORE, else releases/ beside the spec).",
)


def parse_release(name: str) -> int:
    from tritonkit.release.store import parse_release as parse

    return parse(name)


@click.command()
@click.argument("key", type=click.Path(path_type=Path, dir_okay=False))
@json_option
def keygen(key: Path) -> None:
    """Write a new release signing key pair: KEY (private, mode 0600) and KEY with suffix .pub.

    The private key is encrypted with $TRITONKIT_KEY_PASSWORD when it is set. List the .pub file
    under the spec's trust: keys (or in $TRITONKIT_TRUSTED_KEYS) and keep KEY out of the repository.
    """
    import os

    from tritonkit.release.trust import PASSWORD_ENV, generate_key

    password = os.environ.get(PASSWORD_ENV)
    public = generate_key(key, password=password.encode() if password else None)
    record(private_key=key, public_key=public, encrypted=bool(password))
    console.print(f"wrote {key} (private: keep it secret{', encrypted' if password else ''}) and {public}")
    console.print(f"  trust it in tritonkit.yaml:  trust: {{keys: [{public}]}}", highlight=False, markup=False)


@click.command()
@_spec_option
@_store_option
@click.option("--repository", type=click.Path(path_type=Path), help="Build to release (default: the spec's newest).")
@click.option(
    "--sign-key",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="TRITONKIT_SIGNING_KEY",
    default=None,
    help="Sign the release and its provenance with this private key (or $TRITONKIT_SIGNING_KEY).",
)
@json_option
def release(spec_file: Path, store: Path | None, repository: Path | None, sign_key: Path | None) -> None:
    """Record the newest build as the next release vN (a no-op for a build already released)."""
    from tritonkit.release.trust import Provenance, load_signer

    releases = store_for(spec_file, store)
    build = repository or default_repository(spec_file)
    signer = load_signer(sign_key) if sign_key is not None else None
    provenance = Provenance(spec=spec_file if spec_file.is_file() else None)
    with console.status(f"verifying and releasing {build} …"):
        entry, created = releases.create(build.resolve(), signer=signer, provenance=provenance)
    signed = created and signer is not None
    record(release=entry.name, new=created, signed=signed, path=releases.root / entry.name, **_plain(entry))
    if not created:
        console.print(f"{build} is already release [bold]{entry.name}[/] ({entry.digest[:19]}…); nothing recorded")
        return
    changed = ", ".join(entry.changed) or "none"
    console.print(f"released [bold]{entry.name}[/] {entry.digest} — models changed: {changed}")
    console.print(f"  {releases.root / entry.name}" + (" (signed, with provenance)" if signed else ""))


@click.command(name="releases")
@_spec_option
@_store_option
@click.option("--repair", is_flag=True, help="Restore a damaged index from index.json.bak and the releases' locks.")
@json_option
def list_releases(spec_file: Path, store: Path | None, repair: bool) -> None:
    """List releases: number, digest, creation time, models changed since the previous one."""
    releases = store_for(spec_file, store)
    if repair:
        done = releases.repair()
        for line in done or [f"{releases.root / 'index.json'} is intact; nothing to repair"]:
            console.print(line, highlight=False, soft_wrap=True)
    entries = releases.releases()
    record(store=releases.root, releases=[{"name": e.name, **_plain(e)} for e in entries])
    if not entries:
        console.print(f"no releases in {releases.root} yet — run 'tritonkit release'")
        return
    table = Table(title=f"releases in {releases.root}", title_justify="left")
    for column in ("release", "digest", "created (UTC)", "changed since previous"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry.name, entry.digest[:19] + "…", entry.created, ", ".join(entry.changed) or "—")
    console.print(table)


@click.command()
@click.argument("name")
@click.argument("destination", type=click.Path(path_type=Path))
@_spec_option
@_store_option
@json_option
def export(name: str, destination: Path, spec_file: Path, store: Path | None) -> None:
    """Copy release NAME (e.g. v3) to DESTINATION as a plain read-only Triton repository."""
    releases = store_for(spec_file, store)
    path = releases.export(parse_release(name), destination)
    record(release=name, path=path)
    console.print(f"exported {name} to {path} (read-only, verified). Serve it with:")
    console.print(
        f"  docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v {path.resolve()}:/models:ro "
        "nvcr.io/nvidia/tritonserver:24.10-py3 tritonserver --model-repository=/models",
        highlight=False,
        soft_wrap=True,
    )


_env_option = click.option("--env", "env_name", required=True, help="'local', or one declared in the spec.")
_url_option = click.option(
    "--url",
    default="127.0.0.1:8000",
    envvar="TRITONKIT_URL",
    show_default=True,
    help="local only: HTTP address of the local Triton (or $TRITONKIT_URL).",
)


def _environment_options(command: Any) -> Any:
    """--env, --url, -f, --store and --json: what every environment command takes."""
    for option in (json_option, _store_option, _spec_option, _url_option, _env_option):
        command = option(command)
    return command


@click.command()
@click.argument("name")
@_env_option
@_url_option
@_spec_option
@_store_option
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
    url: str,
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
def rollback(env_name: str, url: str, spec_file: Path, store: Path | None) -> None:
    """Switch environment ENV back to the release it served before the current one."""
    env = open_env(spec_file, store, env_name, url)
    with console.status(f"rolling back {env_name} …") as status:
        entry = env.rollback(progress=lambda e: status.update(e.message))
    record(promotion=entry)
    console.print(f"{env_name}: rolled back {entry.from_release} → [bold]{entry.to_release}[/]")


@click.command()
@_environment_options
def status(env_name: str, url: str, spec_file: Path, store: Path | None) -> None:
    """Show the release ENV serves, its history, and where the server disagrees with the record.

    Exits 8 when what is served differs from the record ('tritonkit repair' fixes it).
    """
    env = open_env(spec_file, store, env_name, url)
    state = env.status()
    current = state.current
    record(
        env=env_name,
        current=None if current is None else {"name": current.name, **_plain(current)},
        history=state.history,
        differences=state.differences,
        note=state.note,
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
    if state.differences:
        from tritonkit.errors import PromoteError

        for line in state.differences:
            console.print(f"[red]differs:[/] {line}", highlight=False)
        raise PromoteError(
            f"{env_name} does not serve what its record says ({len(state.differences)} differences)",
            hint=f"run 'tritonkit repair --env {env_name}'",
        )


@click.command()
@_environment_options
def repair(env_name: str, url: str, spec_file: Path, store: Path | None) -> None:
    """Make ENV serve exactly the release its record names (finishing any interrupted promotion)."""
    env = open_env(spec_file, store, env_name, url)
    with console.status(f"repairing {env_name} …") as shown:
        found = env.repair(progress=lambda e: shown.update(e.message))
    current = env.current()
    record(env=env_name, fixed=found, current=current.name if current else None)
    for line in found:
        console.print(f"fixed: {line}", highlight=False)
    console.print(f"{env_name} serves [bold]{current.name if current else 'nothing'}[/], as recorded")


def _with_byte_bars(run: Callable[[Callable[[Event], None]], T]) -> T:
    """Run a publish or pull with one byte progress bar per blob (hashing, uploading, downloading)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as bars:
        tasks: dict[tuple[str, str], TaskID] = {}

        def progress(event: Event) -> None:
            if event.unit != "bytes":
                bars.console.print(f"  {event.message}", highlight=False)
                return
            key = (event.subject, event.message)
            if key not in tasks:
                tasks[key] = bars.add_task(f"{event.message} {event.subject[:19]}", total=event.total)
            bars.update(tasks[key], completed=event.done, total=event.total)

        return run(progress)


@click.command()
@click.argument("name")
@click.argument("target")
@_spec_option
@_store_option
@json_option
def publish(name: str, target: str, spec_file: Path, store: Path | None) -> None:
    """Push release NAME to TARGET (oci://HOST/REPO[:TAG]) as a KServe modelcar image."""
    from tritonkit.release.oci import publish as push

    releases = store_for(spec_file, store)
    number = parse_release(name)
    reference = _with_byte_bars(lambda progress: push(releases.path(number), target, progress=progress))
    releases.record_publication(number, reference)
    record(release=name, target=mask_credentials(target), reference=reference)
    console.print(f"published {name}: [bold]{reference}[/]", soft_wrap=True)


_trusted_key_option = click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Require a signature by this public key (repeatable; also the spec's trust: and $TRITONKIT_TRUSTED_KEYS).",
)


@click.command()
@click.argument("reference")
@click.argument("destination", type=click.Path(path_type=Path))
@_spec_option
@_trusted_key_option
@json_option
def pull(reference: str, destination: Path, spec_file: Path, trusted_keys: tuple[Path, ...]) -> None:
    """Fetch REFERENCE (oci://HOST/REPO@sha256:…) into DESTINATION, verifying every hash (and,
    under a trust policy, its signature before anything is downloaded or written)."""
    from tritonkit.cli._common import trust_policy
    from tritonkit.release.oci import pull as fetch

    policy = trust_policy(spec_file, trusted_keys)
    path = _with_byte_bars(lambda progress: fetch(reference, destination, progress=progress, trust=policy))
    record(reference=mask_credentials(reference), path=path, signature_checked=policy is not None)
    signed = " and its signature" if policy is not None else ""
    console.print(f"pulled and verified {mask_credentials(reference)}{signed} into {path}", soft_wrap=True)


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
@_spec_option
@_store_option
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
    from tritonkit.manifests.crd import check
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
    check(documents)  # KServe's CRD schemas: nothing is written or applied that a cluster would refuse or prune
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


COMMANDS = [keygen, release, list_releases, export, promote, rollback, status, repair, publish, pull, deploy]


def _plain(entry: Any) -> dict[str, Any]:
    """A release's fields for a JSON document (see docs/json.md)."""
    from tritonkit.cli._output import jsonable

    doc: dict[str, Any] = jsonable(entry)
    return doc
