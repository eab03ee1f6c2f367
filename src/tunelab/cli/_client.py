"""How the CLI reaches an experiment: its manager's REST API while it runs, or its store,
read-only, once it has stopped (DESIGN.md rule 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tunelab.engine._views import best_trial, experiment_view, export_csv, export_json, trial_view
from tunelab.errors import UsageError
from tunelab.server import API
from tunelab.store import (
    DB_FILE,
    ExperimentStore,
    ManagerInfo,
    experiment_dirs,
    find_experiment,
    read_manager_info,
)

__all__ = ["ExperimentClient", "resolve"]


def resolve(key: str) -> ExperimentClient:
    """The experiment whose id (or unique id prefix) is ``key``."""
    found = find_experiment(key)
    if found is None:
        known = ", ".join(sorted(experiment_dirs())) or "none"
        raise UsageError(f"no experiment with id {key!r} (experiments here: {known})")
    return ExperimentClient(*found)


class ExperimentClient:
    """One experiment, live or stopped."""

    def __init__(self, experiment_id: str, exp_dir: Path) -> None:
        self.id = experiment_id
        self.dir = exp_dir
        info = read_manager_info(exp_dir)
        self.manager: ManagerInfo | None = info if info is not None and info.is_alive() else None

    @property
    def running(self) -> bool:
        return self.manager is not None

    def _http(self) -> httpx.Client:
        assert self.manager is not None
        return httpx.Client(
            base_url=self.manager.url + API,
            headers={"Authorization": f"Bearer {self.manager.token}"},
            timeout=30.0,
        )

    def _get(self, path: str, **params: Any) -> Any:
        with self._http() as client:
            response = client.get(path, params=params)
            response.raise_for_status()
            return response.json()

    def _store(self) -> ExperimentStore:
        return ExperimentStore(self.dir / DB_FILE, readonly=True)

    def experiment(self) -> dict[str, Any]:
        if self.manager is not None:
            try:
                result: dict[str, Any] = self._get("/experiment")
                return result
            except httpx.HTTPError:
                pass
        store = self._store()
        try:
            view = experiment_view(store)
        finally:
            store.close()
        if view["status"] in ("RUNNING", "NO_MORE_TRIAL", "INITIALIZED", "STOPPING"):
            # The store says running but no manager is alive: it died without stopping.
            view["status"] = "STOPPED"
            view["errors"] = [*view["errors"], "the manager is no longer running"]
        return view

    def trials(self) -> list[dict[str, Any]]:
        if self.manager is not None:
            try:
                result: list[dict[str, Any]] = self._get("/trials")
                return result
            except httpx.HTTPError:
                pass
        store = self._store()
        try:
            latest = store.latest_intermediates()
            return [trial_view(t, latest.get(t.sequence)) for t in store.trials()]
        finally:
            store.close()

    def best(self) -> dict[str, Any] | None:
        store = self._store()
        try:
            mode = store.experiment()["optimize_mode"]
            best = best_trial(store.trials(), mode)
            return None if best is None else trial_view(best)
        finally:
            store.close()

    def export(self, kind: str, intermediate: bool) -> str:
        if self.manager is not None:
            try:
                with self._http() as client:
                    response = client.get(
                        "/export", params={"format": kind, "intermediate": intermediate}
                    )
                    response.raise_for_status()
                    return response.text
            except httpx.HTTPError:
                pass
        store = self._store()
        try:
            if kind == "csv":
                return export_csv(store, intermediate=intermediate)
            return export_json(store, intermediate=intermediate)
        finally:
            store.close()

    def stop(self) -> None:
        """Ask the manager to stop the experiment and end; wait until it has."""
        if self.manager is None:
            raise UsageError(f"experiment {self.id} is not running")
        try:
            with self._http() as client:
                client.delete("/experiment").raise_for_status()
        except httpx.HTTPError:
            pass
        import psutil

        try:
            process = psutil.Process(self.manager.pid)
            try:
                process.wait(60)
            except psutil.TimeoutExpired:
                process.kill()
                process.wait(10)
        except psutil.NoSuchProcess:
            pass
        self.manager = None
