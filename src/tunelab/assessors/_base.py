"""The contract between the engine and an assessor.

An assessor watches each running trial's intermediate results and says whether it should go
on; it decides nothing else (DESIGN.md rule 1). The engine carries out a stop: the trial ends
EARLY_STOPPED with the reason "stopped by <assessor> at step <n>". Calls come from the same
worker thread as the tuner's, one at a time and in order.

1. ``assess(trial, history)`` after new intermediate results of a running trial arrive:
   ``history`` is the default value of each of them, oldest first (NaN and infinities
   included). Return True to let the trial go on, False to stop it.
2. ``trial_end(trial, succeeded, history)`` when a trial has ended, with its whole history.

The state of an assessor must follow from these calls alone: a resumed experiment replays
``trial_end`` for every finished trial.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["Assessor"]


class Assessor:
    """Base class of assessors; see the module docstring for the contract."""

    name: ClassVar[str] = ""

    def assess(self, trial: int, history: list[float]) -> bool:
        """Whether the trial should go on."""
        return True

    def trial_end(self, trial: int, succeeded: bool, history: list[float]) -> None:
        """A trial ended; ``history`` is its intermediate results."""
