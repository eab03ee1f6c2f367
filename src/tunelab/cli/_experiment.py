"""``tunelab experiment``: list, show, status, delete, export, import, save and load."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from tunelab.cli._common import (
    out,
    print_json,
    read_data_file,
    say,
    table,
    target,
    time_text,
    warn,
)
from tunelab.client import (
    all_experiments,
    delete_experiment,
    load_config_file,
    load_experiment,
    resolve,
    save_experiment,
    secrets_of,
)
from tunelab.errors import UsageError

__all__ = ["experiment"]


@click.group()
def experiment() -> None:
    """List, inspect, export, import, save, load and delete experiments."""


@experiment.command("list")
@click.option("--all", "-a", "show_all", is_flag=True, help="Include stopped experiments.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def experiment_list(show_all: bool, as_json: bool) -> None:
    """List the running experiments on this machine (every one with --all)."""
    rows: list[dict[str, Any]] = []
    for client in all_experiments():
        if not show_all and not client.running:
            continue
        try:
            view = client.experiment()
        except Exception as error:  # one unreadable experiment must not hide the others
            rows.append({"id": client.id, "status": f"unreadable: {error}"})
            continue
        rows.append(
            {
                "id": client.id,
                "name": view.get("name"),
                "status": view["status"],
                "port": client.port,
                "url": client.url,
                "trials": view.get("trialCount"),
                "startTime": view.get("startTime"),
                "endTime": view.get("endTime"),
                "directory": str(client.dir),
            }
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        say("No experiment is running." if not show_all else "No experiments.")
        return
    grid = table("id", "name", "status", "trials", "url", "started")
    for row in rows:
        grid.add_row(
            row["id"],
            str(row.get("name") or ""),
            row["status"],
            str(row.get("trials", "")),
            row.get("url") or "",
            time_text(row.get("startTime")),
        )
    out.print(grid)


@experiment.command("show")
@click.argument("experiment_id", required=False)
def experiment_show(experiment_id: str | None) -> None:
    """Print an experiment's profile as JSON: config (without secrets), state, budgets used,
    trial counts, best trial."""
    print_json(target(experiment_id).experiment())


@experiment.command("status")
@click.argument("experiment_id", required=False)
def experiment_status(experiment_id: str | None) -> None:
    """Print an experiment's state, errors, budgets and best trial as JSON."""
    view = target(experiment_id).experiment()
    print_json({key: value for key, value in view.items() if key != "config"})


@experiment.command("delete")
@click.argument("experiment_id", required=False)
@click.option("--all", "delete_all", is_flag=True, help="Delete every experiment on this machine.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Stop a running experiment first.")
@click.option(
    "--config",
    "-c",
    "config_file",
    help="The experiment's config file, when its training service needs a password to clean up.",
)
def experiment_delete(
    experiment_id: str | None,
    delete_all: bool,
    yes: bool,
    force: bool,
    config_file: str | None,
) -> None:
    """Delete an experiment: its folder, its trials' files and what it left on remote machines.

    A running experiment is refused unless --force (which stops it). Asks for confirmation on
    a terminal; otherwise --yes is required.
    """
    if delete_all == bool(experiment_id):
        raise UsageError("name the experiment to delete, or use --all (not both)")
    targets = all_experiments() if delete_all else [resolve(experiment_id or "")]
    if not targets:
        say("No experiments to delete.")
        return
    running = [c.id for c in targets if c.running]
    if running and not force:
        many = len(running) > 1
        raise UsageError(
            f"experiment{'s' if many else ''} {', '.join(running)} {'are' if many else 'is'} "
            f"running; stop {'them' if many else 'it'} first (tunelab stop "
            f"{'--all' if many else running[0]}) or add --force, which stops "
            f"{'them' if many else 'it'} before deleting"
        )
    ids = ", ".join(c.id for c in targets)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"deleting {ids} needs confirmation: add --yes")
        if not click.confirm(f"Delete experiment {ids} and all its trials' files?"):
            say("Nothing deleted.")
            sys.exit(1)
    secrets = None
    if config_file is not None:
        secrets = secrets_of(load_config_file(config_file).to_json(include_secrets=True))
    for client in targets:
        for warning in delete_experiment(client, force=force, secrets=secrets):
            warn(f"warning: {warning}")
        say(f"Experiment {client.id} deleted.")


