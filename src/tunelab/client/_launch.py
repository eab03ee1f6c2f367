"""Starting a manager (create, resume, view) and waiting until it serves or has failed.

A manager is ``python -m tunelab.engine.manager`` in a session of its own, so it outlives the
command that started it. It writes ``manager.json`` once it listens, or one line to
``log/startup-error.txt`` and exits 2 (the user's input is at fault: a busy port, a config
that cannot run) or 1. A create that fails removes the folder it made, so a failed create
leaves nothing behind: no folder, no process, no port held (field case B26).

Decisions:

- Resume takes any experiment whose manager is not alive: stopped, crashed (killed with its
  store saying RUNNING), DONE (then ``update trialnum`` gives it more budget) or ERROR. A
  running experiment is refused; one open in ``view`` is closed first, since resuming is what
  the view's refusals tell the user to do.
- ``resume --config FILE`` takes the file's secrets (passwords, passphrases, which the store
  never holds). The file must describe the same experiment: the fields that an update may
  change (concurrency, trial number, duration, search space) may differ, and the resumed
  experiment takes the file's values, written before it runs on; the ones that say where
  things are kept (code and working folders, which move when an experiment is saved and loaded
  elsewhere) may differ and are not taken; any other difference is refused, naming the fields.
- View opens a stopped experiment only; viewing one that is already viewed gives the view
  that exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab._pending import PendingManager
from tunelab.client._client import ExperimentClient, ManagerError
from tunelab.errors import UsageError
from tunelab.store import new_experiment_id, read_manager_info, tunelab_home

if TYPE_CHECKING:
    from tunelab.config import ExperimentConfig

__all__ = [
    "DEFAULT_PORT",
    "config_differences",
    "config_updates",
    "create_experiment",
    "load_config_file",
    "resume_experiment",
    "runnable_config",
    "secrets_of",
    "stop_orphaned",
    "view_experiment",
]

DEFAULT_PORT = 8080
# The manager's file for start-up failures (tunelab.engine.manager.STARTUP_ERROR_FILE; that
# module is not imported here because it loads the whole server).
STARTUP_ERROR_FILE = "startup-error.txt"
MANAGER_OUTPUT = "manager.out"
START_TIMEOUT = 300.0
UPDATABLE_FIELDS = frozenset(
    {"trialConcurrency", "maxTrialNumber", "maxExperimentDuration", "searchSpace"}
)
# Fields that say where things are kept or how much is logged, not what the experiment is
# (a loaded experiment has moved; its code folder with it).
_INCIDENTAL_FIELDS = frozenset(
    {
        "searchSpaceFile",
        "logLevel",
        "debug",
        "experimentWorkingDirectory",
        "trialCodeDirectory",
    }
)
# Managers started by this process. A manager outlives the call that started it (and often
# this process); holding its Popen keeps Python from warning that a child still runs when the
# client object goes away, and lets :func:`_reap` collect the ones that have ended.
_STARTED: list[subprocess.Popen[bytes]] = []


# -- configs ----------------------------------------------------------------------------------


def load_config_file(path: str | os.PathLike[str]) -> ExperimentConfig:
    from tunelab.config import load_config

    return load_config(path)


def runnable_config(config: ExperimentConfig, *, debug: bool = False) -> dict[str, Any]:
    """A config's canonical JSON, secrets included (for the manager's stdin), after checking
    that it can run: a ConfigError here means nothing was created."""
    from tunelab.engine._prepare import prepare

    config_json = config.to_json(include_secrets=True)
    if debug:
        config_json["debug"] = True
        config_json["logLevel"] = "debug"
    prepare(config_json)
    return config_json


def secrets_of(config_json: dict[str, Any]) -> dict[str, str]:
    """The passwords and passphrases of a canonical config, by their path."""
    from tunelab.engine.manager import collect_secrets

    return collect_secrets(config_json)


def config_differences(stored: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """The top-level fields in which two canonical configs (without secrets) describe
    different experiments; the fields an update may change are not compared."""
    skip = UPDATABLE_FIELDS | _INCIDENTAL_FIELDS
    stored, given = _without(stored, _INCIDENTAL_FIELDS), _without(given, _INCIDENTAL_FIELDS)
    keys = (set(stored) | set(given)) - skip
    return sorted(key for key in keys if stored.get(key) != given.get(key))


def config_updates(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The fields an update may change whose value in ``given`` differs from ``stored`` (two
    canonical configs), with ``given``'s value (None where ``given`` has none)."""
    return {
        key: given.get(key)
        for key in sorted(UPDATABLE_FIELDS)
        if stored.get(key) != given.get(key)
    }


