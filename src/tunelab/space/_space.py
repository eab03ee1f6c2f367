"""A validated search space: sampling with NNI's semantics, and the bridge between the
parameters a trial sees and the *points* tuners work with.

A point is a flat dict from a parameter's :data:`~tunelab.space.Key` to its value, holding the
active parameters only (a nested choice's sub-parameters appear only under the chosen
option). Categorical parameters (``choice``, ``randint``) hold the option's index; numeric ones
hold the value itself, already rounded to its q grid and clipped where NNI clips. Points are
what tuners model, compare and count; :meth:`SearchSpace.to_parameters` turns one into the
dict a trial receives, and :meth:`SearchSpace.from_parameters` reads such a dict back (for
resumed, imported and user-added trials).

Sampling semantics (NNI's, reference/nni_inventory.md section 2):

* ``randint [low, high]``: an int in [low, high), each equally likely.
* ``uniform``: U(low, high); ``quniform``: clip(round(U / q) * q, low, high).
* ``loguniform``: exp(U(log low, log high)); ``qloguniform``: the same rounded and clipped.
* ``normal``: N(mu, sigma); ``qnormal``: round(N / q) * q, not clipped.
* ``lognormal``: exp(N(mu, sigma)); ``qlognormal``: round(exp(N) / q) * q.

Numeric values are floats, even with an integral q, as in NNI; randint values are ints.

A space is *finite* when every parameter has finitely many values (choice, randint and the
bounded q types). A finite space has a size and its points an index order
(:meth:`SearchSpace.point_at`), which tuners use to never suggest a point twice and to know
when nothing is left.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from tunelab.errors import SearchSpaceError
from tunelab.space._parse import Key, Parameter, parse_parameters, quantize

__all__ = ["Point", "SearchSpace", "point_key"]

Point = dict[Key, float]
"""Active parameter keys mapped to values (an option index for categorical parameters)."""


def point_key(point: Point) -> tuple[tuple[Key, float], ...]:
    """A hashable form of a point, equal for equal points."""
    return tuple(sorted(point.items(), key=lambda item: repr(item[0])))


class SearchSpace:
    """A search space in NNI's format, checked.

    Build one with :meth:`from_json`; it raises :class:`~tunelab.errors.SearchSpaceError`
    listing every bad parameter.
    """

    def __init__(self, roots: tuple[Parameter, ...], raw: Mapping[str, Any]) -> None:
        self.roots = roots
        self.raw = raw
        self.parameters: tuple[Parameter, ...] = tuple(_walk(roots))
        self.by_key: dict[Key, Parameter] = {p.key: p for p in self.parameters}
        self._sizes: dict[Key, int | None] = {}
        self.size: int | None = _level_size(roots, self._sizes)

    @classmethod
    def from_json(cls, space: object) -> SearchSpace:
        """Check an NNI search space (the parsed JSON object) and build it.

        Raises:
            SearchSpaceError: one issue per bad parameter.
        """
        roots, issues = parse_parameters(space)
        if issues:
            raise SearchSpaceError(issues)
        assert isinstance(space, Mapping)
        return cls(roots, copy.deepcopy(dict(space)))

    def __repr__(self) -> str:
        names = ", ".join(p.label for p in self.parameters)
        return f"SearchSpace({names})"

    def __len__(self) -> int:
        return len(self.roots)

    @property
    def is_finite(self) -> bool:
        return self.size is not None

    # -- sampling --------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> Point:
        """A random point, each parameter drawn as NNI's semantics say."""
        point: Point = {}
        self._sample_level(self.roots, rng, point)
        return point

    def _sample_level(
        self, params: tuple[Parameter, ...], rng: np.random.Generator, point: Point
    ) -> None:
        for param in params:
            value = sample_value(param, rng)
            point[param.key] = value
            if param.type == "choice" and param.children[int(value)]:
                self._sample_level(param.children[int(value)], rng, point)

    # -- points and parameters -------------------------------------------------------------

    def to_parameters(self, point: Point) -> dict[str, Any]:
        """The trial's parameters for a point."""
        return self._render_level(self.roots, point)

    def _render_level(self, params: tuple[Parameter, ...], point: Point) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for param in params:
            value = point[param.key]
            if param.type == "choice":
                index = int(value)
                option = param.options[index]
                if isinstance(option, Mapping):
                    nested = {"_name": option["_name"]}
                    nested.update(self._render_level(param.children[index], point))
                    result[param.name] = nested
                else:
                    result[param.name] = copy.deepcopy(option)
            elif param.type == "randint":
                result[param.name] = int(param.low) + int(value)
            else:
                result[param.name] = float(value)
        return result

    def from_parameters(self, parameters: Mapping[str, Any]) -> Point | None:
        """The point of a trial's parameters, or None if they do not fit this space (a
        parameter is missing or extra, or a value lies outside its domain)."""
        point: Point = {}
        if not self._read_level(self.roots, parameters, point):
            return None
        return point

    def _read_level(
        self, params: tuple[Parameter, ...], values: Mapping[str, Any], point: Point
    ) -> bool:
        expected = {p.name for p in params}
        given = {k for k in values if k != "_name"}
        if given != expected:
            return False
        for param in params:
            value = read_value(param, values[param.name])
            if value is None:
                return False
            point[param.key] = value
            if param.type == "choice" and param.children[int(value)]:
                nested = values[param.name]
                if not self._read_level(param.children[int(value)], nested, point):
                    return False
        return True

    def contains(self, parameters: Mapping[str, Any]) -> bool:
        return self.from_parameters(parameters) is not None

    # -- finite spaces: counting and enumerating -------------------------------------------

    def point_at(self, index: int) -> Point:
        """The point with this index in a finite space (0 <= index < size).

        The order is the grid order: the last parameter varies fastest; the options of a
        nested choice come in order, each followed by every point of its sub-space.
        """
        if self.size is None:
            raise ValueError("point_at needs a finite search space")
        if not 0 <= index < self.size:
            raise IndexError(f"point index {index} outside 0..{self.size - 1}")
        point: Point = {}
        self._decode_level(self.roots, index, point)
        return point

    def _decode_level(self, params: tuple[Parameter, ...], index: int, point: Point) -> None:
        for param in reversed(params):
            size = self._sizes[param.key]
            assert size is not None
            index, digit = divmod(index, size)
            self._decode_param(param, digit, point)

    def _decode_param(self, param: Parameter, digit: int, point: Point) -> None:
        if param.type != "choice":
            point[param.key] = param.grid[digit] if param.grid is not None else float(digit)
            return
        for option, children in enumerate(param.children):
            span = _level_size(children, self._sizes) if children else 1
            assert span is not None
            if digit < span:
                point[param.key] = float(option)
                if children:
                    self._decode_level(children, digit, point)
                return
            digit -= span
        raise AssertionError("digit outside the choice's span")

    def index_of(self, point: Point) -> int | None:
        """The index of a point of a finite space, or None if the point is not on its grid."""
        if self.size is None:
            return None
        return self._encode_level(self.roots, point)

    def _encode_level(self, params: tuple[Parameter, ...], point: Point) -> int | None:
        index = 0
        for param in params:
            size = self._sizes[param.key]
            digit = self._encode_param(param, point)
            if digit is None or size is None:
                return None
            index = index * size + digit
        return index

    def _encode_param(self, param: Parameter, point: Point) -> int | None:
        value = point.get(param.key)
        if value is None:
            return None
        if param.type == "randint":
            return int(value)
        if param.type != "choice":
            assert param.grid is not None
            try:
                return param.grid.index(value)
            except ValueError:
                return None
        offset = 0
        for option, children in enumerate(param.children):
            span = _level_size(children, self._sizes) if children else 1
            assert span is not None
            if option == int(value):
                if not children:
                    return offset
                inner = self._encode_level(children, point)
                return None if inner is None else offset + inner
            offset += span
        return None

    def points(self) -> Iterator[Point]:
        """Every point of a finite space, in index order."""
        if self.size is None:
            raise ValueError("points() needs a finite search space")
        for index in range(self.size):
            yield self.point_at(index)

    def active(self, point: Point) -> list[Parameter]:
        """The parameters that take part in a point (nested ones only under their option)."""
        return [p for p in self.parameters if p.key in point]


