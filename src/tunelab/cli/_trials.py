"""``tunelab trial`` (ls, kill, rerun) and ``tunelab update`` (searchspace, concurrency,
duration, trialnum): looking at trials and changing a running experiment."""

from __future__ import annotations

import json
from typing import Any

import click

from tunelab.cli._common import metric_text, out, print_json, read_data_file, say, table, target
from tunelab.errors import UsageError

__all__ = ["trial", "update"]

_TRIAL_ID = click.option(
    "--trial_id", "--trial-id", "-T", "trial_id", required=True, help="The trial's id."
)


@click.group()
def trial() -> None:
    """List, kill and rerun trials."""


@trial.command("ls")
@click.argument("experiment_id", required=False)
@click.option("--head", type=click.IntRange(min=1), help="The N best trials.")
@click.option("--tail", type=click.IntRange(min=1), help="The N worst trials.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def trial_ls(experiment_id: str | None, head: int | None, tail: int | None, as_json: bool) -> None:
    """List an experiment's trials with their parameters and metrics.

    --head and --tail rank the trials with a finite final result by the default metric.
    """
    if head is not None and tail is not None:
        raise UsageError("use --head or --tail, not both")
    client = target(experiment_id)
    trials = client.trials()
    if head is not None or tail is not None:
        mode = client.experiment().get("optimizeMode", "maximize")
        trials = ranked(trials, mode)
        trials = trials[:head] if head is not None else trials[::-1][: tail or 0]
    if as_json:
        print_json(trials)
        return
    grid = table("#", "id", "status", "default metric", "parameters", "reason")
    for item in trials:
        grid.add_row(
            str(item["sequence"]),
            item["id"],
            item["status"],
            metric_text(item),
            json.dumps(item["parameters"]),
            item.get("reason") or "",
        )
    out.print(grid)


def ranked(trials: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Trials with a finite final result, best first (NaN and infinities excluded: the API
    writes them as strings)."""
    scored = [t for t in trials if isinstance(t.get("default"), (int, float))]
    return sorted(scored, key=lambda t: t["default"], reverse=(mode == "maximize"))


@trial.command("kill")
@click.argument("experiment_id", required=False)
@_TRIAL_ID
def trial_kill(experiment_id: str | None, trial_id: str) -> None:
    """End a waiting or running trial for good (USER_CANCELED; a resume does not rerun it)."""
    client = target(experiment_id)
    client.trial(trial_id)
    view = client.kill_trial(trial_id)
    say(f"Trial {trial_id} of experiment {client.id}: {view['status']} ({view['reason']}).")


@trial.command("rerun")
@click.argument("experiment_id", required=False)
@_TRIAL_ID
def trial_rerun(experiment_id: str | None, trial_id: str) -> None:
    """Run a new trial with the parameters of an earlier one (it counts against
    maxTrialNumber)."""
    client = target(experiment_id)
    client.trial(trial_id)
    view = client.rerun_trial(trial_id)
    say(
        f"Trial {view['id']} (#{view['sequence']}) of experiment {client.id} queued with the "
        f"parameters of trial {trial_id}: {json.dumps(view['parameters'])}"
    )


# -- update -----------------------------------------------------------------------------------


@click.group()
def update() -> None:
    """Change a running experiment: search space, concurrency, duration, trial number."""


def _apply(experiment_id: str | None, field: str, value: Any, shown: str) -> None:
    client = target(experiment_id)
    client.update(**{field: value})
    say(f"Experiment {client.id}: {field} is now {shown}.")


@update.command("searchspace")
@click.argument("experiment_id", required=False)
@click.option(
    "--filename", "-f", required=True, type=click.Path(dir_okay=False), help="A JSON file."
)
def update_searchspace(experiment_id: str | None, filename: str) -> None:
    """Replace the search space; new trials come from it, running ones go on."""
    space = read_data_file(filename)
    if not isinstance(space, dict):
        raise UsageError(f"{filename}: a search space is a JSON object of parameters")
    _apply(experiment_id, "searchSpace", space, f"the one in {filename}")


@update.command("concurrency")
@click.argument("experiment_id", required=False)
@click.option("--value", "-v", required=True, type=int, help="Trials at a time (1 to 1000).")
def update_concurrency(experiment_id: str | None, value: int) -> None:
    """Change how many trials run at a time (running trials are not ended)."""
    _apply(experiment_id, "trialConcurrency", value, str(value))


@update.command("duration")
@click.argument("experiment_id", required=False)
@click.option("--value", "-v", required=True, help="A duration such as 90s, 30m, 1.5h or 2d.")
def update_duration(experiment_id: str | None, value: str) -> None:
    """Change maxExperimentDuration (the running time the experiment may use in all)."""
    _apply(experiment_id, "maxExperimentDuration", value, value)


@update.command("trialnum")
@click.argument("experiment_id", required=False)
@click.option("--value", "-v", required=True, type=int, help="Trials in all (1 to 999999999).")
def update_trialnum(experiment_id: str | None, value: int) -> None:
    """Change maxTrialNumber (a finished experiment with budget left runs again)."""
    _apply(experiment_id, "maxTrialNumber", value, str(value))
