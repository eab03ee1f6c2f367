"""The experiment loop (trial states, scheduling, budgets) and the manager process.

The engine's names load on first use, so that readers of a stopped experiment (the CLI, the
views) import the trial states without the tuners and training services.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunelab.engine._states import default_value, is_better

if TYPE_CHECKING:
    from tunelab.engine._engine import Engine, EngineSettings, time_scale

__all__ = ["Engine", "EngineSettings", "default_value", "is_better", "time_scale"]


def __getattr__(name: str) -> Any:
    if name in ("Engine", "EngineSettings", "time_scale"):
        from tunelab.engine import _engine

        return getattr(_engine, name)
    raise AttributeError(f"module 'tunelab.engine' has no attribute {name!r}")
