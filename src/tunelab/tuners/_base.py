"""The contract between the engine and a tuner.

A tuner chooses the parameters of each new trial and learns from the results; it decides
nothing else. The engine owns the loop (DESIGN.md rule 1): it calls the tuner from one worker
thread, one call at a time and in the order things happened, so a tuner needs no locks.

Who calls what, and when:

1. ``update_search_space(space)`` first, and again whenever the user changes the space while
   the experiment runs. Trials from an earlier space stay in the history; those whose
   parameters do not fit the new space are kept out of the model (field case B11).
2. ``suggest(trial)`` when a slot is free: returns the parameters for the trial numbered
   ``trial`` (the experiment's sequence number, unique and increasing), or raises
   :class:`~tunelab.errors.NoMoreTrials` when there is nothing left to try. A finite space is
   never suggested twice: the base class turns a repeat into an unseen point, and raises
   ``NoMoreTrials`` once every point was tried.
3. ``observe(trial, value, metric)`` when the trial's final result arrives: ``value`` is the
   metric's default number, and may be NaN or an infinity, which every tuner treats as the
   worst result; ``metric`` is the metric as reported (a number or a dict with ``default``).
4. ``trial_end(trial, succeeded)`` when the trial has ended, whatever its state.
5. ``add_trial(trial, parameters)`` tells the tuner about a trial it did not suggest: one the
   user added or reran, or one replayed from the store when a stopped experiment resumes (the
   tuner's state is rebuilt by replaying the history in order, DESIGN.md rule 3; nothing is
   pickled). ``observe`` and ``trial_end`` may follow for it as for any other trial.

A tuner's model must be rebuilt from the history alone: two tuners that saw the same calls
suggest the same parameters. Seeded tuners derive each suggestion's random numbers from the
seed and the trial number, so a seeded experiment is reproducible.

Subclasses implement :meth:`Tuner.propose`, which returns a point of the space (see
:mod:`tunelab.space`); the base class keeps the history, turns results into losses, removes
repeats and renders points into parameters.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tunelab.errors import NoMoreTrials
from tunelab.space import Point, SearchSpace, point_key

__all__ = ["Observation", "Tuner"]

logger = logging.getLogger("tunelab.tuners")

_RETRIES = 16


@dataclass
class Observation:
    """One trial as a tuner knows it.

    Attributes:
        trial: the trial's sequence number.
        parameters: the trial's parameters as the trial received them.
        point: those parameters as a point of the current space, or None when they do not fit
            it (the space changed since).
        loss: the result as a number to minimise (the negated value when maximising; +inf
            for NaN and infinities, the worst); None while no result has arrived.
        ended: whether the trial has ended.
    """

    trial: int
    parameters: dict[str, Any]
    point: Point | None
    loss: float | None = None
    ended: bool = False

    @property
    def running(self) -> bool:
        return not self.ended and self.loss is None


class Tuner:
    """Base class of tuners; see the module docstring for the contract.

    Args:
        optimize_mode: ``"maximize"`` or ``"minimize"``: which way the default metric is
            better.
        seed: seeds every random choice; None picks one and logs it.
    """

    name: ClassVar[str] = ""
    default_mode: ClassVar[str] = "maximize"

    def __init__(self, optimize_mode: str | None = None, seed: int | None = None) -> None:
        mode = self.default_mode if optimize_mode is None else optimize_mode
        if mode not in ("maximize", "minimize"):
            raise ValueError(
                f"optimize_mode must be 'maximize' or 'minimize' (got {optimize_mode!r})"
            )
        self.optimize_mode = mode
        if seed is None:
            seed = secrets.randbits(32)
            logger.info("%s tuner: no seed given, using seed %d", self.name or "The", seed)
        self.seed = int(seed)
        self.space: SearchSpace | None = None
        self.history: dict[int, Observation] = {}
        self._seen: set[tuple[Any, ...]] = set()
        self._seen_index: set[int] = set()

    # -- the contract ----------------------------------------------------------------------

    def update_search_space(self, space: SearchSpace) -> None:
        self.space = space
        self._seen.clear()
        self._seen_index.clear()
        for observation in self.history.values():
            observation.point = space.from_parameters(observation.parameters)
            self._mark_seen(observation.point)
        self.space_changed()

    def suggest(self, trial: int) -> dict[str, Any]:
        space = self._require_space()
        if space.size is not None and len(self._seen_index) >= space.size:
            raise NoMoreTrials(f"all {space.size} points of the search space were tried")

        rng = self.rng(trial)
        point = self.propose(trial, rng)
        if self._is_seen(point):
            point = self._unseen_point(trial, rng)
        parameters = space.to_parameters(point)
        self.history[trial] = Observation(trial, parameters, point)
        self._mark_seen(point)
        return parameters

    def observe(self, trial: int, value: float, metric: Any = None) -> None:
        observation = self.history.get(trial)
        if observation is None:
            logger.warning("%s tuner: result for unknown trial %d ignored", self.name, trial)
            return
        observation.loss = self.loss(value)

    def trial_end(self, trial: int, succeeded: bool) -> None:
        observation = self.history.get(trial)
        if observation is not None:
            observation.ended = True

    def add_trial(self, trial: int, parameters: Mapping[str, Any]) -> None:
        space = self._require_space()
        point = space.from_parameters(parameters)
        self.history[trial] = Observation(trial, dict(parameters), point)
        self._mark_seen(point)

    # -- for subclasses --------------------------------------------------------------------

    def propose(self, trial: int, rng: np.random.Generator) -> Point:
        """A point for the trial numbered ``trial``. The default draws one at random.

        May return a point already tried; the base class then finds an unseen one. Raise
        NoMoreTrials when there is nothing left.
        """
        return self._require_space().sample(rng)

    def space_changed(self) -> None:
        """Called after the search space was set or changed and the history re-read."""

    def rng(self, trial: int) -> np.random.Generator:
        """The random numbers for one suggestion: from the seed and the trial number only."""
        return np.random.default_rng([self.seed, trial])

    def loss(self, value: float) -> float:
        """A result as a number to minimise; NaN and infinities are the worst (+inf)."""
        value = float(value)
        if not math.isfinite(value):
            return math.inf
        return -value if self.optimize_mode == "maximize" else value

    def observed(self) -> list[Observation]:
        """Trials with a result and a point in the current space, in trial order."""
        return [
            o
            for _, o in sorted(self.history.items())
            if o.loss is not None and o.point is not None
        ]

    def running(self) -> list[Observation]:
        """Trials suggested or added but without a result yet, in trial order."""
        return [o for _, o in sorted(self.history.items()) if o.running and o.point is not None]

    # -- repeats ---------------------------------------------------------------------------

    def _require_space(self) -> SearchSpace:
        if self.space is None:
            raise RuntimeError("update_search_space must be called before the tuner is used")
        return self.space

    def _mark_seen(self, point: Point | None) -> None:
        if point is None:
            return
        self._seen.add(point_key(point))
        assert self.space is not None
        index = self.space.index_of(point)
        if index is not None:
            self._seen_index.add(index)

    def _is_seen(self, point: Point) -> bool:
        return point_key(point) in self._seen

    def _unseen_point(self, trial: int, rng: np.random.Generator) -> Point:
        """A point not tried yet: random draws first, then, in a finite space, an untried
        point picked from the rest."""
        space = self._require_space()
        for _ in range(_RETRIES):
            point = space.sample(rng)
            if not self._is_seen(point):
                return point
        if space.size is None:
            # Only the discrete part of an infinite space can repeat; a repeat this often
            # means it is almost used up, and one more repeat does no harm.
            logger.info("%s tuner: trial %d repeats earlier parameters", self.name, trial)
            return space.sample(rng)
        left = space.size - len(self._seen_index)
        if left <= 0:
            raise NoMoreTrials(f"all {space.size} points of the search space were tried")
        for _ in range(_RETRIES):
            index = int(rng.integers(space.size))
            if index not in self._seen_index:
                return space.point_at(index)
        untried = [i for i in range(space.size) if i not in self._seen_index]
        return space.point_at(untried[int(rng.integers(len(untried)))])
