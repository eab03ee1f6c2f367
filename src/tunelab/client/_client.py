"""One experiment as a program outside its manager sees it.

A running experiment is reached through its manager's REST API, with the token from its
``manager.json``; a stopped one is read from its store, read-only (DESIGN.md rule 2). Changes
need a live manager: on a stopped experiment they are refused with the command that resumes
it, and on one opened with ``view`` with the commands that close the view and resume it.

Errors: a request the manager refuses (400, 404, 409) becomes a
:class:`~tunelab.errors.UsageError` carrying the manager's own message, so the CLI can print
it as one line and exit 2; a manager that does not answer is a :class:`ManagerError`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil

from tunelab.errors import UsageError
from tunelab.store import (
    DB_FILE,
    ExperimentStore,
    ManagerInfo,
    encode_json_value,
    read_manager_info,
)

__all__ = ["API_PREFIX", "ExperimentClient", "ManagerError"]

# The server's prefix (tunelab.server.API); not imported from there because that module
# loads FastAPI, which a client does not need.
API_PREFIX = "/api/v1"
LIVE_STATES = ("INITIALIZED", "RUNNING", "NO_MORE_TRIAL", "STOPPING")
VIEWED = "VIEWED"
_READ_TIMEOUT = 30.0
_STOP_TIMEOUT = 60.0


class ManagerError(RuntimeError):
    """A manager that could not be started, did not answer, or failed a request."""


class ExperimentClient:
    """One experiment, live or stopped.

    Args:
        experiment_id: the experiment's id.
        exp_dir: its folder (``$TUNELAB_HOME/<id>`` or under ``experimentWorkingDirectory``).
    """

    def __init__(self, experiment_id: str, exp_dir: Path) -> None:
        self.id = experiment_id
        self.dir = exp_dir
        self.manager: ManagerInfo | None = None
        # The manager's process when this program started it (so that it can be reaped).
        self.process: subprocess.Popen[bytes] | None = None
        self.refresh()

    def __repr__(self) -> str:
        state = "viewed" if self.viewed else "running" if self.running else "stopped"
        return f"ExperimentClient({self.id!r}, {state})"

    def refresh(self) -> None:
        """Read ``manager.json`` again (after a start or a stop)."""
        info = read_manager_info(self.dir)
        self.manager = info if info is not None and info.is_alive() else None

    # -- what the manager says about itself --------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a manager serves this experiment (running, done and serving, or viewed)."""
        return self.manager is not None

    @property
    def viewed(self) -> bool:
        """Whether the live manager is a read-only view."""
        return self.manager is not None and self.manager.status == VIEWED

    @property
    def orphaned(self) -> bool:
        """Whether no manager serves this experiment although its store says it runs: its
        manager died (killed, or its machine went down), and trials it started may still run
        until a resume takes them up or a stop ends them."""
        return self.manager is None and self.stored_status() in LIVE_STATES

    def stored_status(self) -> str | None:
        """The state the store holds, as its last manager wrote it (None without a readable
        store): a manager that died leaves a live state there."""
        try:
            store = self._store()
        except Exception:  # no store (a folder being made or removed)
            return None
        try:
            for _ in range(20):  # a store whose writer was just killed may be busy a moment
                with contextlib.suppress(sqlite3.OperationalError):
                    return str(store.experiment()["status"])
                time.sleep(0.05)
            return None
        except Exception:
            return None
        finally:
            store.close()

    @property
    def url(self) -> str | None:
        return None if self.manager is None else self.manager.url

    @property
    def port(self) -> int | None:
        return None if self.manager is None else self.manager.port

    # -- HTTP --------------------------------------------------------------------------------

    def _http(self, timeout: float) -> httpx.Client:
        assert self.manager is not None
        # The manager speaks plain HTTP, so there is no certificate to check; without
        # verify=False httpx loads the whole CA store for every client (20 ms against 2 ms).
        return httpx.Client(
            base_url=self.manager.url + API_PREFIX,
            headers={"Authorization": f"Bearer {self.manager.token}"},
            timeout=timeout,
            verify=False,
        )

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float = _READ_TIMEOUT,
    ) -> httpx.Response:
        """One request to the live manager; the manager's refusals become UsageErrors."""
        try:
            with self._http(timeout) as client:
                response = client.request(method, path, json=body, params=params)
        except httpx.HTTPError as error:
            raise ManagerError(
                f"the manager of experiment {self.id} did not answer ({error}); "
                f"see its log: tunelab log stderr {self.id}"
            ) from None
        if response.status_code < 400:
            return response
        detail = _detail(response)
        if response.status_code in (400, 404, 409, 422):
            raise UsageError(detail)
        raise ManagerError(f"the manager of experiment {self.id} answered {detail}")

    def _get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params=params or None).json()

    def _change(self, method: str, path: str, body: Any = None) -> Any:
        """A request that changes the experiment: refused here unless a manager runs it."""
        self.refresh()
        if self.manager is None:
            status = self.experiment()["status"]
            raise UsageError(
                f"experiment {self.id} is not running ({status}); resume it first: "
                f"tunelab resume {self.id}"
            )
        if self.viewed:
            raise UsageError(
                f"experiment {self.id} is open read-only (tunelab view): nothing can be "
                f"changed; close the view (tunelab stop {self.id}) and resume it "
                f"(tunelab resume {self.id})"
            )
        return self._request(method, path, body=body).json()

    # -- the store, read-only ----------------------------------------------------------------

    def _store(self) -> ExperimentStore:
        return ExperimentStore(self.dir / DB_FILE, readonly=True)

    def _live_read(self, path: str, **params: Any) -> Any:
        """A read from the live manager, or None to fall back on the store."""
        if self.manager is None:
            return None
        try:
            return self._get(path, **params)
        except ManagerError:
            self.refresh()  # it may have ended meanwhile: the store has the answer
            if self.manager is not None:
                raise
            return None

    # -- reads -------------------------------------------------------------------------------

    def experiment(self) -> dict[str, Any]:
        """The profile: config, state, budgets used, trial counts and best trial."""
        live = self._live_read("/experiment")
        if live is not None:
            result: dict[str, Any] = live
            return result
        from tunelab.engine._views import experiment_view

        store = self._store()
        try:
            view = experiment_view(store)
        finally:
            store.close()
        if view["status"] in LIVE_STATES:
            # The store says running but no manager is alive: it died without stopping.
            view["status"] = "STOPPED"
            view["errors"] = [*view["errors"], "the manager is no longer running"]
            view["managerDied"] = True
        return view

    def wait_status(self, than: str, timeout: float) -> str | None:
        """Wait until the live experiment's state is other than ``than`` (or ``timeout``
        seconds passed); returns the state, or None when no manager answers."""
        if self.manager is None:
            return None
        try:
            answer = self._request(
                "GET",
                "/experiment/changes",
                params={"status": than, "timeout": timeout},
                timeout=timeout + _READ_TIMEOUT,
            ).json()
        except ManagerError:
            self.refresh()
            return None
        return str(answer.get("status"))

    def check_status(self) -> dict[str, Any]:
        """``{status, errors}``, and ``managerDied: true`` when the manager died while the
        experiment ran (see :attr:`orphaned`)."""
        live = self._live_read("/check-status")
        if live is not None:
            result: dict[str, Any] = live
            return result
        view = self.experiment()
        state = {"status": view["status"], "errors": view["errors"]}
        if view.get("managerDied"):
            state["managerDied"] = True
        return state

    def config(self) -> dict[str, Any]:
        """The stored config (canonical JSON, without secrets)."""
        store = self._store()
        try:
            config: dict[str, Any] = store.experiment()["config"]
            return config
        finally:
            store.close()

    def trials(self) -> list[dict[str, Any]]:
        live = self._live_read("/trials")
        if live is not None:
            result: list[dict[str, Any]] = live
            return result
        from tunelab.engine._views import trial_view

        store = self._store()
        try:
            latest = store.latest_intermediates()
            trials = [trial_view(t, latest.get(t.sequence)) for t in store.trials()]
            orphaned = store.experiment()["status"] in LIVE_STATES
        finally:
            store.close()
        if orphaned:
            # The store says these run, but no manager watches them: say so, and what to do.
            for trial in trials:
                if trial["status"] in ("RUNNING", "WAITING") and not trial.get("reason"):
                    trial["reason"] = (
                        f"the experiment's manager died; tunelab resume {self.id} takes the "
                        f"trial up, tunelab stop {self.id} ends it"
                    )
        return trials

    def trial(self, trial_id: str) -> dict[str, Any]:
        """One trial by its id; a UsageError naming the known ids if there is none."""
        if self.manager is not None:
            try:
                live = self._live_read(f"/trials/{quote(trial_id, safe='')}")
            except UsageError:
                live = None
            if live is not None:
                result: dict[str, Any] = live
                return result
        for trial in self.trials():
            if trial["id"] == trial_id:
                return trial
        raise UsageError(self._no_trial(trial_id))

    def _no_trial(self, trial_id: str) -> str:
        known = [t["id"] for t in self.trials()]
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        return (
            f"experiment {self.id} has no trial {trial_id!r} "
            f"(its trials: {shown or 'none yet'}); list them with tunelab trial ls {self.id}"
        )

    def metrics(self, trial_id: str, metric_type: str | None = None) -> list[dict[str, Any]]:
        """A trial's metrics in the order reported: ``{type, step, attempt, value, default,
        time}``; ``metric_type`` is ``INTERMEDIATE`` or ``FINAL``."""
        trial = self.trial(trial_id)
        params = {"type": metric_type} if metric_type else {}
        live = self._live_read(f"/trials/{quote(trial_id, safe='')}/metrics", **params)
        if live is not None:
            result: list[dict[str, Any]] = live
            return result
        store = self._store()
        try:
            records = store.metrics(int(trial["sequence"]), metric_type)
        finally:
            store.close()
        return [
            encode_json_value(
                {
                    "type": m.type,
                    "step": m.step,
                    "attempt": m.attempt,
                    "value": m.value,
                    "default": m.default,
                    "time": m.time,
                }
            )
            for m in records
        ]

    def best(self) -> dict[str, Any] | None:
        best: dict[str, Any] | None = self.experiment().get("best")
        return best

    def export(self, kind: str, intermediate: bool = False) -> str:
        """Every trial as one JSON document (``kind="json"``) or a CSV table."""
        if kind not in ("json", "csv"):
            raise UsageError(f"an export is json or csv (got {kind!r})")
        if self.manager is not None:
            params = {"format": kind, "intermediate": intermediate}
            try:
                return self._request("GET", "/export", params=params).text
            except ManagerError:
                self.refresh()
                if self.manager is not None:
                    raise
        from tunelab.engine._views import export_csv, export_json

        store = self._store()
        try:
            if kind == "csv":
                return export_csv(store, intermediate=intermediate)
            return export_json(store, intermediate=intermediate)
        finally:
            store.close()

    # -- files -------------------------------------------------------------------------------

    def log_file(self, name: str) -> Path:
        """A file of the experiment's log folder (``manager.log``, ``manager.out``)."""
        return self.dir / "log" / name

    def trial_dir(self, trial_id: str) -> Path:
        self.trial(trial_id)  # an unknown id is an error naming the known ones
        return self.dir / "trials" / trial_id

    # -- changes -----------------------------------------------------------------------------

    def update(self, **changes: Any) -> dict[str, Any]:
        """Change ``trialConcurrency``, ``maxTrialNumber``, ``maxExperimentDuration`` or
        ``searchSpace`` of the running experiment; returns the new profile."""
        result: dict[str, Any] = self._change("PATCH", "/experiment", changes)
        return result

    def add_trial(self, parameters: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._change("POST", "/trials", {"parameters": parameters})
        return result

    def kill_trial(self, trial_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._change("DELETE", f"/trials/{quote(trial_id, safe='')}")
        return result

    def rerun_trial(self, trial_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._change("POST", f"/trials/{quote(trial_id, safe='')}/rerun")
        return result

    def import_data(self, records: list[dict[str, Any]]) -> dict[str, int]:
        """Feed ``[{parameter, value}, ...]`` to the tuner; returns ``{imported,
        outsideSpace}``: how many were taken, and how many of them do not fit the search
        space (the tuner keeps them but cannot learn from them)."""
        result = self._change("POST", "/import", records)
        return {"imported": int(result["imported"]), "outsideSpace": int(result["outsideSpace"])}

    # -- stop --------------------------------------------------------------------------------

    def stop(self, timeout: float = _STOP_TIMEOUT, secrets: dict[str, str] | None = None) -> str:
        """Stop the experiment and end its manager; returns the experiment's final state.

        The manager is asked (``DELETE /experiment``: every trial is ended and marked
        USER_CANCELED) and then waited for; one that has not ended after ``timeout`` seconds
        is killed with its whole process tree. An experiment whose manager died (see
        :attr:`orphaned`) is stopped by a manager started for that alone, which takes up its
        trials, records those that ended and ends the others (``secrets``: the passwords its
        training service needs, by path, as :func:`~tunelab.client.secrets_of` gives them).
        """
        from tunelab.client._launch import stop_orphaned

        self.refresh()
        if self.manager is None:
            if self.orphaned:
                return stop_orphaned(self, secrets, timeout=timeout)
            status = self.experiment()["status"]
            raise UsageError(f"experiment {self.id} is not running ({status})")
        manager = self.manager
        # A manager that does not take the request is killed below if it does not end.
        with contextlib.suppress(ManagerError, UsageError):
            self._request("DELETE", "/experiment", timeout=timeout)
        _end_process(manager, timeout)
        if self.process is not None:
            self.process.poll()  # reaped by _end_process; let the Popen know
        self.manager = None
        if self.orphaned:
            # The manager ended without finishing the stop (killed meanwhile, or hung and
            # killed above), or it was a read-only view of an experiment whose manager had
            # died: its trials are taken up and ended now.
            return stop_orphaned(self, secrets, timeout=timeout)
        return str(self.experiment()["status"])


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return f"{response.status_code}: {response.text[:200]}"
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return str(data["detail"])
    return f"{response.status_code}: {data}"


def _end_process(manager: ManagerInfo, timeout: float) -> None:
    """Wait for a manager to end; kill it and its descendants if it does not in time."""
    try:
        process = psutil.Process(manager.pid)
        if abs(process.create_time() - manager.create_time) >= 1.0:
            return  # the pid was reused: that manager is gone
    except psutil.NoSuchProcess:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # A manager started by this process is reaped here; others are polled.
            process.wait(0.05)
            return
        except psutil.TimeoutExpired:
            if not manager.is_alive():
                return
        except psutil.NoSuchProcess:
            return
    try:
        children = process.children(recursive=True)
    except psutil.Error:
        children = []
    for victim in [process, *children]:
        with contextlib.suppress(psutil.Error):
            victim.kill()
    with contextlib.suppress(OSError):
        os.killpg(manager.pid, signal.SIGKILL)
    with contextlib.suppress(psutil.Error):
        process.wait(10)
