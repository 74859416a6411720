"""Releases and their copies: ``keygen``, ``release``, ``releases``, ``export``, ``publish`` and ``pull``.

The environments releases are served in (``deploy``, ``promote``, ``rollback``, ``status``,
``repair``) are :mod:`.environments`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.table import Table

from tritonkit.cli._common import console, default_repository, store_for
from tritonkit.cli._output import json_option, record
from tritonkit.errors import mask_credentials
from tritonkit.spec import SPEC_FILE

if TYPE_CHECKING:
    from rich.progress import TaskID

    from tritonkit.events import Event

T = TypeVar("T")

spec_option = click.option(
    "-f", "--file", "spec_file", type=click.Path(path_type=Path), default=Path(SPEC_FILE), show_default=True
)
store_option = click.option(
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
@spec_option
@store_option
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
    record(release=entry.name, new=created, signed=signed, path=releases.root / entry.name, **plain(entry))
    if not created:
        console.print(f"{build} is already release [bold]{entry.name}[/] ({entry.digest[:19]}…); nothing recorded")
        return
    changed = ", ".join(entry.changed) or "none"
    console.print(f"released [bold]{entry.name}[/] {entry.digest} — models changed: {changed}")
    console.print(f"  {releases.root / entry.name}" + (" (signed, with provenance)" if signed else ""))


@click.command(name="releases")
@spec_option
@store_option
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
    record(store=releases.root, releases=[{"name": e.name, **plain(e)} for e in entries])
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
@spec_option
@store_option
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
@spec_option
@store_option
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
@spec_option
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


COMMANDS = [keygen, release, list_releases, export, publish, pull]


def plain(entry: Any) -> dict[str, Any]:
    """A release's fields for a JSON document (see docs/json.md)."""
    from tritonkit.cli._output import jsonable

    doc: dict[str, Any] = jsonable(entry)
    return doc
