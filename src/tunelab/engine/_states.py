"""Experiment and trial states (NNI's names) and how a metric's default value is read."""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = [
    "ACTIVE_TRIAL_STATES",
    "FINAL_EXPERIMENT_STATES",
    "FINISHED_TRIAL_STATES",
    "default_value",
    "is_better",
]

# Experiment states.
INITIALIZED = "INITIALIZED"
RUNNING = "RUNNING"
NO_MORE_TRIAL = "NO_MORE_TRIAL"
DONE = "DONE"
STOPPING = "STOPPING"
STOPPED = "STOPPED"
ERROR = "ERROR"
VIEWED = "VIEWED"
FINAL_EXPERIMENT_STATES = frozenset({DONE, STOPPED, ERROR})

# Trial states.
WAITING = "WAITING"
TRIAL_RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
USER_CANCELED = "USER_CANCELED"
SYS_CANCELED = "SYS_CANCELED"
EARLY_STOPPED = "EARLY_STOPPED"
ACTIVE_TRIAL_STATES = frozenset({WAITING, TRIAL_RUNNING})
FINISHED_TRIAL_STATES = frozenset({SUCCEEDED, FAILED, USER_CANCELED, SYS_CANCELED, EARLY_STOPPED})


def default_value(metric: Any) -> float | None:
    """The scalar a metric stands for: the number itself, or a dict's ``default``."""
    if isinstance(metric, dict):
        metric = metric.get("default")
    if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
        return None
    try:
        return float(metric)
    except OverflowError:  # an int beyond a float's range: as large as a float can say
        return math.inf if metric > 0 else -math.inf  # type: ignore[operator]  # an int


def is_better(value: float | None, than: float | None, mode: str) -> bool:
    """Whether ``value`` beats ``than``; NaN and infinities never count as a best value."""
    if value is None or not math.isfinite(value):
        return False
    if than is None:
        return True
    return value > than if mode == "maximize" else value < than
