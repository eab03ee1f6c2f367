"""The REST API of one experiment, served by its manager on the engine's event loop.

Safe by default (DESIGN.md rule 9): the manager binds 127.0.0.1; every request that changes
anything needs the experiment's token (``Authorization: Bearer <token>``), from loopback too;
a request from any other address needs it for reading as well. Answers are strict JSON: NaN
and infinities travel as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response

from tunelab.engine import Engine
from tunelab.engine._views import experiment_view, export_csv, export_json, trial_view
from tunelab.store import ExperimentStore, encode_json_value

__all__ = ["create_app"]

API = "/api/v1"


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost" or host == "testclient":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    store: ExperimentStore,
    token: str,
    *,
    engine: Engine | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """The API of one experiment.

    Args:
        store: the experiment's store (read here; only the engine writes).
        token: the secret that every change must carry.
        engine: the running engine, for live state; None when viewing a stopped experiment.
        on_stop: called by ``DELETE /api/v1/experiment`` to stop the experiment and manager.
    """
    app = FastAPI(title="tunelab experiment API", version="1")

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

    def _latest() -> dict[int, tuple[Any, int, int]]:
        return store.latest_intermediates()

    def _find(trial_id: str) -> Any:
        trial = store.trial(trial_id)
        if trial is None:
            raise HTTPException(404, f"no trial with id {trial_id!r} in this experiment")
        return trial

    @app.get(f"{API}/experiment", dependencies=[Depends(read_access)])
    def get_experiment() -> dict[str, Any]:
        if engine is None:
            return experiment_view(store)
        view = experiment_view(
            store,
            status=engine.status,
            errors=engine.errors,
            used_seconds=engine.used_seconds(),
        )
        return view

    @app.get(f"{API}/check-status", dependencies=[Depends(read_access)])
    def check_status() -> dict[str, Any]:
        if engine is None:
            info = store.experiment()
            return {"status": info["status"], "errors": [info["error"]] if info["error"] else []}
        return {"status": engine.status, "errors": list(engine.errors)}

    @app.delete(f"{API}/experiment", dependencies=[Depends(write_access)])
    async def stop_experiment() -> dict[str, Any]:
        if on_stop is not None:
            await on_stop()
        status = engine.status if engine is not None else store.experiment()["status"]
        return {"status": status}

    @app.get(f"{API}/trials", dependencies=[Depends(read_access)])
    def list_trials(
        status: Annotated[list[str] | None, Query()] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> list[dict[str, Any]]:
        latest = _latest()
        reasons = engine.waiting_reasons() if engine is not None else {}
        views = []
        for trial in store.trials(statuses=status, offset=offset, limit=limit):
            view = trial_view(trial, latest.get(trial.sequence))
            if trial.sequence in reasons:
                view["reason"] = reasons[trial.sequence]
            views.append(view)
        return views

    @app.get(f"{API}/trials/{{trial_id}}", dependencies=[Depends(read_access)])
    def get_trial(trial_id: str) -> dict[str, Any]:
        trial = _find(trial_id)
        return trial_view(trial, _latest().get(trial.sequence))

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
                    "value": metric.value,
                    "default": metric.default,
                    "time": metric.time,
                }
            )
            for metric in store.metrics(trial.sequence, type)
        ]

    @app.get(f"{API}/export", dependencies=[Depends(read_access)])
    def export(format: Literal["json", "csv"] = "json", intermediate: bool = False) -> Response:
        if format == "csv":
            return PlainTextResponse(
                export_csv(store, intermediate=intermediate), media_type="text/csv"
            )
        return Response(
            export_json(store, intermediate=intermediate), media_type="application/json"
        )

    return app