def _without(config: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """A config without ``fields``, in its training-service sections too (they carry copies
    of the top-level shortcut fields)."""
    out = {key: value for key, value in config.items() if key not in fields}
    sections = out.get("trainingService")
    if isinstance(sections, dict):
        out["trainingService"] = {k: v for k, v in sections.items() if k not in fields}
    elif isinstance(sections, list):
        out["trainingService"] = [
            {k: v for k, v in s.items() if k not in fields} if isinstance(s, dict) else s
            for s in sections
        ]
    return out


# -- starting a manager -----------------------------------------------------------------------


def create_experiment(
    config_json: dict[str, Any],
    port: int | None = None,
    pending: PendingManager | None = None,
) -> ExperimentClient:
    """Create and start an experiment from a config made by :func:`runnable_config`.

    Args:
        config_json: the canonical config, secrets included.
        port: the API's port; None means 8080 or the next free one, a number means that port
            or an error if it is busy.
        pending: a manager started beforehand to save its start-up time (see
            :class:`PendingManager`); None starts one now.

    Raises:
        UsageError: the manager refused the input (the port is busy, the config cannot run).
        ManagerError: the manager failed for another reason (see its log).
    """
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
    try:
        process = pending.take() if pending is not None else None
        return _start(exp_dir, experiment_id, "create", port, {"config": config_json}, process)
    except BaseException:
        shutil.rmtree(exp_dir, ignore_errors=True)
        if pointer is not None:
            pointer.unlink(missing_ok=True)
        raise


def resume_experiment(
    client: ExperimentClient,
    port: int | None = None,
    secrets: dict[str, str] | None = None,
    updates: dict[str, Any] | None = None,
) -> ExperimentClient:
    """Start a manager that takes up a stopped, crashed or finished experiment; ``updates``
    (fields of :data:`UPDATABLE_FIELDS`, see :func:`config_updates`) change it first.

    Raises:
        UsageError: the experiment is running, or the manager refused (busy port, a config
            that cannot run any more).
    """
    client.refresh()
    if client.viewed:
        client.stop()
    elif client.running:
        raise UsageError(
            f"experiment {client.id} is running ({client.url}); only a stopped experiment can "
            f"be resumed (stop it first: tunelab stop {client.id})"
        )
    payload: dict[str, Any] = {"secrets": secrets} if secrets else {}
    if updates:
        payload["updates"] = updates
    return _start(client.dir, client.id, "resume", port, payload)


def view_experiment(client: ExperimentClient, port: int | None = None) -> ExperimentClient:
    """Open a stopped experiment read-only (status VIEWED; every change is refused)."""
    client.refresh()
    if client.viewed:
        return client
    if client.running:
        raise UsageError(
            f"experiment {client.id} is running; its API is at {client.url} (view opens a "
            "stopped experiment)"
        )
    return _start(client.dir, client.id, "view", port, None)


def stop_orphaned(
    client: ExperimentClient, secrets: dict[str, str] | None = None, timeout: float = 60.0
) -> str:
    """Stop an experiment whose manager died: a manager started for that alone takes up its
    trials, records those that ended meanwhile, ends the others (USER_CANCELED, to run again
    on resume) and exits; returns the experiment's state then (STOPPED).

    Raises:
        UsageError: another manager took the experiment meanwhile, or the training service
            cannot be reached with what is known (a password that was not given again).
        ManagerError: the stop failed for another reason, or took longer than ``timeout``
            seconds beyond the training service's own start.
    """
    log_dir = client.dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / STARTUP_ERROR_FILE).unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "tunelab.engine.manager",
        "--exp-dir",
        str(client.dir),
        "--id",
        client.id,
        "--action",
        "stop",
    ]
    payload = json.dumps({"secrets": secrets} if secrets else {})
    with open(log_dir / MANAGER_OUTPUT, "ab") as output:
        try:
            done = subprocess.run(
                command,
                input=payload.encode("utf-8"),
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout + START_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ManagerError(
                f"experiment {client.id}: the stop did not end in time "
                f"(see {log_dir / 'manager.log'})"
            ) from None
    if done.returncode != 0:
        message = _startup_error(client.dir) or f"exit code {done.returncode}"
        text = f"experiment {client.id} could not be stopped: {message}"
        if done.returncode == 2:
            raise UsageError(text)
        raise ManagerError(f"{text} (see {log_dir / 'manager.log'})")
    client.refresh()
    return str(client.experiment()["status"])


def _start(
    exp_dir: Path,
    experiment_id: str,
    action: str,
    port: int | None,
    payload: dict[str, Any] | None,
    process: subprocess.Popen[bytes] | None = None,
) -> ExperimentClient:
    log_dir = exp_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / STARTUP_ERROR_FILE).unlink(missing_ok=True)
    _reap()
    if process is not None and process.poll() is None:
        request = {
            "expDir": str(exp_dir),
            "id": experiment_id,
            "port": DEFAULT_PORT if port is None else port,
            "explicitPort": port is not None,
            "action": action,
            "payload": payload,
        }
        return _serve_with(process, json.dumps(request), exp_dir, experiment_id)
    command = [
        sys.executable,
        "-m",
        "tunelab.engine.manager",
        "--exp-dir",
        str(exp_dir),
        "--id",
        experiment_id,
        "--port",
        str(DEFAULT_PORT if port is None else port),
        "--action",
        action,
    ]
    if port is not None:
        command.append("--explicit-port")
    with open(log_dir / MANAGER_OUTPUT, "ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if payload is not None else subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return _serve_with(
        process, None if payload is None else json.dumps(payload), exp_dir, experiment_id
    )


