"""The REST API of one experiment, served by its manager on the engine's event loop.

The CLI, the Python API and the web portal all go through this API, so no operation exists in
one of them only (DESIGN.md rule 2: only the manager writes the store).

Safe by default (DESIGN.md rule 9): the manager binds 127.0.0.1; every request that changes
anything needs the experiment's token (``Authorization: Bearer <token>``), from loopback too;
a request from any other address needs it for reading as well. Answers are strict JSON: NaN
and infinities travel as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``. Files
are served from inside the trial's folder or the experiment's log folder only.

Endpoints (all under ``/api/v1``):

* ``GET /experiment``: the profile (config, state, budgets used, counts, best trial);
  ``GET /experiment/changes`` (``status``, ``timeout``) answers once the state is another.
  ``PATCH /experiment`` ``{trialConcurrency, maxTrialNumber, maxExperimentDuration,
  searchSpace}`` (any of them) changes a running experiment. ``DELETE /experiment`` stops it
  and its manager. ``GET /check-status``: ``{status, errors}``.
* ``GET /trials`` (``status``, ``offset``, ``limit``), ``GET /trials/{id}``,
  ``GET /trials/{id}/metrics`` (``type``), ``GET /trials/{id}/files/{path}`` (``stdout``,
  ``stderr`` or a file the trial wrote). ``POST /trials`` ``{parameters}`` adds a trial with
  chosen parameters; ``POST /trials/{id}/rerun`` adds one with a trial's parameters;
  ``DELETE /trials/{id}`` kills a waiting or running trial.
* ``GET /export`` (``format=json|csv``, ``intermediate``); ``POST /import``
  ``[{parameter, value}, ...]`` feeds earlier results to the tuner; answers
  ``{imported, outsideSpace}`` (how many do not fit the search space).
* ``GET /logs/{name}``: a file of the experiment's log folder.

A manager opened with ``view`` serves the same reads and refuses every change with 409.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import numbers
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from tunelab.config import parse_duration
from tunelab.engine import Engine
from tunelab.engine._views import experiment_view, export_csv, export_json, trial_view
from tunelab.errors import TunelabError, UsageError
from tunelab.space import SearchSpace
from tunelab.store import ExperimentStore, decode_json_value, encode_json_value

__all__ = ["API", "create_app"]

API = "/api/v1"
_FILE_ALIASES = {"stdout": "trial.stdout", "stderr": "trial.stderr", "metrics": "metrics.jsonl"}


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host in ("localhost", "testclient"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def inside(folder: Path, relative: str) -> Path | None:
    """``folder / relative`` if it stays inside ``folder`` (no ``..``, no absolute path, no
    symlink out), else None."""
    if not relative or "\x00" in relative:
        return None
    base = folder.resolve()
    target = (base / relative).resolve()
    if target != base and base in target.parents:
        return target
    return None


def create_app(
    store: ExperimentStore,
    token: str,
    *,
    exp_dir: Path | None = None,
    engine: Engine | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    status_override: str | None = None,
) -> FastAPI:
    """The API of one experiment.

    Args:
        store: the experiment's store (read here; only the engine writes).
        token: the secret that every change must carry.
        exp_dir: the experiment's folder (trial files, logs).
        engine: the running engine; None when viewing a stopped experiment (read-only).
        on_stop: called by ``DELETE /api/v1/experiment`` to stop the experiment and manager.
        status_override: the state to show when there is no engine (``VIEWED``).
    """
    app = FastAPI(title="tunelab experiment API", version="1")
    folder = exp_dir or store.path.parent

    @app.exception_handler(TunelabError)
    async def _tunelab_error(request: Request, error: TunelabError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    def _token_ok(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        return bool(given) and secrets.compare_digest(given, token)

    def read_access(request: Request) -> None:
        client = request.client.host if request.client else None
        if not _is_loopback(client) and not _token_ok(request):
            raise HTTPException(401, "this request needs the experiment's token")

    def write_access(request: Request) -> None:
        if not _token_ok(request):
            raise HTTPException(
                401,
                "changes need the experiment's token: send 'Authorization: Bearer <token>' "
                "(the token is in the experiment's manager.json)",
            )

    def live_engine() -> Engine:
        if engine is None:
            raise HTTPException(
                409,
                f"experiment {store.experiment()['id']} is open read-only (view); resume it "
                "to change it: tunelab resume <id>",
            )
        if engine.stopping:
            experiment_id = store.experiment()["id"]
            raise HTTPException(
                409,
                f"experiment {experiment_id} is stopping; changes are refused (once it has "
                f"stopped, tunelab resume {experiment_id} takes it up again)",
            )
        return engine

    def _find(trial_id: str) -> Any:
        trial = store.trial(trial_id)
        if trial is None:
            raise HTTPException(404, f"no trial with id {trial_id!r} in this experiment")
        return trial

    # -- experiment --------------------------------------------------------------------------

    @app.get(f"{API}/experiment", dependencies=[Depends(read_access)])
    def get_experiment() -> dict[str, Any]:
        if engine is None:
            return experiment_view(store, status=status_override)
        view = experiment_view(
            store,
            status=engine.status,
            errors=engine.errors,
            used_seconds=engine.used_seconds(),
        )
        return view

    @app.get(f"{API}/experiment/changes", dependencies=[Depends(read_access)])
    async def wait_changes(
        status: str = "",
        timeout: Annotated[float, Query(ge=0, le=30)] = 10,
    ) -> dict[str, Any]:
        """Answers once the experiment's state is other than ``status``, or after ``timeout``
        seconds: a client sees the end of an experiment at once without polling."""
        if engine is None:
            return {"status": status_override or store.experiment()["status"]}
        return {"status": await engine.wait_status(status, timeout)}

    @app.get(f"{API}/check-status", dependencies=[Depends(read_access)])
    def check_status() -> dict[str, Any]:
        if engine is None:
            info = store.experiment()
            errors = [info["error"]] if info["error"] else []
            return {"status": status_override or info["status"], "errors": errors}
        return {"status": engine.status, "errors": list(engine.errors)}

    @app.patch(f"{API}/experiment", dependencies=[Depends(write_access)])
    async def update_experiment(
        changes: Annotated[dict[str, Any], Body()],
    ) -> dict[str, Any]:
        running = live_engine()
        arguments = _update_arguments(changes)
        await running.update(**arguments)
        return get_experiment()

    @app.delete(f"{API}/experiment", dependencies=[Depends(write_access)])
    async def stop_experiment() -> dict[str, Any]:
        if on_stop is not None:
            await on_stop()
        if engine is not None:
            return {"status": engine.status}
        return {"status": status_override or store.experiment()["status"]}

    # -- trials ------------------------------------------------------------------------------

    @app.get(f"{API}/trials", dependencies=[Depends(read_access)])
    def list_trials(
        status: Annotated[list[str] | None, Query()] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> list[dict[str, Any]]:
        latest = store.latest_intermediates()
        reasons = engine.waiting_reasons() if engine is not None else {}
        views = []
        for trial in store.trials(statuses=status, offset=offset, limit=limit):
            view = trial_view(trial, latest.get(trial.sequence))
            if trial.sequence in reasons:
                view["reason"] = reasons[trial.sequence]
            views.append(view)
        return views

    @app.post(f"{API}/trials", dependencies=[Depends(write_access)], status_code=201)
    async def add_trial(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        running = live_engine()
        parameters = body.get("parameters")
        if not isinstance(parameters, dict):
            raise HTTPException(400, "the body must be {'parameters': {name: value, ...}}")
        record = await running.add_trial(parameters)
        return trial_view(record)

    @app.get(f"{API}/trials/{{trial_id}}", dependencies=[Depends(read_access)])
    def get_trial(trial_id: str) -> dict[str, Any]:
        trial = _find(trial_id)
        view = trial_view(trial, store.latest_intermediates().get(trial.sequence))
        if engine is not None and trial.sequence in engine.waiting_reasons():
            view["reason"] = engine.waiting_reasons()[trial.sequence]
        return view

    @app.delete(f"{API}/trials/{{trial_id}}", dependencies=[Depends(write_access)])
    async def kill_trial(trial_id: str) -> dict[str, Any]:
        running = live_engine()
        _find(trial_id)
        record = await running.kill_trial(trial_id)
        return trial_view(record)

    @app.post(
        f"{API}/trials/{{trial_id}}/rerun", dependencies=[Depends(write_access)], status_code=201
    )
    async def rerun_trial(trial_id: str) -> dict[str, Any]:
        running = live_engine()
        _find(trial_id)
        record = await running.rerun_trial(trial_id)
        return trial_view(record)

    @app.get(f"{API}/trials/{{trial_id}}/metrics", dependencies=[Depends(read_access)])
    def get_trial_metrics(
        trial_id: str, type: Literal["INTERMEDIATE", "FINAL"] | None = None
    ) -> list[dict[str, Any]]:
        trial = _find(trial_id)
        return [
            encode_json_value(
                {
                    "type": metric.type,
                    "step": metric.step,
                    "attempt": metric.attempt,
                    "value": metric.value,
                    "default": metric.default,
                    "time": metric.time,
                }
            )
            for metric in store.metrics(trial.sequence, type)
        ]

    @app.get(f"{API}/trials/{{trial_id}}/files/{{path:path}}", dependencies=[Depends(read_access)])
    def get_trial_file(trial_id: str, path: str) -> FileResponse:
        trial = _find(trial_id)
        trial_dir = folder / "trials" / trial.trial_id
        target = inside(trial_dir, _FILE_ALIASES.get(path, path))
        if target is None:
            raise HTTPException(400, f"{path!r} is not a file inside the trial's folder")
        if not target.is_file():
            raise HTTPException(404, f"trial {trial_id} has no file {path!r}")
        return FileResponse(target, media_type="text/plain; charset=utf-8")

    # -- data --------------------------------------------------------------------------------

    @app.get(f"{API}/export", dependencies=[Depends(read_access)])
    def export(format: Literal["json", "csv"] = "json", intermediate: bool = False) -> Response:
        if format == "csv":
            return PlainTextResponse(
                export_csv(store, intermediate=intermediate), media_type="text/csv"
            )
        return Response(
            export_json(store, intermediate=intermediate), media_type="application/json"
        )

    @app.post(f"{API}/import", dependencies=[Depends(write_access)])
    async def import_data(body: Annotated[list[Any], Body()]) -> dict[str, Any]:
        running = live_engine()
        records = _import_records(body)
        count, outside = await running.import_data(records)
        return {"imported": count, "outsideSpace": outside}

    @app.get(f"{API}/logs/{{name}}", dependencies=[Depends(read_access)])
    def get_log(name: str) -> FileResponse:
        target = inside(folder / "log", name)
        if target is None or not target.is_file():
            raise HTTPException(404, f"no log file {name!r}")
        return FileResponse(target, media_type="text/plain; charset=utf-8")

    return app


def _update_arguments(changes: dict[str, Any]) -> dict[str, Any]:
    """Check a PATCH body; every problem is a 400 naming the field, the rule and the value."""
    known = ("trialConcurrency", "maxTrialNumber", "maxExperimentDuration", "searchSpace")
    unknown = [key for key in changes if key not in known]
    if unknown or not changes:
        raise UsageError(f"an update changes one of {', '.join(known)} (got {sorted(changes)})")
    arguments: dict[str, Any] = {}
    for key, value in changes.items():
        if key in ("trialConcurrency", "maxTrialNumber"):
            top = 1000 if key == "trialConcurrency" else 999_999_999
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise UsageError(f"{key} must be an integer from 1 to {top} (got {value!r})")
            arguments["concurrency" if key == "trialConcurrency" else "max_trials"] = value
        elif key == "maxExperimentDuration":
            try:
                arguments["max_duration"] = parse_duration(value)
            except ValueError as error:
                raise UsageError(f"maxExperimentDuration: {error}") from None
            arguments["max_duration_text"] = value
        else:
            SearchSpace.from_json(value)  # raises SearchSpaceError, shown as a 400
            arguments["search_space"] = value
    return arguments


def _import_records(body: list[Any]) -> list[tuple[dict[str, Any], Any]]:
    records = []
    for index, item in enumerate(body):
        if not isinstance(item, dict) or not isinstance(item.get("parameter"), dict):
            raise UsageError(
                f"import item {index}: must be {{'parameter': {{...}}, 'value': <metric>}} "
                f"(got {str(item)[:80]})"
            )
        value = item.get("value")
        if isinstance(value, str) and value not in ("NaN", "Infinity", "-Infinity"):
            # NNI's export writes each value as a JSON string: read it the same way.
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        value = decode_json_value(value)
        number = value.get("default") if isinstance(value, dict) else value
        if isinstance(number, bool) or not isinstance(number, numbers.Real):
            raise UsageError(
                f"import item {index}: value must be a number or a dict with a numeric "
                f"'default' (got {item.get('value')!r})"
            )
        records.append((item["parameter"], value))
    return records
