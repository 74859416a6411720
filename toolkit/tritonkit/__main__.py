"""``python -m tritonkit``: the same command as the ``tritonkit`` script."""

from tritonkit.cli import main

main()
