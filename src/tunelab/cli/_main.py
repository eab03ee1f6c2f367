"""The ``tunelab`` command: nnictl's command tree, with NNI's flag names where they exist.

Every command goes through :mod:`tunelab.client`, which the Python API uses too, so no
operation exists in one of them only. A command about one experiment takes its id or any
unique prefix of it; given none, it means the one experiment that runs (and says which ones
run when there are several).

Bad input (a config that cannot run, an unknown id, a busy port, a change refused by the
experiment) is reported as one line on stderr with exit code 2, never a traceback, and
nothing is left half-created. A manager that fails for another reason gives exit code 1, also
on one line, naming its log.
"""

from __future__ import annotations

import sqlite3
import sys

import click

from tunelab.cli._common import warn
from tunelab.cli._config import config_group, platform
from tunelab.cli._experiment import experiment
from tunelab.cli._logs import log, webui
from tunelab.cli._run import create, resume, stop, top, view
from tunelab.cli._trials import trial, update
from tunelab.client import ManagerError
from tunelab.errors import TunelabError

__all__ = ["cli", "main"]


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command tree; errors become one line on stderr and an exit code
    (2 for the user's input, 1 for a manager that failed, 130 for Ctrl-C)."""
    try:
        code = cli.main(args=argv, prog_name="tunelab", standalone_mode=False)
    except click.exceptions.Abort:
        warn("aborted")
        sys.exit(130)
    except click.UsageError as error:
        where = error.ctx.command_path if error.ctx is not None else "tunelab"
        warn(f"tunelab: {_one_line(error.format_message())} (see '{where} --help')")
        sys.exit(2)
    except click.ClickException as error:
        warn(f"tunelab: {_one_line(error.format_message())}")
        sys.exit(2)
    except TunelabError as error:
        warn(f"tunelab: {_one_line(str(error))}")
        sys.exit(2)
    except ManagerError as error:
        warn(f"tunelab: {_one_line(str(error))}")
        sys.exit(1)
    except sqlite3.Error as error:
        warn(f"tunelab: an experiment's store could not be read ({_one_line(str(error))})")
        sys.exit(1)
    except OSError as error:
        warn(f"tunelab: {_os_error_text(error)}")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


def _os_error_text(error: OSError) -> str:
    """``/a/b: no such file or directory; check the path`` rather than ``[Errno 2] ...``."""
    if error.filename is None or not error.strerror:
        return _one_line(str(error))
    text = f"{error.filename}: {error.strerror[0].lower()}{error.strerror[1:]}"
    if isinstance(error, (FileNotFoundError, NotADirectoryError)):
        text += "; check the path (and that every folder on it exists and is a folder)"
    elif isinstance(error, PermissionError):
        text += "; check who may write there"
    return _one_line(text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "-v", "--version", package_name="tunelab")
def cli() -> None:
    """Run and manage tuning experiments (NNI configs and trial code run unchanged).

    An experiment is named by its id or any unique prefix of it.
    """


for command in (create, resume, view, stop, top, experiment, trial, update, log, webui):
    cli.add_command(command)
cli.add_command(config_group)
cli.add_command(platform)
