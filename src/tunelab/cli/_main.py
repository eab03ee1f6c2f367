"""The ``tunelab`` command: create and manage the experiments on this machine.

Bad input (a config that cannot run, an unknown id, a busy port) is reported as one line on
stderr with exit code 2, never a traceback; nothing is left half-created.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tunelab.cli._client import ExperimentClient, resolve
from tunelab.errors import TunelabError, UsageError
from tunelab.store import (
    MANAGER_FILE,
    experiment_dirs,
    new_experiment_id,
    read_manager_info,
    tunelab_home,
)

__all__ = ["cli", "main"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
FINAL = ("DONE", "STOPPED", "ERROR")


def main() -> None:
    """Entry point: run the command tree, turning tunelab's errors into one line and exit 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except TunelabError as error:
        err.print(f"tunelab: {error}", markup=False)
        sys.exit(2)
    except OSError as error:
        err.print(f"tunelab: {error}", markup=False)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tunelab")
def cli() -> None:
    """Run and manage tuning experiments (NNI configs and trial code run unchanged)."""


# -- create -----------------------------------------------------------------------------------


def _load(config_file: str) -> dict[str, Any]:
    from tunelab.config import load_config
    from tunelab.engine._prepare import prepare

    config = load_config(config_file)
    if getattr(config, "v1_converted", False):
        err.print(
            "note: this is an NNI v1 config; it was converted. The v2 form is:\n"
            + config.v2_yaml(),
            markup=False,
        )
    config_json = config.to_json(include_secrets=True)
    prepare(config_json)
    return config_json


