"""Removing experiments, and what tunelab left on a training service's machines.

Deleting an experiment removes its folder, its pointer file in ``$TUNELAB_HOME`` (when it
lives under ``experimentWorkingDirectory``) and, through the training service's
``cleanup(experiment_id)``, whatever it left elsewhere (folders on SSH hosts). The store holds
no secrets, so a service that needs a password to clean up is given the config file again.

Decisions: a running experiment is deleted only when asked to stop it first (``force``). One
whose manager died while it ran is stopped first in any case (its trials may still run). If
the service cannot clean up, nothing is deleted (the local files are what tells which remote
folders to clean), unless ``force`` is given: then the local files go and a warning says what
may be left.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from tunelab.client._client import ExperimentClient
from tunelab.errors import UsageError
from tunelab.store import tunelab_home

__all__ = ["clean_platform", "delete_experiment"]

_PASSWORD_HINT = (
    "give the config with --config if it needs a password, or use --force to delete the local "
    "files anyway"
)


def _platforms(config: dict[str, Any]) -> str:
    sections = config.get("trainingService") or {"platform": "local"}
    if isinstance(sections, dict):
        sections = [sections]
    return ", ".join(str(s.get("platform", "local")) for s in sections)


def _cleanup(config: dict[str, Any], experiment_id: str | None) -> None:
    from tunelab.services import create_service

    service = create_service(config)
    # None: everything tunelab left on the platform (`platform clean`).
    asyncio.run(service.cleanup(experiment_id))


def delete_experiment(
    client: ExperimentClient, *, force: bool = False, secrets: dict[str, str] | None = None
) -> list[str]:
    """Delete an experiment and everything it left; returns warnings to show.

    Args:
        client: the experiment.
        force: stop it first if it runs; delete the local files even if the training service
            could not clean up.
        secrets: passwords for the training service (from the config file), by path.

    Raises:
        UsageError: it runs and ``force`` is not given, or the service could not clean up.
    """
    client.refresh()
    if client.running:
        if not force:
            raise UsageError(
                f"experiment {client.id} is running; stop it first (tunelab stop {client.id}) "
                "or delete it with --force, which stops it"
            )
        client.stop()
    warnings: list[str] = []
    if client.orphaned:
        # Its manager died while it ran: trials it started may still run. They are ended
        # first, as a stop ends them, so that nothing runs on without a record of it.
        from tunelab.client._launch import stop_orphaned

        try:
            stop_orphaned(client, secrets)
        except Exception as error:
            message = f"experiment {client.id}: its trials could not be ended ({error})"
            _failed(message, force, "try again, or use --force to delete the local files anyway")
            warnings.append(message)
    try:
        config = client.config()
    except Exception as error:  # an unreadable store must not make the folder undeletable
        config = None
        warnings.append(f"experiment {client.id}: its store could not be read ({error})")
    if config is not None:
        if secrets:
            from tunelab.engine.manager import merge_secrets

            config = merge_secrets(config, secrets)
        try:
            _cleanup(config, client.id)
        except Exception as error:
            message = (
                f"experiment {client.id}: the training service ({_platforms(config)}) could "
                f"not remove what the experiment left there: {error}"
            )
            _failed(message, force)
            warnings.append(message)
    shutil.rmtree(client.dir, ignore_errors=True)
    (tunelab_home() / f"{client.id}.link").unlink(missing_ok=True)
    return warnings


def _failed(message: str, force: bool, hint: str = _PASSWORD_HINT) -> None:
    """A step of a delete failed: without ``force`` nothing is deleted (a UsageError saying
    so, with ``hint``); with it, the caller goes on and warns."""
    if not force:
        raise UsageError(f"{message}; nothing was deleted ({hint})")


def clean_platform(config_json: dict[str, Any]) -> str:
    """Remove everything tunelab left on a config's training service (every experiment's
    folders); returns the platform names."""
    _cleanup(config_json, None)
    return _platforms(config_json)
