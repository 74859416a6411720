"""The ``tritonkit`` command: a thin click layer over the library.

It parses arguments, calls the library, renders results with rich, and maps
:class:`~tritonkit.errors.TritonkitError` to one ``error:`` line, one ``hint:`` line and the
error's exit code. Nothing here decides anything the library could.

One module per command group, each with a ``COMMANDS`` list registered here: :mod:`.project`
(init, build, verify), :mod:`.serving` (serve, infer, generate), :mod:`.perf` (bench, tune),
:mod:`.release` (keygen … pull), :mod:`.environments` (deploy, promote … repair),
:mod:`.intent` (plan, check); :mod:`._output` holds the consoles and ``--json`` documents,
:mod:`._common` error rendering and repository defaults. Command modules import the library
inside their functions, so ``tritonkit --help`` imports no stage.
"""

from __future__ import annotations

import click

from tritonkit.cli import environments, intent, perf, project, release, serving
from tritonkit.cli._common import Group, console


@click.group(cls=Group)
@click.version_option(package_name="tritonkit")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors (and --json documents).")
@click.option("-v", "--verbose", is_flag=True, help="Also print what caused an error.")
@click.pass_context
def main(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """Build, verify and serve immutable, content-hashed Triton model repositories."""
    console.quiet = quiet
    ctx.meta["tritonkit.verbose"] = verbose


for _module in (project, serving, perf, release, environments, intent):
    for _command in _module.COMMANDS:
        main.add_command(_command)
