"""``tritonkit init``, ``build``, ``verify`` and ``diff``: from a spec to a checked repository, and
what changed between two of them."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from tritonkit.cli._common import console
from tritonkit.cli._output import json_option, record
from tritonkit.errors import UsageError
from tritonkit.events import Event
from tritonkit.spec import SPEC_FILE


@click.command()
@click.argument("path", type=click.Path(path_type=Path), default=Path(SPEC_FILE))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@json_option
def init(path: Path, force: bool) -> None:
    """Write a commented starter tritonkit.yaml."""
    from tritonkit.spec.jsonschema import shipped_schema
    from tritonkit.spec.starter import STARTER_SCHEMA, STARTER_SPEC

    if path.exists() and not force:
        raise UsageError(f"{path}: already exists; not overwritten", hint="pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)  # `tritonkit init my-model/tritonkit.yaml` starts a project
    path.write_text(STARTER_SPEC)
    # the schema the starter's first line names, so an editor completes and checks the spec offline
    schema = path.parent / STARTER_SCHEMA
    schema.parent.mkdir(parents=True, exist_ok=True)
    schema.write_text(shipped_schema())
    record(path=path, schema=schema)
    console.print(f"wrote {path} — edit it, then run [bold]tritonkit build -f {path}[/]")


@click.command()
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
@click.option("--check", is_flag=True, help="Then load every model on the embedded Triton and send it one request.")
@click.option(
    "--triton-bin",
    type=click.Path(path_type=Path),
    help="With --check: use this tritonserver instead of the embedded one.",
)
@json_option
def build(
    spec_file: Path,
    out_dir: Path,
    cache_dir: Path | None,
    no_cache: bool,
    skip_kinds: tuple[str, ...],
    check: bool,
    triton_bin: Path | None,
) -> None:
    """Build the spec into <out>/<name>-<digest12>/ and point <out>/<name> at it."""
    from tritonkit.build.pipeline import build_repository as run_build
    from tritonkit.spec.loader import load_spec

    if check:
        _require_triton(triton_bin, "build --check")
    loaded = load_spec(spec_file)
    with console.status("building…") as status:

        def progress(event: Event) -> None:
            status.update(f"[bold]{event.subject}[/]: {event.message}")
            if event.message not in ("building", "cached"):
                console.print(f"  {event.subject}: {event.message}", highlight=False)

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
    record(
        name=loaded.spec.name,
        path=result.path,
        alias=result.alias,
        digest=result.digest,
        created=result.created,
        seconds=result.seconds,
        models=[
            {
                "name": m.name,
                "kind": m.kind,
                "source": "generated" if m.kind == "ensemble" else "cache" if m.cached else "built",
                "key": m.key,
                "seconds": m.seconds,
            }
            for m in result.models
        ],
        skipped=skipped,
    )
    if check:
        _load_check(result.path, triton_bin)


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--load", "load", is_flag=True, help="Then load every model on the embedded Triton and send it one request."
)
@click.option(
    "--triton-bin",
    type=click.Path(path_type=Path),
    help="With --load: use this tritonserver instead of the embedded one.",
)
@click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Require a signature by this public key (repeatable; also $TRITONKIT_TRUSTED_KEYS).",
)
@json_option
def verify(path: Path, load: bool, triton_bin: Path | None, trusted_keys: tuple[Path, ...]) -> None:
    """Re-hash a built repository and check configs, layout and artifacts (--load: and that Triton loads it).

    With a trust policy (--trusted-key or $TRITONKIT_TRUSTED_KEYS) it must also be signed by one of those keys.
    """
    from tritonkit.build.verify import verify as run_verify
    from tritonkit.cli._common import trust_policy

    if load:
        _require_triton(triton_bin, "verify --load")
    with console.status(f"re-hashing and checking {path} …"):
        report = run_verify(path)
    record(root=report.root, digest=report.digest, files=report.files, findings=report.findings)
    from tritonkit.release.store import check_release_dir

    check_release_dir(path)  # a release in a store: its lock must be the one its index records
    policy = trust_policy(None, trusted_keys)
    signed = policy.enforce(report.root, release=None) if policy is not None and report.ok else None
    if signed is not None:
        record(signed={"release": signed.release, "keyid": signed.keyid})
    if report.ok:
        console.print(f"[green]ok[/] {report.root} — {report.files} files, {report.digest}", highlight=False)
        if signed is not None:
            console.print(f"   signed as {signed.release} by key {signed.keyid[:16]}…", highlight=False)
        if load:
            _load_check(report.root, triton_bin)
        return
    table = Table(title=f"{len(report.findings)} finding(s) in {report.root}", title_justify="left")
    for column in ("kind", "path", "problem"):
        table.add_column(column)
    for finding in report.findings:
        table.add_row(finding.kind, finding.path, finding.message)
    console.print(table)
    from tritonkit.errors import VerifyError

    raise VerifyError(
        f"{report.root} does not match its lock file or Triton's schema ({len(report.findings)} finding(s))",
        hint="rebuild with 'tritonkit build'; a built repository is never edited in place",
    )


def _require_triton(triton_bin: Path | None, purpose: str) -> None:
    """Before any work: a load check needs a tritonserver (the serve extra's, PATH's or --triton-bin)."""
    import shutil

    from tritonkit.cli._common import require_extra

    if triton_bin is None and shutil.which("tritonserver") is None:
        require_extra("serve", purpose)


def _load_check(root: Path, triton_bin: Path | None) -> None:
    """Load every model of ``root`` on Triton, print one row per model, fail when any did not."""
    from tritonkit.errors import VerifyError
    from tritonkit.serve.loadcheck import load_check

    with console.status("loading every model on Triton …") as status:

        def progress(event: Event) -> None:
            status.update(f"[bold]{event.subject}[/]: {event.message}")

        report = load_check(root, triton_bin=triton_bin, progress=progress)
    table = Table(title=f"Triton load check of {root}", title_justify="left")
    for column in ("model", "loaded", "request", "detail"):
        table.add_column(column)
    for model in report.models:
        answered = "-" if model.answered is None else "ok" if model.answered else "[red]failed[/]"
        table.add_row(model.name, "yes" if model.loaded else "[red]no[/]", answered, model.detail)
    console.print(table)
    loads = [{"model": m.name, "loaded": m.loaded, "answered": m.answered, "detail": m.detail} for m in report.models]
    record(load=loads)
    if not report.ok:
        first = report.failed[0]
        what = "failed to load" if not first.loaded else "failed its request"
        raise VerifyError(
            f"{len(report.failed)} of {len(report.models)} model(s) fail on Triton; "
            f"'{first.name}' {what}: {first.detail}",
            hint=f"fix the model and rebuild; Triton's log: {report.log_file}",
        )
    sent = [m for m in report.models if m.answered is not None]
    if len(sent) == len(report.models):
        console.print(f"[green]ok[/] Triton loaded and answered {len(report.models)} model(s)", highlight=False)
    else:
        console.print(
            f"[green]ok[/] Triton loaded {len(report.models)} model(s) and answered all {len(sent)} sent a request "
            "(decoupled models are loaded only)",
            highlight=False,
        )


@click.command()
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("-f", "--file", "spec_file", type=click.Path(path_type=Path), default=Path(SPEC_FILE), show_default=True)
@json_option
def diff(old: Path, new: Path, spec_file: Path) -> None:
    """What changed from OLD to NEW: builds, releases (vN) or tritonkit.lock.json files.

    Models added, removed or changed, each changed file with its sizes, and config.pbtxt
    changes as a unified diff.
    """
    from tritonkit.artifact.diff import diff_repositories
    from tritonkit.cli._common import resolve_repository

    result = diff_repositories(resolve_repository(old, spec_file), resolve_repository(new, spec_file))
    record(
        old=result.old,
        new=result.new,
        old_digest=result.old_digest,
        new_digest=result.new_digest,
        identical=result.identical,
        models=result.models,
        unchanged=result.unchanged,
    )
    if result.identical:
        console.print(f"no changes: {old} and {new} hold the same models ({result.new_digest})", highlight=False)
        return
    console.print(f"{old} ({result.old_digest[:19]}…) → {new} ({result.new_digest[:19]}…)", highlight=False)
    table = Table(title="models", title_justify="left")
    for column in ("model", "change", "file", "change", "size before", "size after"):
        table.add_column(column, justify="right" if column.startswith("size") else "left")
    for model in result.models:
        for number, file in enumerate(model.files):
            table.add_row(
                model.name if number == 0 else "",
                model.change if number == 0 else "",
                file.path,
                file.change,
                _size(file.old_size),
                _size(file.new_size),
            )
    console.print(table)
    if result.unchanged:
        console.print(f"unchanged: {', '.join(result.unchanged)}", highlight=False)
    for model in result.models:
        if model.config_diff:
            console.print(model.config_diff, highlight=False, markup=False, end="")


def _size(size: int | None) -> str:
    return "—" if size is None else f"{size:,}"


@click.command()
def schema() -> None:
    """Print the JSON Schema of tritonkit.yaml (for editors and CI validators)."""
    from tritonkit.spec.jsonschema import shipped_schema

    click.echo(shipped_schema(), nl=False)


COMMANDS = [init, build, verify, diff, schema]
