"""The ``tritonkit`` command: a thin click layer over the library.

It parses arguments, calls the library, renders results with rich, and maps
:class:`~tritonkit.errors.TritonkitError` to one ``error:`` line, one ``hint:`` line and the
error's exit code. Nothing here decides anything the library could.

One module per command group, each with a ``COMMANDS`` list registered here: :mod:`.project`
(init, build, verify), :mod:`.serving` (serve, infer, generate), :mod:`.perf` (bench, tune),
:mod:`.release` (release … status), :mod:`.intent` (plan); :mod:`._common` holds the consoles, error rendering and
repository defaults. Command modules import the library inside their functions, so
``tritonkit --help`` imports no stage.
"""

from __future__ import annotations

import click

from tritonkit.cli import intent, perf, project, release, serving
from tritonkit.cli._common import Group


@click.group(cls=Group)
@click.version_option(package_name="tritonkit")
def main() -> None:
    """Build, verify and serve immutable, content-hashed Triton model repositories."""


for _module in (project, serving, perf, release, intent):
    for _command in _module.COMMANDS:
        main.add_command(_command)
