"""The manager process: one per running experiment (``python -m tunelab.engine.manager``).

Three ways to start:

* ``--action create``: the canonical config comes on standard input as JSON, secrets
  (passwords, passphrases) included; the store is created with the config *without* its
  secrets (DESIGN.md rule 9), and the experiment starts.
* ``--action resume``: the store exists; the experiment takes up where it stopped or where an
  earlier manager died (see :mod:`tunelab.engine._engine`). Secrets, when the training service
  needs them, come again on standard input (``{"secrets": {...}}``, from the config file the
  user names) or from the environment or an SSH agent. Changed budgets, concurrency or search
  space may come with them (``{"updates": {...}}``, from ``tunelab resume --config``): they
  are written to the store before the experiment runs on.
* ``--action view``: the store is opened read-only and served; every change is refused.
* ``--action stop``: the stop of an experiment whose manager died (``tunelab stop`` of a
  crashed experiment, and ``experiment delete`` before it removes anything): its trials are
  taken up as a resume takes them, those that ended meanwhile are recorded, the others are
  ended, and the process exits with the experiment STOPPED. It serves no API.

Every manager holds the experiment's lock (``manager.lock``) for as long as it runs, so one
experiment never has two managers, whatever the timing of the commands that start them.

The manager binds the HTTP port, writes ``manager.json`` (pid, start time, port, token;
mode 0600), and runs the engine and the REST API on one event loop. It keeps serving after the
experiment is DONE, as NNI's manager does, until it is stopped (SIGTERM, SIGINT or
``DELETE /api/v1/experiment``); stopping ends every running trial first. An update that gives
a DONE experiment more budget starts its loop again.

Start-up failures are written as one line to ``log/startup-error.txt`` and end the process
with exit code 2 (the user's input: a busy port, a bad config) or 1 (anything else), so that
``tunelab create`` can report them and remove what it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import psutil
import uvicorn

from tunelab.engine import _states as st
from tunelab.engine._engine import Engine
from tunelab.engine._prepare import Prepared, prepare
from tunelab.errors import TunelabError
from tunelab.server import create_app
from tunelab.store import (
    DB_FILE,
    ExperimentStore,
    ManagerInfo,
    read_manager_info,
    write_manager_info,
)

__all__ = ["SECRET_KEYS", "STARTUP_ERROR_FILE", "main", "merge_secrets", "strip_secrets"]

STARTUP_ERROR_FILE = "startup-error.txt"
LOCK_FILE = "manager.lock"
SECRET_KEYS = frozenset({"password", "sshPassphrase"})
RESUME_UPDATABLE = frozenset(
    {"trialConcurrency", "maxTrialNumber", "maxExperimentDuration", "searchSpace"}
)
logger = logging.getLogger("tunelab.manager")


class StartupError(TunelabError):
    """The manager could not start; ``exit_code`` 2 means the user's input was at fault."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: the manager handles signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def strip_secrets(config: Any) -> Any:
    """A copy of a config without passwords and passphrases (for the store and the API)."""
    if isinstance(config, dict):
        return {k: strip_secrets(v) for k, v in config.items() if k not in SECRET_KEYS}
    if isinstance(config, list):
        return [strip_secrets(item) for item in config]
    return config


def collect_secrets(config: Any, path: str = "") -> dict[str, str]:
    """The secrets of a config by their path (``trainingService.machineList[0].password``)."""
    found: dict[str, str] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            where = f"{path}.{key}" if path else key
            if key in SECRET_KEYS and isinstance(value, str):
                found[where] = value
            else:
                found.update(collect_secrets(value, where))
    elif isinstance(config, list):
        for index, item in enumerate(config):
            found.update(collect_secrets(item, f"{path}[{index}]"))
    return found


def merge_secrets(config: dict[str, Any], found: dict[str, str]) -> dict[str, Any]:
    """Put secrets collected by :func:`collect_secrets` back into a copy of a config."""
    merged = copy.deepcopy(config)
    for where, value in found.items():
        target: Any = merged
        parts = where.replace("[", ".[").split(".")
        for part in parts[:-1]:
            try:
                target = target[int(part[1:-1])] if part.startswith("[") else target[part]
            except (KeyError, IndexError, TypeError, ValueError):
                target = None
                break
        if isinstance(target, dict):
            target[parts[-1]] = value
    return merged


def bind_port(host: str, port: int, explicit: bool) -> socket.socket:
    """A listening socket on ``port``, or the next free one unless the port was explicit."""
    last = port if explicit else min(port + 100, 65535)
    for candidate in range(port, last + 1):
        # IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets that say TCP, and with
        # Nagle on, every answer on a kept-alive connection waits 40 ms for a delayed ACK.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.bind((host, candidate))
        except OSError:
            sock.close()
            continue
        sock.listen(128)
        sock.set_inheritable(False)
        return sock
    if explicit:
        raise StartupError(f"port {port} is busy; choose another with --port")
    raise StartupError(f"no free port in {port}-{last}; choose one with --port")


