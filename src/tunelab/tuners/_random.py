"""Random search: every parameter drawn as NNI's semantics say, never a point twice."""

from __future__ import annotations

from typing import ClassVar

from tunelab.tuners._base import Tuner

__all__ = ["RandomTuner"]


class RandomTuner(Tuner):
    """Draws each trial's parameters at random from the search space.

    Each suggestion's random numbers come from the seed and the trial number alone, so a
    seeded experiment suggests the same parameters whatever the order in which results
    arrive. ``optimize_mode`` does not change the suggestions; it says which trial is best.

    Args:
        optimize_mode: ``"maximize"`` (default) or ``"minimize"``.
        seed: seeds the draws; None picks one and logs it.
    """

    name: ClassVar[str] = "Random"