def _walk(params: tuple[Parameter, ...]) -> Iterator[Parameter]:
    for param in params:
        yield param
        for children in param.children:
            yield from _walk(children)


def _param_size(param: Parameter, sizes: dict[Key, int | None]) -> int | None:
    if param.type == "choice":
        total = 0
        for children in param.children:
            span = _level_size(children, sizes) if children else 1
            if span is None:
                return None
            total += span
        return total
    if param.type == "randint":
        return param.categories
    if param.grid is not None:
        return len(param.grid)
    return None


def _level_size(params: tuple[Parameter, ...], sizes: dict[Key, int | None]) -> int | None:
    total: int | None = 1
    for param in params:
        if param.key not in sizes:
            sizes[param.key] = _param_size(param, sizes)
        size = sizes[param.key]
        if size is None or total is None:
            total = None
        else:
            total *= size
    return total


# -- one parameter ----------------------------------------------------------------------------


def clip(value: float, param: Parameter) -> float:
    """Clip a value of a bounded type to its bounds (the normal types are unbounded)."""
    if param.is_normal:
        return value
    return min(max(value, param.low), param.high)


def finish_value(param: Parameter, raw: float) -> float:
    """A raw draw in the parameter's own scale, made a valid value: rounded to q, clipped."""
    q = param.q
    if q is not None:
        raw = quantize(raw, q)
    if not param.is_normal:
        raw = clip(raw, param)
    return float(raw)


