"""`python -m composition.cli`: the `govkernel` command."""

from composition.cli.command import main

main()