def hold_experiment(exp_dir: Path, experiment_id: str) -> int:
    """Take the experiment's lock for as long as this process lives; a second manager of the
    same experiment (two resumes at once, a view beside a resume) is refused, whatever the
    timing. The kernel drops the lock when the process ends, however it ends, so a manager
    killed with SIGKILL leaves nothing to clean up."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(exp_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = read_manager_info(exp_dir)
        who = f" (manager pid {holder.pid})" if holder is not None and holder.is_alive() else ""
        raise StartupError(
            f"experiment {experiment_id} is already open in another manager{who}; "
            f"see tunelab experiment status {experiment_id}, or stop it first"
        ) from None
    return fd


def _setup_logging(exp_dir: Path, level: str) -> None:
    log_dir = exp_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "manager.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("tunelab")
    root.addHandler(handler)
    levels = {"fatal": "CRITICAL", "trace": "DEBUG"}
    root.setLevel(levels.get(level.lower(), level.upper()))


async def serve(
    exp_dir: Path,
    experiment_id: str,
    host: str,
    port: int,
    explicit_port: bool,
    action: str,
    given: dict[str, Any],
) -> str:
    """Run the experiment and its API until stopped; return the final experiment state."""
    hold_experiment(exp_dir, experiment_id)
    if action == "view":
        return await _view(exp_dir, host, port, explicit_port)

    if action == "stop":
        return await _stop_orphaned(exp_dir, experiment_id, given)

    if action == "create":
        config = given["config"]
        if (exp_dir / DB_FILE).exists():
            raise StartupError(f"{exp_dir} already holds an experiment", 1)
        prepared = prepare(config)
        sock = bind_port(host, port, explicit_port)
        store = ExperimentStore(exp_dir / DB_FILE)
        store.create_experiment(experiment_id, strip_secrets(config), prepared.tuner.optimize_mode)
    else:
        if not (exp_dir / DB_FILE).exists():
            raise StartupError(f"{exp_dir} holds no experiment to resume")
        store = ExperimentStore(exp_dir / DB_FILE)
        stored = store.experiment()["config"]
        updates = given.get("updates") or {}
        if updates:
            stored = _updated_config(stored, updates)
        prepared = prepare(merge_secrets(stored, given.get("secrets") or {}))
        sock = bind_port(host, port, explicit_port)
        if updates:
            # Written before the engine starts, so that no trial runs under the old values.
            with store.transaction():
                store.update_experiment(config=stored)
                store.add_event("experiment_updated", {"resumedWith": sorted(updates)})

    engine = _engine(experiment_id, exp_dir, prepared, store)
    token = secrets.token_urlsafe(32)
    stopping = asyncio.Event()

    async def request_stop() -> None:
        stopping.set()
        engine.reopened.set()
        await engine.stop()

    app = create_app(store, token, exp_dir=exp_dir, engine=engine, on_stop=request_stop)
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(request_stop()))

    try:
        await prepared.service.start()
    except BaseException:
        sock.close()
        raise
    info = _write_info(exp_dir, host, sock, token, st.RUNNING)
    logger.info("Experiment %s manager listening on %s", experiment_id, info.url)

    server_task = loop.create_task(server.serve(sockets=[sock]))
    try:
        status = await engine.run(resume=action == "resume")
        while True:
            info.status = status
            write_manager_info(exp_dir, info)
            await engine.reopened.wait()
            engine.reopened.clear()
            if stopping.is_set():
                break
            status = await engine.run()
        await stopping.wait()
        # Let the answer to the stop request go out before the server closes.
        await asyncio.sleep(0.02)
    finally:
        server.should_exit = True
        server.force_exit = True  # no waiting for idle keep-alive connections
        # The stop's answer is out; the process ends soon after, so the server's own
        # shutdown (it looks at should_exit ten times a second) is given little time.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(server_task), 0.05)
        await prepared.service.close()
        await engine.close()
    info.status = engine.status
    write_manager_info(exp_dir, info)
    store.close()
    return engine.status


def _updated_config(stored: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """The stored config with the fields a resume was given again changed (a budget, the
    concurrency, the search space: what ``tunelab update`` may change); None removes one."""
    config = dict(stored)
    for key, value in updates.items():
        if key not in RESUME_UPDATABLE:
            raise StartupError(f"{key} cannot be changed when resuming")
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    if "searchSpace" in updates:
        config.pop("searchSpaceFile", None)
    return config


def _engine(
    experiment_id: str, exp_dir: Path, prepared: Prepared, store: ExperimentStore
) -> Engine:
    return Engine(
        experiment_id,
        exp_dir,
        prepared.settings,
        store,
        prepared.service,
        prepared.tuner,
        prepared.assessor,
    )


async def _stop_orphaned(exp_dir: Path, experiment_id: str, given: dict[str, Any]) -> str:
    """Stop an experiment whose manager died (see the module docstring); no API is served."""
    if not (exp_dir / DB_FILE).exists():
        raise StartupError(f"{exp_dir} holds no experiment to stop")
    store = ExperimentStore(exp_dir / DB_FILE)
    try:
        stored = store.experiment()["config"]
        prepared = prepare(merge_secrets(stored, given.get("secrets") or {}))
        engine = _engine(experiment_id, exp_dir, prepared, store)
        await prepared.service.start()
        try:
            status = await engine.run(resume=True, stop=True)
        finally:
            await prepared.service.close()
            await engine.close()
        logger.info(
            "Experiment %s: its trials were taken up and ended (%s)", experiment_id, status
        )
        info = read_manager_info(exp_dir)
        if info is not None and not info.is_alive():
            info.status = status
            write_manager_info(exp_dir, info)
        return status
    finally:
        store.close()


async def _view(exp_dir: Path, host: str, port: int, explicit_port: bool) -> str:
    if not (exp_dir / DB_FILE).exists():
        raise StartupError(f"{exp_dir} holds no experiment to view")
    store = ExperimentStore(exp_dir / DB_FILE, readonly=True)
    sock = bind_port(host, port, explicit_port)
    token = secrets.token_urlsafe(32)
    stopping = asyncio.Event()

    async def request_stop() -> None:
        stopping.set()

    app = create_app(
        store, token, exp_dir=exp_dir, on_stop=request_stop, status_override=st.VIEWED
    )
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    info = _write_info(exp_dir, host, sock, token, st.VIEWED)
    logger.info("Experiment %s opened read-only on %s", store.experiment()["id"], info.url)
    server_task = loop.create_task(server.serve(sockets=[sock]))
    await stopping.wait()
    await asyncio.sleep(0.05)
    server.should_exit = True
    await server_task
    status = store.experiment()["status"]
    info.status = status
    write_manager_info(exp_dir, info)
    store.close()
    return str(status)


def _write_info(exp_dir: Path, host: str, sock: socket.socket, token: str, status: str) -> Any:
    me = psutil.Process()
    info = ManagerInfo(os.getpid(), me.create_time(), host, sock.getsockname()[1], token, status)
    write_manager_info(exp_dir, info)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunelab.engine.manager")
    parser.add_argument("--exp-dir", type=Path)
    parser.add_argument("--id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--explicit-port", action="store_true")
    parser.add_argument("--action", choices=("create", "resume", "view", "stop"), default="create")
    parser.add_argument(
        "--deferred",
        action="store_true",
        help="read every argument from stdin as JSON; end quietly on an empty stdin",
    )
    args = parser.parse_args(argv)

    if args.deferred:
        # Started before the caller has checked the config, so that this process's imports
        # (half a second) overlap the caller's checks; an empty stdin means "not needed".
        text = sys.stdin.read()
        if not text.strip():
            return 0
        request = json.loads(text)
        args.exp_dir, args.id = Path(request["expDir"]), request["id"]
        args.port, args.explicit_port = request["port"], request["explicitPort"]
        args.action, given = request["action"], request.get("payload") or {}
        _write_output_to(args.exp_dir / "log" / "manager.out")
    else:
        if args.exp_dir is None or args.id is None:
            parser.error("--exp-dir and --id are required without --deferred")
        given = {}
        if args.action != "view":
            text = sys.stdin.read()
            given = json.loads(text) if text.strip() else {}
    exp_dir: Path = args.exp_dir
    _setup_logging(exp_dir, _log_level(exp_dir, given))
    try:
        asyncio.run(
            serve(exp_dir, args.id, args.host, args.port, args.explicit_port, args.action, given)
        )
    except StartupError as error:
        return _startup_failed(exp_dir, str(error), error.exit_code)
    except TunelabError as error:
        return _startup_failed(exp_dir, str(error), 2)
    except Exception as error:
        logger.exception("Manager failed")
        return _startup_failed(exp_dir, f"manager failed: {error}", 1)
    return 0


def _write_output_to(path: Path) -> None:
    """Send this process's stdout and stderr to ``path`` (appended), as a manager started
    with its folder known from the start has them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _log_level(exp_dir: Path, given: dict[str, Any]) -> str:
    """The config's logLevel: from the config given (create) or the stored one."""
    config = given.get("config")
    if config is None and (exp_dir / DB_FILE).exists():
        try:
            store = ExperimentStore(exp_dir / DB_FILE, readonly=True)
            try:
                config = store.experiment()["config"]
            finally:
                store.close()
        except Exception:  # an unreadable store is reported by serve(); log at info till then
            config = None
    level = (config or {}).get("logLevel")
    return str(level) if level else "info"


def _startup_failed(exp_dir: Path, message: str, code: int) -> int:
    logger.error("%s", message)
    path = exp_dir / "log" / STARTUP_ERROR_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(message + "\n", encoding="utf-8")
    return code


def _exit(code: int) -> None:
    """End the process at once: everything it opened is closed by now, and tearing down the
    interpreter (numpy, scipy, the server's modules) would cost a quarter of a second that
    whoever stopped the manager waits for."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
