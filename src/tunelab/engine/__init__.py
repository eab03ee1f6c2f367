"""The experiment loop (trial states, scheduling, budgets) and the manager process."""

from tunelab.engine._engine import Engine, EngineSettings, time_scale
from tunelab.engine._states import default_value, is_better

__all__ = ["Engine", "EngineSettings", "default_value", "is_better", "time_scale"]
