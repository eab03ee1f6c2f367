"""``nni.assessor``: the base class of NNI-style custom assessors.

A custom assessor written for NNI (``class MyAssessor(nni.assessor.Assessor)``) runs in
tunelab's manager unchanged: tunelab wraps it (:mod:`tunelab.assessors`) and calls
``assess_trial`` with each trial's intermediate results. Standard library only.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["AssessResult", "Assessor"]


class AssessResult(enum.Enum):
    """What an assessor says of a trial: go on (Good) or stop it early (Bad)."""

    Good = True
    Bad = False


class Assessor:
    """NNI's Assessor interface.

    ``assess_trial(trial_job_id, trial_history)`` gets a trial's intermediate results so far
    (numbers, oldest first) and returns ``AssessResult.Good`` to let it go on or
    ``AssessResult.Bad`` to stop it early (a bool is accepted too); ``trial_end`` is called
    when a trial ends.
    """

    def assess_trial(self, trial_job_id: str, trial_history: list[Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define assess_trial")

    def trial_end(self, trial_job_id: str, success: bool) -> None:
        """A trial ended (successfully or not)."""

    def load_checkpoint(self) -> None:
        """Kept for NNI code that calls it."""

    def save_checkpoint(self) -> None:
        """Kept for NNI code that calls it."""