def sample_value(param: Parameter, rng: np.random.Generator) -> float:
    """One value of a parameter (an option index for categorical parameters)."""
    if param.is_categorical:
        return float(rng.integers(param.categories))
    kind = param.type
    if kind in ("uniform", "quniform"):
        raw = rng.uniform(param.low, param.high)
    elif kind in ("loguniform", "qloguniform"):
        raw = math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
    elif kind in ("normal", "qnormal"):
        raw = rng.normal(param.mu, param.sigma)
    else:  # lognormal, qlognormal
        raw = math.exp(rng.normal(param.mu, param.sigma))
    return finish_value(param, float(raw))


def read_value(param: Parameter, value: Any) -> float | None:
    """The point value of a parameter's value as a trial sees it, or None if out of domain."""
    if param.type == "choice":
        for index, option in enumerate(param.options):
            if isinstance(option, Mapping):
                if isinstance(value, Mapping) and value.get("_name") == option["_name"]:
                    return float(index)
            elif _same_option(option, value):
                return float(index)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    if param.type == "randint":
        if not number.is_integer() or not param.low <= number < param.high:
            return None
        return number - param.low
    if math.isnan(number):
        return None
    if param.grid is not None:
        nearest = min(param.grid, key=lambda g: abs(g - number))
        return nearest if math.isclose(nearest, number, rel_tol=1e-9, abs_tol=1e-12) else None
    if not param.is_normal and not param.low <= number <= param.high:
        return None
    if param.is_log and (number < 0 or (number == 0 and param.q is None)):
        return None  # round(exp(x) / q) * q may be 0; exp(x) never is
    return number


def _same_option(option: Any, value: Any) -> bool:
    if isinstance(option, bool) or isinstance(value, bool):
        return isinstance(option, bool) and isinstance(value, bool) and option == value
    if isinstance(option, list) and isinstance(value, (list, tuple)):
        return len(option) == len(value) and all(
            _same_option(a, b) for a, b in zip(option, value, strict=True)
        )
    return bool(
        type(option) is type(value)
        or (isinstance(option, (int, float)) and isinstance(value, (int, float)))
    ) and bool(option == value)