def _serve_with(
    process: subprocess.Popen[bytes], stdin_text: str | None, exp_dir: Path, experiment_id: str
) -> ExperimentClient:
    """Give a manager its input and wait until it serves (or report why it could not)."""
    try:
        if process.stdin is not None:
            if stdin_text is not None:
                process.stdin.write(stdin_text.encode("utf-8"))
            process.stdin.close()
        _wait_until_serving(process, exp_dir)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise
    _STARTED.append(process)
    client = ExperimentClient(experiment_id, exp_dir)
    client.process = process
    return client


def _reap() -> None:
    """Collect the exit status of managers this process started that have ended."""
    _STARTED[:] = [process for process in _STARTED if process.poll() is None]


def _wait_until_serving(process: subprocess.Popen[bytes], exp_dir: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        info = read_manager_info(exp_dir)
        if info is not None and info.pid == process.pid:
            return
        code = process.poll()
        if code is not None:
            message = _startup_error(exp_dir) or f"the manager exited with code {code}"
            if code == 2:
                raise UsageError(message)
            raise ManagerError(f"{message} (see {exp_dir / 'log' / 'manager.log'})")
        if time.monotonic() > deadline:
            raise ManagerError(f"the manager did not start within {START_TIMEOUT:g} s")
        time.sleep(0.02)


def _startup_error(exp_dir: Path) -> str | None:
    for name in (STARTUP_ERROR_FILE, MANAGER_OUTPUT):
        try:
            text = (exp_dir / "log" / name).read_text("utf-8", errors="replace").strip()
        except OSError:
            continue
        if text:
            return text.splitlines()[-1]
    return None
