"""The manager process: one per running experiment (``python -m tunelab.engine.manager``).

It creates the experiment's store (given the canonical config on standard input) or opens an
existing one, binds the HTTP port, writes ``manager.json`` (pid, start time, port, token;
mode 0600), and then runs the engine and the REST API on one event loop. It keeps serving
after the experiment is DONE, as NNI's manager does, until it is stopped (SIGTERM, SIGINT or
``DELETE /api/v1/experiment``); stopping ends every running trial first.

Start-up failures are written as one line to ``log/startup-error.txt`` and end the process
with exit code 2 (the user's input: a busy port, a bad config) or 1 (anything else), so that
``tunelab create`` can report them and remove what it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from tunelab.engine._engine import Engine
from tunelab.engine._prepare import prepare
from tunelab.errors import TunelabError
from tunelab.server import create_app
from tunelab.store import DB_FILE, ExperimentStore, ManagerInfo, write_manager_info

__all__ = ["STARTUP_ERROR_FILE", "main"]

STARTUP_ERROR_FILE = "startup-error.txt"
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


def bind_port(host: str, port: int, explicit: bool) -> socket.socket:
    """A listening socket on ``port``, or the next free one unless the port was explicit."""
    last = port if explicit else min(port + 100, 65535)
    for candidate in range(port, last + 1):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
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
    create_config: dict[str, Any] | None,
) -> str:
    """Run the experiment and its API until stopped; return the final experiment state."""
    if create_config is not None:
        prepared = prepare(create_config)
        if (exp_dir / DB_FILE).exists():
            raise StartupError(f"{exp_dir} already holds an experiment", 1)
        sock = bind_port(host, port, explicit_port)
        store = ExperimentStore(exp_dir / DB_FILE)
        store.create_experiment(experiment_id, create_config, prepared.tuner.optimize_mode)
    else:
        store = ExperimentStore(exp_dir / DB_FILE)
        prepared = prepare(store.experiment()["config"])
        sock = bind_port(host, port, explicit_port)

    engine = Engine(
        experiment_id, exp_dir, prepared.settings, store, prepared.service, prepared.tuner
    )
    token = secrets.token_urlsafe(32)
    stopping = asyncio.Event()

    async def request_stop() -> None:
        stopping.set()
        await engine.stop()

    app = create_app(store, token, engine=engine, on_stop=request_stop)
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(request_stop()))

    me = psutil.Process()
    bound_port = sock.getsockname()[1]
    info = ManagerInfo(os.getpid(), me.create_time(), host, bound_port, token, "RUNNING")
    write_manager_info(exp_dir, info)
    logger.info("Experiment %s manager listening on %s", experiment_id, info.url)

    await prepared.service.start()
    server_task = loop.create_task(server.serve(sockets=[sock]))
    status = await engine.run()
    info.status = status
    write_manager_info(exp_dir, info)
    await stopping.wait()
    # Let the answer to the stop request go out before the server closes.
    await asyncio.sleep(0.05)
    server.should_exit = True
    await server_task
    await prepared.service.close()
    info.status = engine.status
    write_manager_info(exp_dir, info)
    store.close()
    return engine.status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunelab.engine.manager")
    parser.add_argument("--exp-dir", required=True, type=Path)
    parser.add_argument("--id", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--explicit-port", action="store_true")
    parser.add_argument("--create", action="store_true", help="read the config from stdin")
    args = parser.parse_args(argv)

    exp_dir: Path = args.exp_dir
    create_config = json.loads(sys.stdin.read()) if args.create else None
    level = (create_config or {}).get("logLevel") or "info"
    _setup_logging(exp_dir, level)
    try:
        asyncio.run(
            serve(exp_dir, args.id, args.host, args.port, args.explicit_port, create_config)
        )
    except StartupError as error:
        return _startup_failed(exp_dir, str(error), error.exit_code)
    except TunelabError as error:
        return _startup_failed(exp_dir, str(error), 2)
    except Exception as error:
        logger.exception("Manager failed")
        return _startup_failed(exp_dir, f"manager failed: {error}", 1)
    return 0


def _startup_failed(exp_dir: Path, message: str, code: int) -> int:
    logger.error("%s", message)
    path = exp_dir / "log" / STARTUP_ERROR_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(message + "\n", encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