def _start_manager(
    config_json: dict[str, Any], port: int, explicit_port: bool
) -> tuple[str, Path]:
    experiment_id = new_experiment_id()
    home = tunelab_home()
    working = config_json.get("experimentWorkingDirectory")
    exp_dir = (Path(working) if working else home) / experiment_id
    pointer = home / f"{experiment_id}.link" if working else None
    exp_dir.mkdir(parents=True)
    (exp_dir / "log").mkdir()
    if pointer is not None:
        home.mkdir(parents=True, exist_ok=True)
        pointer.write_text(json.dumps({"directory": str(exp_dir)}), encoding="utf-8")

    def remove() -> None:
        shutil.rmtree(exp_dir, ignore_errors=True)
        if pointer is not None:
            pointer.unlink(missing_ok=True)

    command = [
        sys.executable,
        "-m",
        "tunelab.engine.manager",
        "--exp-dir",
        str(exp_dir),
        "--id",
        experiment_id,
        "--port",
        str(port),
        "--action",
        "create",
    ]
    if explicit_port:
        command.append("--explicit-port")
    try:
        with open(exp_dir / "log" / "manager.out", "wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert process.stdin is not None
        process.stdin.write(json.dumps({"config": config_json}).encode("utf-8"))
        process.stdin.close()
    except OSError:
        remove()
        raise

    deadline = time.monotonic() + 300
    while True:
        if (exp_dir / MANAGER_FILE).exists():
            return experiment_id, exp_dir
        code = process.poll()
        if code is not None:
            message = _startup_error(exp_dir) or f"the manager exited with code {code}"
            remove()
            raise UsageError(message) if code == 2 else RuntimeError(message)
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            remove()
            raise RuntimeError("the manager did not start within 300 s")
        time.sleep(0.02)


def _startup_error(exp_dir: Path) -> str | None:
    from tunelab.engine.manager import STARTUP_ERROR_FILE

    for name in (STARTUP_ERROR_FILE, "manager.out"):
        try:
            text = (exp_dir / "log" / name).read_text("utf-8").strip()
        except OSError:
            continue
        if text:
            return text.splitlines()[-1]
    return None


@cli.command()
@click.option("--config", "-c", "config_file", required=True, help="The experiment config.")
@click.option(
    "--port",
    "-p",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the experiment's API (default: 8080 or the next free one).",
)
@click.option("--foreground", "-f", is_flag=True, help="Show progress until the experiment ends.")
def create(config_file: str, port: int | None, foreground: bool) -> None:
    """Create an experiment from a config file and start it."""
    config_json = _load(config_file)
    try:
        experiment_id, exp_dir = _start_manager(config_json, port or 8080, port is not None)
    except RuntimeError as error:
        err.print(f"tunelab: {error}", markup=False)
        sys.exit(1)
    client = ExperimentClient(experiment_id, exp_dir)
    url = client.manager.url if client.manager else "?"
    out.print(f"Experiment {experiment_id} started: {url}", markup=False)
    if not foreground:
        out.print(f"  status: tunelab experiment status {experiment_id}", markup=False)
        out.print(f"  trials: tunelab trial ls {experiment_id}", markup=False)
        out.print(f"  stop:   tunelab stop {experiment_id}", markup=False)
        return
    sys.exit(_follow(client))


def _progress_line(view: dict[str, Any]) -> str:
    counts = view.get("trialCounts") or {}
    parts = [f"{count} {state.lower()}" for state, count in sorted(counts.items())]
    line = f"{view['status']}  trials: {', '.join(parts) or 'none yet'}"
    best = view.get("best")
    if best:
        line += f"  best: {_metric_text(best)} (trial {best['id']})"
    return line


def _follow(client: ExperimentClient) -> int:
    """Show progress until the experiment ends, then the best trial; stop on Ctrl-C."""
    last = ""
    view: dict[str, Any] = {}
    try:
        while True:
            view = client.experiment()
            line = _progress_line(view)
            if line != last:
                out.print(time.strftime("%H:%M:%S ") + line, markup=False)
                last = line
            if view["status"] in FINAL:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        err.print("stopping the experiment...")
        client.stop()
        err.print(f"Experiment {client.id} stopped.")
        return 130
    if client.running:
        client.stop()
    for message in view.get("errors") or []:
        err.print(f"error: {message}", markup=False)
    best = client.best()
    if best is None:
        out.print(f"Experiment {client.id} {view['status']}: no trial reported a final result.")
    else:
        out.print(
            f"Experiment {client.id} {view['status']}. Best trial {best['id']} "
            f"(#{best['sequence']}): {_metric_text(best)}",
            markup=False,
        )
        out.print(f"  parameters: {json.dumps(best['parameters'])}", markup=False)
    return 0 if view["status"] == "DONE" else 1


def _metric_text(trial: dict[str, Any]) -> str:
    value = trial.get("default")
    if value is None:
        latest = trial.get("latestIntermediate")
        return "" if latest is None else f"{_number(latest['value'])} (latest)"
    return _number(value)


def _number(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("default")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# -- stop -------------------------------------------------------------------------------------


@cli.command()
@click.argument("experiment_id", required=False)
@click.option("--all", "-a", "stop_all", is_flag=True, help="Stop every running experiment.")
def stop(experiment_id: str | None, stop_all: bool) -> None:
    """Stop a running experiment (by id or unique id prefix), or all of them."""
    if stop_all:
        clients = [ExperimentClient(i, d) for i, d in experiment_dirs().items()]
        running = [c for c in clients if c.running]
        if not running:
            out.print("No experiment is running.")
            return
        for client in running:
            client.stop()
            out.print(f"Experiment {client.id} stopped.")
        return
    if experiment_id is None:
        alive = [i for i, d in experiment_dirs().items() if _alive(d)]
        if len(alive) != 1:
            raise UsageError(
                "name the experiment to stop (running: "
                + (", ".join(alive) or "none")
                + "), or use --all"
            )
        experiment_id = alive[0]
    target = resolve(experiment_id)
    target.stop()
    out.print(f"Experiment {target.id} stopped.")


def _alive(exp_dir: Path) -> bool:
    info = read_manager_info(exp_dir)
    return info is not None and info.is_alive()


# -- experiment -------------------------------------------------------------------------------


@cli.group()
def experiment() -> None:
    """List, inspect and export experiments."""


@experiment.command("list")
@click.option("--all", "-a", "show_all", is_flag=True, help="Include stopped experiments.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def experiment_list(show_all: bool, as_json: bool) -> None:
    """List the running experiments on this machine (all of them with --all)."""
    rows: list[dict[str, Any]] = []
    for experiment_id, exp_dir in experiment_dirs().items():
        client = ExperimentClient(experiment_id, exp_dir)
        if not show_all and not client.running:
            continue
        try:
            view = client.experiment()
        except Exception as error:  # one unreadable experiment must not hide the others
            rows.append({"id": experiment_id, "status": f"unreadable: {error}"})
            continue
        rows.append(
            {
                "id": experiment_id,
                "name": view.get("name"),
                "status": view["status"],
                "url": client.manager.url if client.manager else None,
                "trials": view.get("trialCount"),
                "startTime": view.get("startTime"),
                "directory": str(exp_dir),
            }
        )
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("No experiment is running." if not show_all else "No experiments.")
        return
    table = Table("id", "name", "status", "trials", "url", "started")
    for row in rows:
        table.add_row(
            row["id"],
            str(row.get("name") or ""),
            row["status"],
            str(row.get("trials", "")),
            row.get("url") or "",
            _time(row.get("startTime")),
        )
    out.print(table)


def _time(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


@experiment.command("status")
@click.argument("experiment_id")
def experiment_status(experiment_id: str) -> None:
    """Show an experiment's state, budgets and best trial (JSON)."""
    view = resolve(experiment_id).experiment()
    view = {key: value for key, value in view.items() if key != "config"}
    out.print_json(json.dumps(view))


@experiment.command("export")
@click.argument("experiment_id")
@click.option("--type", "-t", "kind", type=click.Choice(["json", "csv"]), required=True)
@click.option("--filename", "-f", required=True, type=click.Path(dir_okay=False))
@click.option("--intermediate", "-i", is_flag=True, help="Include intermediate results.")
def experiment_export(experiment_id: str, kind: str, filename: str, intermediate: bool) -> None:
    """Export every trial's parameters and results as one JSON document or a CSV table."""
    text = resolve(experiment_id).export(kind, intermediate)
    Path(filename).write_text(text, encoding="utf-8")
    out.print(f"Exported to {filename}", markup=False)


# -- trial ------------------------------------------------------------------------------------


@cli.group()
def trial() -> None:
    """Inspect trials."""


@trial.command("ls")
@click.argument("experiment_id")
@click.option("--head", type=click.IntRange(min=1), help="The N best trials.")
@click.option("--tail", type=click.IntRange(min=1), help="The N worst trials.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def trial_ls(experiment_id: str, head: int | None, tail: int | None, as_json: bool) -> None:
    """List an experiment's trials with their parameters and metrics."""
    if head is not None and tail is not None:
        raise UsageError("use --head or --tail, not both")
    client = resolve(experiment_id)
    trials = client.trials()
    if head is not None or tail is not None:
        mode = client.experiment().get("optimizeMode", "maximize")
        trials = _ranked(trials, mode)
        trials = trials[:head] if head is not None else trials[::-1][: tail or 0]
    if as_json:
        out.print_json(json.dumps(trials))
        return
    table = Table("#", "id", "status", "default metric", "parameters", "reason")
    for item in trials:
        table.add_row(
            str(item["sequence"]),
            item["id"],
            item["status"],
            _metric_text(item),
            json.dumps(item["parameters"]),
            item.get("reason") or "",
        )
    out.print(table)


def _ranked(trials: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Trials with a finite final result, best first (NaN and infinities excluded)."""
    scored = [t for t in trials if isinstance(t.get("default"), (int, float))]
    return sorted(scored, key=lambda t: t["default"], reverse=(mode == "maximize"))


# -- config -----------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Check experiment configs."""


@config_group.command("check")
@click.argument("config_file", type=click.Path())
def config_check(config_file: str) -> None:
    """Validate a config and its search space; start nothing."""
    config_json = _load(config_file)
    space = config_json.get("searchSpace") or {}
    out.print(
        f"{config_file}: valid ({len(space)} parameter{'s' if len(space) != 1 else ''}, "
        f"tuner {config_json.get('tuner', {}).get('name')}, "
        f"{config_json.get('trialConcurrency')} at a time)",
        markup=False,
    )
