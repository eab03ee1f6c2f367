"""The ``tunelab`` command line."""

from tunelab.cli._main import cli, main

__all__ = ["cli", "main"]
