"""The experiments on this machine: ``$TUNELAB_HOME`` and each experiment's folder.

``$TUNELAB_HOME`` (default ``~/tunelab-experiments``) holds a folder per experiment. An
experiment whose config sets ``experimentWorkingDirectory`` lives in ``<that>/<id>/`` and
leaves a pointer file ``<id>.link`` (JSON ``{"directory": ...}``) in ``$TUNELAB_HOME`` so that
the list still finds it. There is no shared registry to lock: each manager writes only its own
folder, and whether a manager is alive is judged from the pid and process start time in its
``manager.json``.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "DB_FILE",
    "MANAGER_FILE",
    "ManagerInfo",
    "experiment_dirs",
    "find_experiment",
    "new_experiment_id",
    "new_trial_id",
    "read_manager_info",
    "tunelab_home",
    "write_manager_info",
]

DB_FILE = "experiment.db"
MANAGER_FILE = "manager.json"
_ID_CHARS = string.ascii_lowercase + string.digits


def tunelab_home() -> Path:
    return Path(os.environ.get("TUNELAB_HOME") or "~/tunelab-experiments").expanduser()


def new_experiment_id() -> str:
    return "".join(secrets.choice(_ID_CHARS) for _ in range(8))


def new_trial_id() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(5))


def experiment_dirs() -> dict[str, Path]:
    """Every experiment on this machine, by id (folders and pointer files)."""
    home = tunelab_home()
    found: dict[str, Path] = {}
    if not home.is_dir():
        return found
    for entry in sorted(home.iterdir()):
        if entry.is_dir() and (entry / DB_FILE).exists():
            found[entry.name] = entry
        elif entry.suffix == ".link" and entry.is_file():
            try:
                target = Path(json.loads(entry.read_text("utf-8"))["directory"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (target / DB_FILE).exists():
                found[entry.stem] = target
    return found


def find_experiment(key: str) -> tuple[str, Path] | None:
    """The experiment whose id is ``key`` or, failing that, starts with it (if only one)."""
    dirs = experiment_dirs()
    if key in dirs:
        return key, dirs[key]
    matches = [exp_id for exp_id in dirs if exp_id.startswith(key)]
    if len(matches) == 1:
        return matches[0], dirs[matches[0]]
    return None


@dataclass
class ManagerInfo:
    """What ``manager.json`` says about an experiment's manager process."""

    pid: int
    create_time: float
    host: str
    port: int
    token: str
    status: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def is_alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return abs(process.create_time() - self.create_time) < 1.0 and (
                process.status() != psutil.STATUS_ZOMBIE
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False


def read_manager_info(exp_dir: Path) -> ManagerInfo | None:
    try:
        data: dict[str, Any] = json.loads((exp_dir / MANAGER_FILE).read_text("utf-8"))
        return ManagerInfo(
            pid=int(data["pid"]),
            create_time=float(data["create_time"]),
            host=str(data["host"]),
            port=int(data["port"]),
            token=str(data["token"]),
            status=str(data.get("status", "RUNNING")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_manager_info(exp_dir: Path, info: ManagerInfo) -> None:
    """Write ``manager.json`` atomically with mode 0600 (it holds the token)."""
    path = exp_dir / MANAGER_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(info.__dict__, handle)
    os.replace(tmp, path)
