"""Starting and stopping experiments: ``create``, ``resume``, ``view``, ``stop``, ``top``."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

import click
from rich.console import Group

from tunelab.cli._common import (
    err,
    metric_text,
    note_v1_conversion,
    out,
    say,
    seconds_text,
    table,
    target,
    warn,
)
from tunelab.client import (
    ExperimentClient,
    ManagerError,
    PendingManager,
    by_port,
    config_differences,
    config_updates,
    create_experiment,
    live_experiments,
    load_config_file,
    resolve,
    resume_experiment,
    runnable_config,
    secrets_of,
    stoppable_experiments,
    view_experiment,
)
from tunelab.client._client import LIVE_STATES
from tunelab.client._signals import Signalled, raise_pending, signals_raise
from tunelab.errors import UsageError

__all__ = ["create", "resume", "stop", "top", "view"]

FINAL = ("DONE", "STOPPED", "ERROR")
_PORT = click.IntRange(1, 65535)


def _started(
    client: ExperimentClient, verb: str, foreground: bool, notes: tuple[str, ...] = ()
) -> None:
    say(f"Experiment {client.id} {verb}: {client.url}")
    for note in notes:
        say(f"  {note}")
    if not foreground:
        say(f"  status: tunelab experiment status {client.id}")
        say(f"  trials: tunelab trial ls {client.id}")
        say(f"  stop:   tunelab stop {client.id}")


@click.command()
@click.option("--config", "-c", "config_file", required=True, help="The experiment config file.")
@click.option(
    "--port",
    "-p",
    type=_PORT,
    default=None,
    help="Port of the experiment's API (default: 8080 or the next free one).",
)
@click.option("--foreground", "-f", is_flag=True, help="Show progress until the experiment ends.")
@click.option("--debug", "-d", is_flag=True, help="Log at debug level (log/manager.log).")
def create(config_file: str, port: int | None, foreground: bool, debug: bool) -> None:
    """Create an experiment from a config file and start it."""
    with PendingManager.claim() as pending:  # its start-up overlaps the checks below
        config = load_config_file(config_file)
        runnable = runnable_config(config, debug=debug)
        note_v1_conversion(config)
        client = create_experiment(runnable, port, pending)
    _started(client, "started", foreground)
    if foreground:
        sys.exit(follow(client))


@click.command()
@click.argument("experiment_id")
@click.option("--port", "-p", type=_PORT, default=None, help="Port (default: 8080 or the next).")
@click.option("--foreground", "-f", is_flag=True, help="Show progress until the experiment ends.")
@click.option(
    "--config",
    "-c",
    "config_file",
    help="The experiment's config file again, for what the store never keeps (SSH "
    "passwords and passphrases); it must describe the same experiment.",
)
def resume(
    experiment_id: str, port: int | None, foreground: bool, config_file: str | None
) -> None:
    """Take up a stopped or crashed experiment where it ended.

    Trials that a stop cancelled, or that a crash interrupted, run again under their own ids
    and are not counted twice; numbering continues.
    """
    client = resolve(experiment_id)
    secrets = None
    updates: dict[str, Any] = {}
    if config_file is not None:
        config = load_config_file(config_file)
        stored, given = client.config(), config.to_json()
        differences = config_differences(stored, given)
        if differences:
            raise UsageError(
                f"{config_file} does not describe experiment {client.id}: "
                f"{', '.join(differences)} differ from its stored config (tunelab config show "
                f"{client.id}); give its own config file, or none"
            )
        secrets = secrets_of(config.to_json(include_secrets=True))
        updates = config_updates(stored, given)
    if client.viewed:
        say(f"Closing the read-only view of experiment {client.id} first.")
    client = resume_experiment(client, port, secrets, updates)
    notes = tuple(
        f"{key} is now {'the one in' if key == 'searchSpace' else json.dumps(value)} "
        f"{'' if key == 'searchSpace' else 'from '}{config_file}"
        for key, value in updates.items()
    )
    _started(client, "resumed", foreground, notes)
    if foreground:
        sys.exit(follow(client))


@click.command()
@click.argument("experiment_id")
@click.option("--port", "-p", type=_PORT, default=None, help="Port (default: 8080 or the next).")
def view(experiment_id: str, port: int | None) -> None:
    """Open a stopped experiment read-only (status VIEWED): its API and data, no changes."""
    client = view_experiment(resolve(experiment_id), port)
    say(f"Experiment {client.id} is open read-only (VIEWED): {client.url}")
    say(f"  close it: tunelab stop {client.id}")


@click.command()
@click.argument("experiment_id", required=False)
@click.option("--port", "-p", type=_PORT, default=None, help="The experiment on this port.")
@click.option("--all", "-a", "stop_all", is_flag=True, help="Stop every running experiment.")
@click.option(
    "--config",
    "-c",
    "config_file",
    default=None,
    help="The experiment's config file, for the passwords and passphrases of its SSH hosts "
    "when its manager died and the stop must reach them itself.",
)
def stop(
    experiment_id: str | None, port: int | None, stop_all: bool, config_file: str | None
) -> None:
    """Stop a running experiment: by id, unique id prefix, 'prefix*' (all that match), port,
    or --all. With none of these: the one that runs.

    Its trials are ended and marked USER_CANCELED; a resume runs them again. An experiment
    whose manager died is stopped too: its trials are taken up, those that ended meanwhile
    recorded and the others ended.
    """
    if sum(bool(x) for x in (experiment_id, port, stop_all)) > 1:
        raise UsageError("give an experiment id, --port or --all, not several")
    secrets = None
    if config_file is not None:
        secrets = secrets_of(load_config_file(config_file).to_json(include_secrets=True))
    if stop_all:
        targets = stoppable_experiments()
        if not targets:
            say("No experiment is running.")
            return
    elif port is not None:
        targets = [by_port(port)]
    elif experiment_id and experiment_id.endswith("*"):
        prefix = experiment_id[:-1]
        targets = [c for c in stoppable_experiments() if c.id.startswith(prefix)]
        if not targets:
            running = ", ".join(c.id for c in live_experiments()) or "none"
            raise UsageError(
                f"no running experiment id starts with {prefix!r} (running: {running})"
            )
    elif experiment_id:
        targets = [resolve(experiment_id)]
    elif not live_experiments():
        orphaned = stoppable_experiments()
        if len(orphaned) != 1:
            raise UsageError("no experiment is running")
        targets = orphaned
    else:
        targets = [target(None, ", or use --all")]
    failed: list[Exception] = []
    for client in targets:
        try:
            _stop_one(client, secrets)
        except (UsageError, ManagerError) as error:
            if len(targets) == 1:
                raise
            # One experiment that cannot be stopped does not keep the others running.
            warn(f"tunelab: {error}")
            failed.append(error)
    stopped = [c.id for c in targets]
    if stop_all:
        say(f"Stopped {len(stopped) - len(failed)} of {len(stopped)} experiments."
            if failed else
            f"Stopped {len(stopped)} experiment{'s' if len(stopped) != 1 else ''}: "
            + ", ".join(stopped))  # fmt: skip
    if failed:
        sys.exit(2 if all(isinstance(e, UsageError) for e in failed) else 1)


def _stop_one(client: ExperimentClient, secrets: dict[str, str] | None) -> None:
    was_viewed = client.viewed
    # Its manager died (a view of it may be open): the stop takes up its trials.
    was_orphaned = client.orphaned or (was_viewed and client.stored_status() in LIVE_STATES)
    status = client.stop(secrets=secrets)
    if was_viewed:
        say(f"Experiment {client.id}: read-only view closed.")
    if was_orphaned:
        say(
            f"Experiment {client.id} stopped ({status}); its manager had died: its trials "
            "were taken up, those that had ended recorded and the others ended."
        )
    elif not was_viewed:
        say(f"Experiment {client.id} stopped ({status}).")


# -- following an experiment ------------------------------------------------------------------


def _progress_line(view: dict[str, Any]) -> str:
    counts = view.get("trialCounts") or {}
    parts = [f"{count} {state.lower()}" for state, count in sorted(counts.items())]
    line = f"{view['status']}  trials: {', '.join(parts) or 'none yet'}"
    best = view.get("best")
    if best:
        line += f"  best: {metric_text(best)} (trial {best['id']})"
    return line


_REFRESH_SECONDS = 0.5


def _wait_for_news(client: ExperimentClient, view: dict[str, Any]) -> None:
    """Wait until the progress line is due again (every half second), or less when the
    experiment's state changes: the manager answers that at once, so the end is seen without
    polling, and the profile, which costs the manager more to build, is fetched at most twice
    a second."""
    started = time.monotonic()
    if client.wait_status(view["status"], _REFRESH_SECONDS) is None:
        time.sleep(max(0.0, _REFRESH_SECONDS - (time.monotonic() - started)))


def follow(client: ExperimentClient) -> int:
    """Show progress until the experiment ends, then the best trial; stop it on Ctrl-C.

    Returns the exit code: 0 when DONE, 1 when it ended otherwise, 130 on Ctrl-C, 143 on
    SIGTERM and 129 on SIGHUP (the experiment is stopped first)."""
    last = ""
    view: dict[str, Any] = {}
    try:
        with signals_raise():  # SIGTERM and SIGHUP stop the experiment, as Ctrl-C does
            while True:
                view = client.experiment()
                line = _progress_line(view)
                if line != last:
                    say(time.strftime("%H:%M:%S ") + line)
                    last = line
                if view["status"] in FINAL:
                    break
                _wait_for_news(client, view)
                raise_pending()
    except (KeyboardInterrupt, Signalled) as interrupted:
        # After SIGHUP the terminal may be gone: what cannot be printed is not waited for.
        with contextlib.suppress(OSError):
            err.print("stopping the experiment...")
        client.stop()
        with contextlib.suppress(OSError):
            err.print(f"Experiment {client.id} stopped.")
        return interrupted.exit_code if isinstance(interrupted, Signalled) else 130
    client.refresh()
    if client.running:
        client.stop()
    elif client.orphaned:
        warn(
            f"tunelab: the manager of experiment {client.id} died (see {client.dir}/log); its "
            f"trials may still run: tunelab resume {client.id} takes them up, tunelab stop "
            f"{client.id} ends them"
        )
        return 1
    for message in view.get("errors") or []:
        warn(f"error: {message}")
    best = view.get("best")  # the final profile holds the best trial
    if best is None:
        say(f"Experiment {client.id} {view['status']}: no trial reported a final result.")
    else:
        say(
            f"Experiment {client.id} {view['status']}. Best trial {best['id']} "
            f"(#{best['sequence']}): {metric_text(best)}"
        )
        say(f"  parameters: {json.dumps(best['parameters'])}")
    return 0 if view["status"] == "DONE" else 1


# -- top --------------------------------------------------------------------------------------


def _top_view() -> Group:
    experiments = table("id", "name", "status", "trials", "best", "used", "url")
    trials = table("experiment", "#", "trial", "status", "duration", "latest", "parameters")
    live = live_experiments()
    for client in live:
        try:
            view = client.experiment()
            rows = client.trials()
        except Exception as error:  # one experiment that ends meanwhile must not end `top`
            experiments.add_row(client.id, "", f"unreadable: {error}", "", "", "", "")
            continue
        counts = view.get("trialCounts") or {}
        experiments.add_row(
            client.id,
            str(view.get("name") or ""),
            str(view["status"]),
            ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())),
            metric_text(view["best"]) if view.get("best") else "",
            seconds_text(view.get("usedSeconds")),
            client.url or "",
        )
        for trial in rows:
            if trial["status"] not in ("RUNNING", "WAITING"):
                continue
            trials.add_row(
                client.id,
                str(trial["sequence"]),
                trial["id"],
                trial["status"],
                seconds_text(trial.get("duration")),
                metric_text(trial),
                json.dumps(trial["parameters"]),
            )
    if not live:
        return Group("No experiment is running.")
    stamp = time.strftime("%H:%M:%S")
    return Group(f"tunelab top  {stamp}", experiments, trials)


@click.command()
@click.option(
    "--time",
    "-t",
    "interval",
    type=click.FloatRange(min=0.1),
    default=3.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print the table once and end.")
def top(interval: float, once: bool) -> None:
    """Running experiments and their running trials, refreshed until Ctrl-C."""
    if once:
        out.print(_top_view())
        return
    from rich.live import Live

    try:
        if not out.is_terminal:  # piped: one table per refresh, nothing redrawn in place
            while True:
                out.print(_top_view())
                time.sleep(interval)
        with Live(_top_view(), console=out, auto_refresh=False) as screen:
            while True:
                time.sleep(interval)
                screen.update(_top_view(), refresh=True)
    except KeyboardInterrupt:
        return
