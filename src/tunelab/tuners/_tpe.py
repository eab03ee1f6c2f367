"""TPE: the Tree-structured Parzen Estimator, with NNI's arguments and defaults.

After ``n_startup_jobs`` random trials, the history is split by loss: the best ``gamma``
fraction is "good", the rest "bad". For each parameter, a Parzen estimator (a weighted mixture
of truncated normals for numbers, smoothed counts for categories) is fitted to each group;
candidates drawn from the good group's estimator are scored by the log-ratio of the two
densities, and the best candidate wins. Parameters are modelled independently, each from the
trials in which it was active, so nested choices work as a tree: a sub-parameter is modelled
only from the trials that chose its option.

Decisions:

* ``randint`` is modelled as an ordered integer (a Parzen estimator over the integers), where
  NNI treats it as unordered categories: ``randint [150, 400]`` then learns from neighbouring
  values instead of from 250 separate counts. Its values are ints in [low, high) either way.
* Concurrency uses a *constant liar* (``constant_liar_type``, default ``"best"`` as in NNI):
  each running trial counts as if it had already returned the best (or worst, or mean) loss
  seen, so trials started together do not all go to the same place. ``None`` turns it off.
* NaN and infinite results are the worst losses: they always fall in the bad group.
* Weights follow NNI's (and hyperopt's) linear forgetting: the newest ``linear_forgetting``
  trials of a group weigh 1, older ones less, down to 1/n for the oldest.
* The good group has ``ceil(gamma * n)`` trials, at least one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tunelab.space import Parameter, Point, finish_value
from tunelab.tuners._base import Observation, Tuner

__all__ = ["TpeArguments", "TpeTuner"]

_LIARS = ("best", "worst", "mean")
_TINY = 1e-12


@dataclass(frozen=True)
class TpeArguments:
    """``tpe_args`` of the TPE tuner (NNI's names and defaults)."""

    constant_liar_type: str | None = "best"
    n_startup_jobs: int = 20
    n_ei_candidates: int = 24
    linear_forgetting: int = 25
    prior_weight: float = 1.0
    gamma: float = 0.25

    def __post_init__(self) -> None:
        if self.constant_liar_type is not None and self.constant_liar_type not in _LIARS:
            raise ValueError(
                "tpe_args.constant_liar_type must be 'best', 'worst', 'mean' or null "
                f"(got {self.constant_liar_type!r})"
            )
        for name in ("n_startup_jobs", "n_ei_candidates", "linear_forgetting"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (0 if name == "n_startup_jobs" else 1)
            ):
                raise ValueError(f"tpe_args.{name} must be a positive int (got {value!r})")
        if not 0 < self.gamma < 1:
            raise ValueError(f"tpe_args.gamma must lie in (0, 1) (got {self.gamma!r})")
        if not self.prior_weight > 0:
            raise ValueError(f"tpe_args.prior_weight must be > 0 (got {self.prior_weight!r})")


class TpeTuner(Tuner):
    """The TPE tuner; see the module docstring.

    Args:
        optimize_mode: ``"minimize"`` (the default, as in NNI) or ``"maximize"``.
        seed: seeds every draw; None picks one and logs it.
        tpe_args: the algorithm's settings, as :class:`TpeArguments` fields.
    """

    name: ClassVar[str] = "TPE"
    default_mode: ClassVar[str] = "minimize"

    def __init__(
        self,
        optimize_mode: str | None = None,
        seed: int | None = None,
        tpe_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optimize_mode, seed)
        self.args = TpeArguments(**(tpe_args or {}))

    def propose(self, trial: int, rng: np.random.Generator) -> Point:
        space = self._require_space()
        history = self._history_with_liars()
        if len(history) < max(self.args.n_startup_jobs, 1):
            return space.sample(rng)

        ranked = sorted(history, key=lambda item: (item[1], item[0].trial))
        n_good = max(1, math.ceil(self.args.gamma * len(ranked)))
        good = [o for o, _ in ranked[:n_good]]
        bad = [o for o, _ in ranked[n_good:]]
        point: Point = {}
        self._propose_level(space.roots, good, bad, rng, point)
        return point

    def _history_with_liars(self) -> list[tuple[Observation, float]]:
        observed = [(o, o.loss) for o in self.observed() if o.loss is not None]
        liar = self._liar([loss for _, loss in observed])
        if liar is None:
            return observed
        return observed + [(o, liar) for o in self.running()]

    def _liar(self, losses: list[float]) -> float | None:
        kind = self.args.constant_liar_type
        if kind is None or not losses:
            return None
        finite = [loss for loss in losses if math.isfinite(loss)]
        if not finite:
            return math.inf
        if kind == "best":
            return min(finite)
        if kind == "worst":
            return max(finite)
        return sum(finite) / len(finite)

    def _propose_level(
        self,
        params: tuple[Parameter, ...],
        good: list[Observation],
        bad: list[Observation],
        rng: np.random.Generator,
        point: Point,
    ) -> None:
        for param in params:
            good_values = _values_of(param, good)
            bad_values = _values_of(param, bad)
            if param.type == "choice":
                value = self._choose_category(param.categories, good_values, bad_values, rng)
            else:
                value = self._choose_number(param, good_values, bad_values, rng)
            point[param.key] = value
            if param.type == "choice" and param.children[int(value)]:
                self._propose_level(param.children[int(value)], good, bad, rng, point)

    # -- categories ------------------------------------------------------------------------

    def _choose_category(
        self,
        size: int,
        good: list[float],
        bad: list[float],
        rng: np.random.Generator,
    ) -> float:
        p_good = self._category_weights(size, good)
        p_bad = self._category_weights(size, bad)
        candidates = rng.choice(size, size=self.args.n_ei_candidates, p=p_good)
        scores = np.log(p_good[candidates]) - np.log(p_bad[candidates])
        return float(candidates[int(np.argmax(scores))])

    def _category_weights(self, size: int, values: list[float]) -> np.ndarray:
        counts = np.full(size, self.args.prior_weight, dtype=float)
        if values:
            np.add.at(
                counts,
                np.asarray(values, dtype=int),
                _forgetting_weights(len(values), self.args.linear_forgetting),
            )
        result: np.ndarray = counts / counts.sum()
        return result

    # -- numbers ---------------------------------------------------------------------------

    def _choose_number(
        self,
        param: Parameter,
        good: list[float],
        bad: list[float],
        rng: np.random.Generator,
    ) -> float:
        scale = _Scale.of(param)
        good_mix = self._mixture(scale, [scale.to_x(param, v) for v in good])
        bad_mix = self._mixture(scale, [scale.to_x(param, v) for v in bad])
        candidates = good_mix.sample(rng, self.args.n_ei_candidates)
        scores = good_mix.log_pdf(candidates) - bad_mix.log_pdf(candidates)
        best = float(candidates[int(np.argmax(scores))])
        return scale.to_value(param, best)

    def _mixture(self, scale: _Scale, xs: list[float]) -> _Mixture:
        prior_mu, prior_sigma = scale.prior
        if not xs:
            return _Mixture(np.array([prior_mu]), np.array([prior_sigma]), np.array([1.0]), scale)
        mus = np.asarray(xs, dtype=float)
        weights = _forgetting_weights(len(xs), self.args.linear_forgetting)
        order = np.argsort(mus, kind="stable")
        mus, weights = mus[order], weights[order]

        # Each kernel is as wide as the larger gap to its neighbours (the prior's centre and
        # the range's ends count as neighbours), clipped to a sane share of the prior's width.
        with_ends = np.concatenate(([scale.left], mus, [scale.right]))
        gaps = np.maximum(with_ends[1:-1] - with_ends[:-2], with_ends[2:] - with_ends[1:-1])
        floor = prior_sigma / min(100.0, len(xs) + 1.0)
        sigmas = np.clip(gaps, floor, prior_sigma)

        mus = np.append(mus, prior_mu)
        sigmas = np.append(sigmas, prior_sigma)
        weights = np.append(weights, self.args.prior_weight)
        return _Mixture(mus, sigmas, weights / weights.sum(), scale)


def _values_of(param: Parameter, observations: list[Observation]) -> list[float]:
    """The values a parameter took in the trials where it was active, oldest trial first."""
    found = []
    for observation in sorted(observations, key=lambda o: o.trial):
        assert observation.point is not None
        value = observation.point.get(param.key)
        if value is not None:
            found.append(value)
    return found


def _forgetting_weights(count: int, keep: int) -> np.ndarray:
    """Weights of ``count`` trials, oldest first: the newest ``keep`` weigh 1, older ones
    ramp down linearly to 1/count."""
    if count <= keep:
        return np.ones(count)
    ramp = np.linspace(1.0 / count, 1.0, num=count - keep)
    return np.concatenate((ramp, np.ones(keep)))


@dataclass(frozen=True)
class _Scale:
    """Where a numeric parameter is modelled: x is the value, or its log for log types, or
    the integer itself (with half a step of slack at each end) for randint."""

    low: float  # -inf when unbounded
    high: float  # +inf when unbounded
    prior: tuple[float, float]

    @property
    def left(self) -> float:
        return self.low if math.isfinite(self.low) else self.prior[0] - 3 * self.prior[1]

    @property
    def right(self) -> float:
        return self.high if math.isfinite(self.high) else self.prior[0] + 3 * self.prior[1]

    @classmethod
    def of(cls, param: Parameter) -> _Scale:
        if param.type == "randint":
            low, high = param.low - 0.5, param.high - 0.5
        elif param.is_normal:
            return cls(-math.inf, math.inf, (param.mu, param.sigma))
        elif param.is_log:
            low, high = math.log(param.low), math.log(param.high)
        else:
            low, high = param.low, param.high
        return cls(low, high, ((low + high) / 2, high - low))

    def to_x(self, param: Parameter, value: float) -> float:
        if param.type == "randint":
            return param.low + value
        if param.type in ("lognormal", "qlognormal") or param.is_log:
            return math.log(max(value, _TINY))
        return value

    def to_value(self, param: Parameter, x: float) -> float:
        if param.type == "randint":
            integer = min(max(round(x), int(param.low)), int(param.high) - 1)
            return float(integer - param.low)
        if param.is_log or param.type in ("lognormal", "qlognormal"):
            return finish_value(param, math.exp(x))
        return finish_value(param, x)


@dataclass(frozen=True)
class _Mixture:
    """A weighted mixture of normals, truncated to the scale's bounds."""

    mus: np.ndarray
    sigmas: np.ndarray
    weights: np.ndarray
    scale: _Scale

    def _mass(self) -> tuple[np.ndarray, np.ndarray]:
        from scipy.special import ndtr  # loaded at the first model-based suggestion

        lower = ndtr((self.scale.low - self.mus) / self.sigmas)
        upper = ndtr((self.scale.high - self.mus) / self.sigmas)
        return lower, np.maximum(upper - lower, _TINY)

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        which = rng.choice(len(self.mus), size=count, p=self.weights)
        lower, mass = self._mass()
        u = lower[which] + rng.uniform(size=count) * mass[which]
        u = np.clip(u, _TINY, 1 - _TINY)
        from scipy.special import ndtri

        x = self.mus[which] + self.sigmas[which] * ndtri(u)
        result: np.ndarray = np.clip(x, self.scale.low, self.scale.high)
        return result

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        _, mass = self._mass()
        z = (x[:, None] - self.mus[None, :]) / self.sigmas[None, :]
        log_kernel = -0.5 * z**2 - np.log(self.sigmas * math.sqrt(2 * math.pi) * mass)[None, :]
        joint = log_kernel + np.log(self.weights)[None, :]
        peak = joint.max(axis=1, keepdims=True)
        result: np.ndarray = (peak + np.log(np.exp(joint - peak).sum(axis=1, keepdims=True)))[:, 0]
        return result
