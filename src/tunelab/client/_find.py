"""Finding experiments on this machine: by id, by unique id prefix, by port, or "the one
that runs" when no id is given (as nnictl does)."""

from __future__ import annotations

from tunelab.client._client import ExperimentClient
from tunelab.errors import UsageError
from tunelab.store import experiment_dirs

__all__ = [
    "all_experiments",
    "by_port",
    "live_experiments",
    "resolve",
    "stoppable_experiments",
    "the_running_one",
]


def all_experiments() -> list[ExperimentClient]:
    """Every experiment in ``$TUNELAB_HOME`` (folders and pointer files), sorted by id."""
    return [ExperimentClient(i, d) for i, d in sorted(experiment_dirs().items())]


def live_experiments() -> list[ExperimentClient]:
    """The experiments whose manager is alive (running, done and still serving, or viewed)."""
    return [client for client in all_experiments() if client.running]


def stoppable_experiments() -> list[ExperimentClient]:
    """The experiments a stop applies to: those whose manager is alive, and those whose
    manager died while they ran (trials they started may still run; a stop ends them)."""
    return [client for client in all_experiments() if client.running or client.orphaned]


def _known(ids: list[str]) -> str:
    shown = ", ".join(ids[:30]) + (", ..." if len(ids) > 30 else "")
    return shown or "none"


def resolve(key: str) -> ExperimentClient:
    """The experiment whose id is ``key`` or, failing that, the only one whose id starts with
    it. An unknown id, or a prefix of several ids, is a UsageError naming the candidates."""
    dirs = experiment_dirs()
    if key in dirs:
        return ExperimentClient(key, dirs[key])
    matches = sorted(exp_id for exp_id in dirs if key and exp_id.startswith(key))
    if len(matches) == 1:
        return ExperimentClient(matches[0], dirs[matches[0]])
    if matches:
        raise UsageError(
            f"{key!r} is the start of several experiment ids ({_known(matches)}); "
            "give more of the id"
        )
    raise UsageError(
        f"no experiment with id {key!r} (experiments here: {_known(sorted(dirs))}); "
        "list them with tunelab experiment list --all"
    )


def the_running_one(alternative: str = "") -> ExperimentClient:
    """The single experiment whose manager is alive, for commands given no id.

    Args:
        alternative: what else the command accepts, for the message when several run
            (``", or use --all"``).
    """
    live = live_experiments()
    if len(live) == 1:
        return live[0]
    if not live:
        raise UsageError(
            "no experiment is running; name one by its id (tunelab experiment list --all)"
        )
    raise UsageError(
        f"several experiments are running ({_known([c.id for c in live])}); "
        f"name one by its id{alternative}"
    )


def by_port(port: int) -> ExperimentClient:
    """The experiment whose live manager listens on ``port``."""
    live = live_experiments()
    for client in live:
        if client.port == port:
            return client
    ports = ", ".join(f"{c.id} on {c.port}" for c in live) or "none"
    raise UsageError(f"no experiment of this machine listens on port {port} (running: {ports})")