@experiment.command("export")
@click.argument("experiment_id", required=False)
@click.option("--type", "-t", "kind", type=click.Choice(["json", "csv"]), required=True)
@click.option("--filename", "-f", required=True, type=click.Path(dir_okay=False))
@click.option("--intermediate", "-i", is_flag=True, help="Include intermediate results.")
def experiment_export(
    experiment_id: str | None, kind: str, filename: str, intermediate: bool
) -> None:
    """Export every trial's parameters and results as one JSON document or a CSV table."""
    text = target(experiment_id).export(kind, intermediate)
    Path(filename).write_text(text, encoding="utf-8")
    say(f"Exported to {filename}")


def import_records(data: Any, source: str) -> list[dict[str, Any]]:
    """Results to import from NNI's format (``[{parameter, value}, ...]``) or from a tunelab
    JSON export (its trials with a final result)."""
    if isinstance(data, dict) and isinstance(data.get("trials"), list):
        return [
            {"parameter": t.get("parameters"), "value": t.get("value")}
            for t in data["trials"]
            if isinstance(t, dict) and t.get("value") is not None
        ]
    if isinstance(data, list):
        return data
    raise UsageError(
        f"{source}: must hold a JSON list of {{'parameter': {{...}}, 'value': <metric>}} "
        "(NNI's format) or a tunelab JSON export"
    )


@experiment.command("import")
@click.argument("experiment_id", required=False)
@click.option("--filename", "-f", required=True, type=click.Path(dir_okay=False))
def experiment_import(experiment_id: str | None, filename: str) -> None:
    """Feed earlier results to a running experiment's tuner (NNI's JSON list of
    {parameter, value}, or a tunelab JSON export). They are not trials; the tuner learns
    from them and does not try their points again."""
    data = read_data_file(filename)
    records = import_records(data, filename)
    client = target(experiment_id)
    done = client.import_data(records)
    count, outside = done["imported"], done["outsideSpace"]
    say(f"Imported {count} result{'s' if count != 1 else ''} into experiment {client.id}.")
    if outside:
        warn(
            f"warning: {outside} of them do{'es' if outside == 1 else ''} not fit its search "
            "space (a parameter missing, extra or out of its range): the tuner keeps "
            f"{'it' if outside == 1 else 'them'} but cannot learn from "
            f"{'it' if outside == 1 else 'them'} (tunelab config show {client.id})"
        )


@experiment.command("save")
@click.argument("experiment_id", required=False)
@click.option(
    "--path",
    "-p",
    "directory",
    type=click.Path(file_okay=False),
    help="Folder for the zip (default: the current folder).",
)
@click.option(
    "--saveCodeDir", "-s", "save_code", is_flag=True, help="Include the trial code folder."
)
def experiment_save(experiment_id: str | None, directory: str | None, save_code: bool) -> None:
    """Save an experiment (folder, store, logs, trials; optionally its code) to one zip."""
    client = target(experiment_id)
    path = save_experiment(client, Path(directory) if directory else None, include_code=save_code)
    say(f"Experiment {client.id} saved to {path}")


@experiment.command("load")
@click.option("--path", "-p", "archive", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--codeDir",
    "-c",
    "code_dir",
    type=click.Path(),
    help="Where the trial code goes (or is, if the zip holds none); the config points there.",
)
def experiment_load(archive: str, code_dir: str | None) -> None:
    """Restore an experiment saved with 'tunelab experiment save' into this machine's home."""
    client = load_experiment(Path(archive), Path(code_dir) if code_dir else None)
    status = client.experiment()["status"]
    say(f"Experiment {client.id} loaded into {client.dir} ({status}).")
    say(f"  resume it: tunelab resume {client.id}")
