"""What the command modules share: the consoles, finding the experiment a command is about,
and how numbers, times and JSON are shown."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tunelab.client import ExperimentClient, resolve, the_running_one
from tunelab.errors import UsageError

__all__ = [
    "err",
    "metric_text",
    "number",
    "out",
    "print_json",
    "say",
    "table",
    "target",
    "time_text",
    "warn",
]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def table(*headers: str) -> Table:
    """A table whose cells wrap a long word (an id, a URL, a path) onto more lines instead of
    cutting it with an ellipsis, so that what is shown can be copied, on a terminal or not."""
    grid = Table()
    for header in headers:
        grid.add_column(header, overflow="fold")
    return grid


def say(text: str) -> None:
    """A line on stdout, printed as it is (no rich markup)."""
    out.print(text, markup=False)


def warn(text: str) -> None:
    """A line on stderr, printed as it is."""
    err.print(text, markup=False)


def read_data_file(filename: str) -> Any:
    """A JSON file, or YAML (NNI's rule for search-space files), read as ``create`` reads a
    searchSpaceFile: a missing, unreadable or malformed file is a one-line UsageError."""
    from tunelab.config._files import FileProblem, read_structured

    try:
        return read_structured(Path(filename), json_first=True)
    except FileProblem as problem:
        raise UsageError(str(problem.issue())) from None


def note_v1_conversion(config: Any) -> None:
    """For an NNI v1 config, show its v2 form (on stderr). Called once the config has been
    found valid, so that a refused one gets its one-line error only."""
    if config.v1_converted:
        warn(
            "note: this is an NNI v1 config; it was converted. The v2 form is:\n"
            + config.v2_yaml()
        )


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value))


def target(experiment_id: str | None, alternative: str = "") -> ExperimentClient:
    """The experiment named by an id or unique id prefix, or the one running (nnictl's rule for
    a command given no id)."""
    if experiment_id:
        return resolve(experiment_id)
    return the_running_one(alternative)


def metric_text(trial: dict[str, Any]) -> str:
    value = trial.get("default")
    if value is None:
        latest = trial.get("latestIntermediate")
        return "" if latest is None else f"{number(latest['value'])} (latest)"
    return number(value)


def number(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("default")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def time_text(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def seconds_text(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
