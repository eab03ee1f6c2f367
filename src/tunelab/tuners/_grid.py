"""Grid search: every point of the discrete part, with continuous dimensions refined.

Discrete parameters (``choice``, ``randint``, and ``quniform``/``qloguniform``, whose values
are the q grid between the bounds: field case B09) are enumerated in full. A continuous
parameter is refined in rounds: its midpoint first, then its quartiles, then its eighths, and
so on, in the parameter's own scale (the log scale for log types; quantiles of the normal
distribution for the normal types, through its inverse CDF). Round r offers every point whose
continuous values lie on the round's mesh and that no earlier round offered, so a grid with a
continuous dimension yields distinct points until the trial budget ends it; a space without
one ends after its last point (NoMoreTrials, then DONE).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from statistics import NormalDist
from typing import ClassVar

import numpy as np

from tunelab.errors import NoMoreTrials
from tunelab.space import Parameter, Point, finish_value
from tunelab.tuners._base import Tuner

__all__ = ["GridSearchTuner"]

_MAX_ROUNDS = 40
_EMPTY_ROUNDS_TO_STOP = 3


def _fractions(depth: int) -> list[float]:
    """The mesh of a round, coarse values first: 1/2, then 1/4 and 3/4, then the eighths."""
    found: list[float] = []
    for level in range(1, depth + 1):
        found.extend(k / 2**level for k in range(1, 2**level, 2))
    return found


class GridSearchTuner(Tuner):
    """Tries the search space's grid in order; see the module docstring.

    Args:
        optimize_mode: which way is better (only used to name the best trial).
    """

    name: ClassVar[str] = "GridSearch"

    def __init__(self, optimize_mode: str | None = None) -> None:
        super().__init__(optimize_mode, seed=0)
        self._points: Iterator[Point] | None = None

    def space_changed(self) -> None:
        self._points = None

    def propose(self, trial: int, rng: np.random.Generator) -> Point:
        if self._points is None:
            self._points = self._walk()
        for point in self._points:
            if not self._is_seen(point):
                return point
        raise NoMoreTrials("the grid has no untried point left")

    def _walk(self) -> Iterator[Point]:
        space = self._require_space()
        continuous = any(_is_continuous(p) for p in space.parameters)
        if not continuous:
            yield from space.points() if space.size is not None else ()
            return
        empty = 0
        for depth in range(1, _MAX_ROUNDS + 1):
            offered = 0
            for point in self._level(space.roots, depth):
                if not self._is_seen(point):
                    offered += 1
                    yield point
            empty = 0 if offered else empty + 1
            if empty >= _EMPTY_ROUNDS_TO_STOP:
                return

    def _level(self, params: tuple[Parameter, ...], depth: int) -> Iterator[Point]:
        """Every point of a (sub-)space on the mesh of a round."""
        choices = [list(self._values(param, depth)) for param in params]
        for combination in itertools.product(*choices):
            point: Point = {}
            for partial in combination:
                point.update(partial)
            yield point

    def _values(self, param: Parameter, depth: int) -> Iterator[Point]:
        """One parameter's partial points: its value, and the sub-space under an option."""
        if param.type == "choice":
            for index, children in enumerate(param.children):
                if not children:
                    yield {param.key: float(index)}
                    continue
                for sub in self._level(children, depth):
                    yield {param.key: float(index), **sub}
        elif param.type == "randint":
            for index in range(param.categories):
                yield {param.key: float(index)}
        elif param.grid is not None:
            for value in param.grid:
                yield {param.key: value}
        else:
            seen = set()
            for fraction in _fractions(depth):
                value = _at_fraction(param, fraction)
                if value not in seen:
                    seen.add(value)
                    yield {param.key: value}


def _is_continuous(param: Parameter) -> bool:
    return not param.is_categorical and param.grid is None


def _at_fraction(param: Parameter, fraction: float) -> float:
    """The value at a fraction of a continuous parameter's range (or of its distribution)."""
    if param.is_normal:
        raw = param.mu + param.sigma * NormalDist().inv_cdf(fraction)
        if param.type in ("lognormal", "qlognormal"):
            raw = math.exp(raw)
    elif param.is_log:
        low, high = math.log(param.low), math.log(param.high)
        raw = math.exp(low + fraction * (high - low))
    else:
        raw = param.low + fraction * (param.high - param.low)
    return finish_value(param, raw)
