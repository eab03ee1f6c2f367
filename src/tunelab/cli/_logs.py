"""``tunelab log`` (the manager's log and output, a trial's output) and ``tunelab webui``.

``log stdout`` shows the manager's log (``log/manager.log``: one line per lifecycle event);
``log stderr`` shows what the manager process itself wrote (``log/manager.out``: warnings,
tracebacks of a crash, start-up errors). nnictl's two files map onto these.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable
from pathlib import Path

import click

from tunelab.cli._common import say, target
from tunelab.errors import UsageError

__all__ = ["log", "webui"]

_TAIL = click.option("--tail", "-T", type=click.IntRange(min=1), help="Only the last N lines.")
_HEAD = click.option("--head", "-H", type=click.IntRange(min=1), help="Only the first N lines.")


def _lines(path: Path, head: int | None, tail: int | None) -> Iterable[str]:
    if head is not None and tail is not None:
        raise UsageError("use --head or --tail, not both")
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        if head is not None:
            yield from itertools.islice(handle, head)
        elif tail is not None:
            yield from collections.deque(handle, maxlen=tail)
        else:
            yield from handle


def _show(path: Path, head: int | None, tail: int | None, missing: str) -> None:
    if not path.is_file():
        raise UsageError(missing)
    for line in _lines(path, head, tail):
        click.echo(line, nl=not line.endswith("\n"))


@click.group()
def log() -> None:
    """Show the manager's log and output, or a trial's output."""


@log.command("stdout")
@click.argument("experiment_id", required=False)
@_TAIL
@_HEAD
def log_stdout(experiment_id: str | None, tail: int | None, head: int | None) -> None:
    """The manager's log (log/manager.log)."""
    client = target(experiment_id)
    path = client.log_file("manager.log")
    _show(path, head, tail, f"experiment {client.id} has no manager log yet ({path})")


@log.command("stderr")
@click.argument("experiment_id", required=False)
@_TAIL
@_HEAD
def log_stderr(experiment_id: str | None, tail: int | None, head: int | None) -> None:
    """What the manager process wrote to its stdout and stderr (log/manager.out)."""
    client = target(experiment_id)
    path = client.log_file("manager.out")
    _show(path, head, tail, f"experiment {client.id} has no manager output ({path})")


@log.command("trial")
@click.argument("experiment_id", required=False)
@click.option("--trial_id", "--trial-id", "-T", "trial_id", required=True, help="The trial's id.")
@click.option("--stderr", "show_stderr", is_flag=True, help="Its stderr instead of its stdout.")
@click.option("--head", "-H", type=click.IntRange(min=1), help="Only the first N lines.")
@click.option("--tail", type=click.IntRange(min=1), help="Only the last N lines.")
def log_trial(
    experiment_id: str | None,
    trial_id: str,
    show_stderr: bool,
    head: int | None,
    tail: int | None,
) -> None:
    """A trial's output: the file's path on the first line, then its content."""
    client = target(experiment_id)
    path = client.trial_dir(trial_id) / ("trial.stderr" if show_stderr else "trial.stdout")
    say(str(path))
    if not path.is_file():
        raise UsageError(f"trial {trial_id} has no output file yet ({path}): it has not started")
    for line in _lines(path, head, tail):
        click.echo(line, nl=not line.endswith("\n"))


@click.group()
def webui() -> None:
    """Where a running experiment's web portal and API are."""


@webui.command("url")
@click.argument("experiment_id", required=False)
def webui_url(experiment_id: str | None) -> None:
    """Print the URL of a running (or viewed) experiment."""
    client = target(experiment_id)
    if client.url is None:
        raise UsageError(
            f"experiment {client.id} is not running; open it read-only (tunelab view "
            f"{client.id}) or resume it (tunelab resume {client.id})"
        )
    say(client.url)
