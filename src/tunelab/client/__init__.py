"""The client side of tunelab: every operation on experiments that the CLI and the Python API
offer, in one place, so that no operation exists in one of them only.

- Finding experiments: :func:`resolve` (an id or a unique id prefix), :func:`the_running_one`,
  :func:`by_port`, :func:`all_experiments`, :func:`live_experiments`.
- Starting managers: :func:`create_experiment`, :func:`resume_experiment`,
  :func:`view_experiment` (and :func:`runnable_config` to check a config first).
- One experiment: :class:`ExperimentClient` reads a live experiment through its REST API and a
  stopped one from its store, read-only; changes go to the live manager; ``stop()`` ends it.
- Whole experiments: :func:`delete_experiment`, :func:`save_experiment`,
  :func:`load_experiment`, :func:`clean_platform`.

Every user error is a :class:`~tunelab.errors.UsageError` (or a ``ConfigError``) whose message
is one line naming what was wrong and how to fix it; a manager that fails is a
:class:`ManagerError`.
"""

from tunelab._pending import PendingManager
from tunelab.client._archive import load_experiment, save_experiment
from tunelab.client._client import API_PREFIX, ExperimentClient, ManagerError
from tunelab.client._find import (
    all_experiments,
    by_port,
    live_experiments,
    resolve,
    stoppable_experiments,
    the_running_one,
)
from tunelab.client._launch import (
    DEFAULT_PORT,
    config_differences,
    config_updates,
    create_experiment,
    load_config_file,
    resume_experiment,
    runnable_config,
    secrets_of,
    stop_orphaned,
    view_experiment,
)
from tunelab.client._manage import clean_platform, delete_experiment

__all__ = [
    "API_PREFIX",
    "DEFAULT_PORT",
    "ExperimentClient",
    "ManagerError",
    "PendingManager",
    "all_experiments",
    "by_port",
    "clean_platform",
    "config_differences",
    "config_updates",
    "create_experiment",
    "delete_experiment",
    "live_experiments",
    "load_config_file",
    "load_experiment",
    "resolve",
    "resume_experiment",
    "runnable_config",
    "save_experiment",
    "secrets_of",
    "stop_orphaned",
    "stoppable_experiments",
    "the_running_one",
    "view_experiment",
]
