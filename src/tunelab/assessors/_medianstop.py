"""Median stop: stop a trial whose best result so far is worse than the median of what the
completed trials had reached at the same step (NNI's Medianstop, with its arguments).

At step t (the trial's t-th intermediate result, counting from 1) and t >= ``start_step``, the
trial's best value so far is compared with the median, over the trials that succeeded with at
least t results, of their running average at step t. A trial strictly worse than that median
stops; a tie goes on. Without completed trials that reached step t, every trial goes on. NaN
and infinite results count as the worst value.

With an even number of such trials the median is NNI's: the worse of the two middle values
(the lower one when maximizing, the higher one when minimizing), not their mean, so that a
trial NNI keeps is kept here too.
"""

from __future__ import annotations

import math
from typing import ClassVar

from tunelab.assessors._base import Assessor

__all__ = ["MedianstopAssessor"]


class MedianstopAssessor(Assessor):
    """NNI's Medianstop; see the module docstring.

    Args:
        optimize_mode: ``"maximize"`` (default) or ``"minimize"``.
        start_step: assess only from this many intermediate results on (default 0).
    """

    name: ClassVar[str] = "Medianstop"

    def __init__(self, optimize_mode: str = "maximize", start_step: int = 0) -> None:
        if optimize_mode not in ("maximize", "minimize"):
            raise ValueError(
                f"optimize_mode must be 'maximize' or 'minimize' (got {optimize_mode!r})"
            )
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"start_step must be a non-negative int (got {start_step!r})")
        self.maximize = optimize_mode == "maximize"
        self.start_step = start_step
        self._averages: dict[int, list[float]] = {}

    def _score(self, value: float) -> float:
        """Higher is better, and NaN or an infinity is the worst."""
        if not math.isfinite(value):
            return -math.inf
        return value if self.maximize else -value

    def assess(self, trial: int, history: list[float]) -> bool:
        step = len(history)
        if step == 0 or step < self.start_step:
            return True
        best = max(self._score(v) for v in history)
        reached = [
            averages[step - 1] for averages in self._averages.values() if len(averages) >= step
        ]
        if not reached:
            return True
        reached.sort()
        return best >= reached[(len(reached) - 1) // 2]

    def trial_end(self, trial: int, succeeded: bool, history: list[float]) -> None:
        if not succeeded or not history:
            return
        running, total = [], 0.0
        for index, value in enumerate(history, start=1):
            total += self._score(value)
            running.append(total / index)
        self._averages[trial] = running
