"""The ``tunelab`` command line."""

from tunelab.cli._algo import algo
from tunelab.cli._main import cli, main

cli.add_command(algo)

__all__ = ["cli", "main"]
