"""The JSON shapes in which tunelab shows experiments and trials, and the exports.

The REST API, the CLI (which reads a stopped experiment's store directly) and the exports all
build their answers here, so that one experiment reads the same everywhere. Numbers that JSON
cannot hold (NaN, infinities) are written as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``, in JSON and CSV alike.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from tunelab.engine import _states as st
from tunelab.store import ExperimentStore, TrialRecord, encode_json_value, format_number

__all__ = [
    "best_trial",
    "experiment_view",
    "export_csv",
    "export_json",
    "trial_view",
]


def best_trial(trials: list[TrialRecord], mode: str) -> TrialRecord | None:
    """The succeeded trial with the best finite final default metric (NaN and infinities never
    win; nor does a trial that reported a result and then failed or was stopped, as in NNI's
    portal, though its result did reach the tuner)."""
    best: TrialRecord | None = None
    for trial in trials:
        if trial.status != st.SUCCEEDED:
            continue
        if st.is_better(trial.final_default, None if best is None else best.final_default, mode):
            best = trial
    return best


def trial_view(trial: TrialRecord, latest: tuple[Any, int, int] | None = None) -> dict[str, Any]:
    """One trial as the API shows it. ``latest``: (value, step, count) of its intermediates."""
    end = trial.end_time
    duration = None
    if trial.start_time is not None:
        duration = (end if end is not None else _now()) - trial.start_time
    view: dict[str, Any] = {
        "id": trial.trial_id,
        "sequence": trial.sequence,
        "status": trial.status,
        "reason": trial.reason,
        "parameters": trial.parameters,
        "parameterSource": trial.source,
        "submitTime": trial.submit_time,
        "startTime": trial.start_time,
        "endTime": end,
        "duration": duration,
        "attempts": trial.attempts,
        "exitCode": trial.exit_code,
        "finalMetric": trial.final,
        "default": trial.final_default,
        "latestIntermediate": None,
        "intermediateCount": 0,
        # Where it runs or ran: "local", an SSH host, a Ray node; and the GPUs it was given.
        "host": (trial.placement or {}).get("host"),
        "gpuIndices": (trial.placement or {}).get("gpuIndices"),
    }
    if latest is not None:
        value, step, count = latest
        view["latestIntermediate"] = {"value": value, "step": step}
        view["intermediateCount"] = count
    return encode_json_value(view)  # type: ignore[no-any-return]


def _now() -> float:
    import time

    return time.time()


def experiment_view(
    store: ExperimentStore,
    *,
    status: str | None = None,
    errors: list[str] | None = None,
    used_seconds: float | None = None,
) -> dict[str, Any]:
    """The experiment's profile: config, state, budgets used, trial counts and best trial."""
    info = store.experiment()
    config = info["config"]
    mode = info["optimize_mode"]
    trials = store.trials()
    best = best_trial(trials, mode)
    counts = store.count_trials()
    error_list = list(errors or [])
    if info["error"] and info["error"] not in error_list:
        error_list.append(info["error"])
    view = {
        "id": info["id"],
        "name": config.get("experimentName"),
        "status": status or info["status"],
        "errors": error_list,
        "optimizeMode": mode,
        "createdTime": info["created"],
        "startTime": info["start_time"],
        "endTime": info["end_time"],
        "usedSeconds": info["used_seconds"] if used_seconds is None else used_seconds,
        "trialConcurrency": config.get("trialConcurrency"),
        "maxTrialNumber": config.get("maxTrialNumber"),
        "maxExperimentDuration": config.get("maxExperimentDuration"),
        "trialCount": sum(counts.values()),
        "trialCounts": counts,
        "best": None
        if best is None
        else trial_view(best, store.latest_intermediates(best.sequence).get(best.sequence)),
        "config": config,
    }
    return encode_json_value(view)  # type: ignore[no-any-return]


def _export_trials(store: ExperimentStore, intermediate: bool) -> list[dict[str, Any]]:
    per_trial: dict[int, list[Any]] = {}
    if intermediate:
        for metric in store.metrics(metric_type="INTERMEDIATE"):
            per_trial.setdefault(metric.sequence, []).append(metric.value)
    rows = []
    for trial in store.trials():
        row: dict[str, Any] = {
            "id": trial.trial_id,
            "sequence": trial.sequence,
            "status": trial.status,
            "reason": trial.reason,
            "parameters": trial.parameters,
            "value": trial.final,
            "default": trial.final_default,
            "startTime": trial.start_time,
            "endTime": trial.end_time,
        }
        if intermediate:
            row["intermediate"] = per_trial.get(trial.sequence, [])
        rows.append(row)
    return rows


def export_json(store: ExperimentStore, *, intermediate: bool = False) -> str:
    """One JSON document: the experiment's profile and every trial."""
    info = store.experiment()
    document = {
        "experiment": {
            "id": info["id"],
            "name": info["config"].get("experimentName"),
            "status": info["status"],
            "optimizeMode": info["optimize_mode"],
            "config": info["config"],
        },
        "trials": _export_trials(store, intermediate),
    }
    return json.dumps(encode_json_value(document), indent=2, allow_nan=False)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_number(value) if not math.isfinite(value) else repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(encode_json_value(value))
    return str(value)


def export_csv(store: ExperimentStore, *, intermediate: bool = False) -> str:
    """A table: one row per trial, parameters flattened (``opt._name``, ``opt.momentum``),
    dict metrics flattened into ``metric.<key>`` columns, ``default`` the default metric."""
    rows = _export_trials(store, intermediate)
    param_columns: list[str] = []
    metric_columns: list[str] = []
    flat_rows = []
    for row in rows:
        params: dict[str, Any] = {}
        _flatten("", row["parameters"], params)
        metrics: dict[str, Any] = {}
        if isinstance(row["value"], dict):
            _flatten("", {k: v for k, v in row["value"].items() if k != "default"}, metrics)
        for key in params:
            if key not in param_columns:
                param_columns.append(key)
        for key in metrics:
            if key not in metric_columns:
                metric_columns.append(key)
        flat_rows.append((row, params, metrics))
    header = ["id", "sequence", "status", "default"]
    header += [f"param.{name}" for name in param_columns]
    header += [f"metric.{name}" for name in metric_columns]
    header += ["reason", "startTime", "endTime"]
    if intermediate:
        header.append("intermediate")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row, params, metrics in flat_rows:
        line = [row["id"], row["sequence"], row["status"], _cell(row["default"])]
        line += [_cell(params.get(name)) for name in param_columns]
        line += [_cell(metrics.get(name)) for name in metric_columns]
        line += [_cell(row["reason"]), _cell(row["startTime"]), _cell(row["endTime"])]
        if intermediate:
            line.append(_cell(row["intermediate"]))
        writer.writerow(line)
    return out.getvalue()
