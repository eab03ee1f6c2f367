"""Reading NNI's search-space JSON into :class:`Parameter` trees, with every rule checked.

A space that cannot be sampled is refused here, before an experiment starts, with one
:class:`~tunelab.errors.Issue` per bad parameter (field cases B03, B04, B07). The rules are
NNI's, applied strictly where NNI only logged a warning and then failed at the first
suggestion:

* ``_value`` is a list: three numbers for the q types, two for the others, and a non-empty
  list of options for ``choice``.
* numbers are real and finite (a bool is not a number); ``randint`` bounds are integers.
* ``low < high`` for the bounded types, ``0 < low`` for the log types, ``q > 0``, and
  ``sigma > 0`` for the normal types.
* no overflow when sampled: ``high - low``, the values (10 sigmas out for the normal types,
  exp of that for the lognormal ones) and value / q are finite floats; ``randint`` bounds are
  within 2**53, where floats hold integers exactly.
* ``choice`` options are distinct JSON values; an option that is a dict is a nested choice
  and names itself with a string ``_name`` (distinct within the choice); its other keys form
  the sub-space that is active only when that option is chosen.

Decisions where NNI is silent or lax: duplicate options are refused (they would make a finite
space look larger than it is, so exhaustion could never be detected); keys other than
``_type`` and ``_value`` in a parameter are refused, with the closest valid key, because a typo
such as ``_values`` would otherwise go unnoticed.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import Issue

__all__ = ["PARAMETER_TYPES", "Key", "Parameter", "parse_parameters"]

Key = tuple[str | int, ...]
"""Where a parameter sits: ``("lr",)``, or ``("opt", 0, "momentum")`` for the parameter
``momentum`` of option 0 of the nested choice ``opt``."""

PARAMETER_TYPES = (
    "choice",
    "randint",
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "normal",
    "qnormal",
    "lognormal",
    "qlognormal",
)
_Q_TYPES = frozenset({"quniform", "qloguniform", "qnormal", "qlognormal"})
_LOG_TYPES = frozenset({"loguniform", "qloguniform"})
_NORMAL_TYPES = frozenset({"normal", "qnormal", "lognormal", "qlognormal"})
_SPEC_KEYS = ("_type", "_value")


@dataclass(frozen=True, eq=False)
class Parameter:
    """One parameter of a search space, as NNI's JSON defines it.

    Attributes:
        key: where the parameter sits in the space (see :data:`Key`).
        name: its name, the key of its value in the trial's parameters.
        label: a readable path for messages: ``lr``, ``opt[sgd].momentum``.
        type: NNI's ``_type``.
        args: the numeric ``_value`` for every type but ``choice``.
        options: the options of a ``choice`` (a nested option is a dict with ``_name``).
        children: for a ``choice``, each option's sub-space (empty for a plain option).
        parent: the ``(key, option index)`` of the nested choice this parameter belongs to.
    """

    key: Key
    name: str
    label: str
    type: str
    args: tuple[float, ...] = ()
    options: tuple[Any, ...] = ()
    children: tuple[tuple[Parameter, ...], ...] = ()
    parent: tuple[Key, int] | None = None
    _grid: tuple[float, ...] | None = field(default=None, repr=False)

    # -- kinds ---------------------------------------------------------------------------

    @property
    def is_categorical(self) -> bool:
        """``choice`` and ``randint``: a value is one of finitely many, stored as an index."""
        return self.type in ("choice", "randint")

    @property
    def is_log(self) -> bool:
        """Sampled in log space (loguniform, qloguniform, lognormal, qlognormal)."""
        return self.type in _LOG_TYPES or self.type in ("lognormal", "qlognormal")

    @property
    def is_normal(self) -> bool:
        return self.type in _NORMAL_TYPES

    @property
    def q(self) -> float | None:
        return self.args[2] if self.type in _Q_TYPES else None

    @property
    def low(self) -> float:
        """The lower bound of a bounded type (randint: the smallest value)."""
        return self.args[0]

    @property
    def high(self) -> float:
        """The upper bound of a bounded type (randint: one more than the largest value)."""
        return self.args[1]

    @property
    def mu(self) -> float:
        return self.args[0]

    @property
    def sigma(self) -> float:
        return self.args[1]

    @property
    def is_nested(self) -> bool:
        return any(self.children)

    @property
    def categories(self) -> int:
        """How many values a categorical parameter has (0 for the others)."""
        if self.type == "choice":
            return len(self.options)
        if self.type == "randint":
            return int(self.high - self.low)
        return 0

    @property
    def grid(self) -> tuple[float, ...] | None:
        """Every value a bounded q type can take, ascending; None for the other types."""
        return self._grid


def _is_number(value: object) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def quantize(value: float, q: float) -> float:
    """``round(value / q) * q`` with Python's round (half to even), as NNI computes it, with
    the float noise of the multiplication removed (``3 * 0.2`` gives 0.6, not
    0.6000000000000001)."""
    steps = round(value / q)
    return round(steps * q, 10 - math.floor(math.log10(q)))


def _grid_values(low: float, high: float, q: float) -> tuple[float, ...]:
    """The values ``clip(quantize(x), low, high)`` takes for x in [low, high]."""
    first, last = round(low / q), round(high / q)
    if last - first > 10_000_000:
        return ()  # too many to list; treated as continuous
    values = {min(max(quantize(step * q, q), low), high) for step in range(first, last + 1)}
    return tuple(sorted(float(v) for v in values))


def parse_parameters(space: object) -> tuple[tuple[Parameter, ...], list[Issue]]:
    """Read a search space; returns its top-level parameters and the problems found."""
    if not isinstance(space, Mapping):
        issue = Issue(
            "searchSpace",
            "must be a JSON object mapping parameter names to {'_type': ..., '_value': ...}",
            space,
            "write {} for a space without parameters",
        )
        return (), [issue]
    issues: list[Issue] = []
    params = _parse_level(space, (), "", None, issues)
    return params, issues


def _parse_level(
    space: Mapping[Any, Any],
    prefix: Key,
    label_prefix: str,
    parent: tuple[Key, int] | None,
    issues: list[Issue],
) -> tuple[Parameter, ...]:
    params = []
    for name, spec in space.items():
        label = f"{label_prefix}{name}"
        if not isinstance(name, str) or not name:
            issues.append(
                Issue(label or "searchSpace", "a parameter name must be a non-empty string", name)
            )
            continue
        param = _parse_parameter(name, spec, (*prefix, name), label, parent, issues)
        if param is not None:
            params.append(param)
    return tuple(params)


def _parse_parameter(
    name: str,
    spec: object,
    key: Key,
    label: str,
    parent: tuple[Key, int] | None,
    issues: list[Issue],
) -> Parameter | None:
    if not isinstance(spec, Mapping):
        issues.append(
            Issue(
                label,
                "must be {'_type': ..., '_value': [...]}",
                spec,
                "for example {'_type': 'uniform', '_value': [0, 1]}",
            )
        )
        return None
    problems = _spec_key_problems(spec, label)
    if problems:
        issues.extend(problems)
        return None

    kind, values = spec["_type"], spec["_value"]
    if not isinstance(kind, str) or kind not in PARAMETER_TYPES:
        close = difflib.get_close_matches(str(kind), PARAMETER_TYPES, 1)
        fix = (
            f"did you mean {close[0]!r}?" if close else "use one of " + ", ".join(PARAMETER_TYPES)
        )
        issues.append(Issue(label, "unknown _type", kind, fix))
        return None
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        issues.append(Issue(label, f"{kind} needs a list as _value", values))
        return None
    if kind == "choice":
        return _parse_choice(name, list(values), key, label, parent, issues)
    return _parse_numeric(name, kind, list(values), key, label, parent, issues)


def _spec_key_problems(spec: Mapping[Any, Any], label: str) -> list[Issue]:
    problems = []
    for key in spec:
        if key not in _SPEC_KEYS:
            close = difflib.get_close_matches(str(key), _SPEC_KEYS, 1)
            fix = (
                f"did you mean {close[0]!r}?" if close else "a parameter has only _type and _value"
            )
            problems.append(Issue(label, "unknown key in a parameter", key, fix))
    for key in _SPEC_KEYS:
        if key not in spec:
            problems.append(
                Issue(
                    label,
                    f"missing {key}",
                    dict(spec),
                    "a parameter is {'_type': ..., '_value': [...]}",
                )
            )
    return problems


def _parse_numeric(
    name: str,
    kind: str,
    values: list[Any],
    key: Key,
    label: str,
    parent: tuple[Key, int] | None,
    issues: list[Issue],
) -> Parameter | None:
    count = 3 if kind in _Q_TYPES else 2
    shape = {
        "randint": "[low, high]",
        "uniform": "[low, high]",
        "loguniform": "[low, high]",
        "quniform": "[low, high, q]",
        "qloguniform": "[low, high, q]",
        "normal": "[mu, sigma]",
        "lognormal": "[mu, sigma]",
        "qnormal": "[mu, sigma, q]",
        "qlognormal": "[mu, sigma, q]",
    }[kind]
    if len(values) != count:
        issues.append(Issue(label, f"{kind} takes {count} values {shape}", values))
        return None
    if not all(_is_number(v) for v in values):
        issues.append(Issue(label, f"{kind} values {shape} must be finite numbers", values))
        return None
    args = tuple(float(v) for v in values)

    rule = _numeric_rule(kind, values, args)
    if rule is not None:
        rule_text, fix = rule
        issues.append(Issue(label, rule_text, values, fix))
        return None

    grid = None
    if kind in ("quniform", "qloguniform"):
        grid = _grid_values(args[0], args[1], args[2]) or None
    return Parameter(key, name, label, kind, args=args, parent=parent, _grid=grid)


def _numeric_rule(
    kind: str, values: list[Any], args: tuple[float, ...]
) -> tuple[str, str | None] | None:
    """The first rule that numeric ``_value`` breaks, with a fix; None when it is valid."""
    if kind == "randint":
        if not all(float(v).is_integer() for v in values):
            return (
                "randint bounds must be integers",
                "randint [low, high] gives an int in [low, high)",
            )
        if args[0] >= args[1]:
            return "randint needs low < high (high is excluded)", "swap the bounds or widen them"
        return _size_rule(kind, args)
    if kind in _NORMAL_TYPES:
        if args[1] <= 0:
            return f"{kind} needs sigma > 0", "[mu, sigma] with a positive sigma"
    elif args[0] >= args[1]:
        return f"{kind} needs low < high", "swap the two bounds"
    elif kind in _LOG_TYPES and args[0] <= 0:
        return (
            f"{kind} needs 0 < low < high (the log of low is taken)",
            "use a positive low bound such as 1e-5, or a uniform type for ranges through 0",
        )
    if kind in _Q_TYPES and args[2] <= 0:
        return f"{kind} needs q > 0", "q is the step between values, for example 1 or 0.1"
    return _size_rule(kind, args)


_RANDINT_LIMIT = 2**53  # randint values are held as floats in points: exact up to here
_LOG_FLOAT_MAX = math.log(sys.float_info.max)
_SIGMAS = 10  # how far from mu a normal draw is taken to go (farther is never drawn)


def _size_rule(kind: str, args: tuple[float, ...]) -> tuple[str, str | None] | None:
    """Numbers too large for a float: a parameter that passes here is sampled and quantised
    without overflow (a range as wide as [-1e308, 1e308], a q of 1e-320, or exp(800))."""
    narrow = "narrow the range"
    if kind == "randint":
        if max(abs(args[0]), abs(args[1])) > _RANDINT_LIMIT:
            return f"randint bounds must lie within -2**53..2**53 ({_RANDINT_LIMIT})", narrow
        return None
    if kind in ("lognormal", "qlognormal"):
        reach = args[0] + _SIGMAS * args[1]
        largest = math.exp(reach) if reach < _LOG_FLOAT_MAX else math.inf
    elif kind in _NORMAL_TYPES:
        largest = abs(args[0]) + _SIGMAS * args[1]
    else:
        largest = max(abs(args[0]), abs(args[1]))
        if not math.isfinite(args[1] - args[0]):
            return f"{kind} range high - low is too wide for a float", narrow
    if not math.isfinite(largest):
        return f"{kind} values reach numbers too large for a float", f"{narrow} or sigma"
    if kind in _Q_TYPES and not math.isfinite(largest / args[2]):
        return f"{kind} q is too small for the range (value / q overflows a float)", "raise q"
    return None


def _parse_choice(
    name: str,
    options: list[Any],
    key: Key,
    label: str,
    parent: tuple[Key, int] | None,
    issues: list[Issue],
) -> Parameter | None:
    if not options:
        issues.append(Issue(label, "choice needs at least one option", options))
        return None

    before = len(issues)
    children: list[tuple[Parameter, ...]] = []
    seen_values: set[str] = set()
    seen_names: set[str] = set()
    for index, option in enumerate(options):
        where = f"{label}._value[{index}]"
        if isinstance(option, Mapping):
            children.append(
                _parse_nested_option(option, index, key, label, where, seen_names, issues)
            )
            continue
        children.append(())
        try:
            canonical = json.dumps(option, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            issues.append(Issue(where, "a choice option must be a JSON value", option))
            continue
        if isinstance(option, float) and not math.isfinite(option):
            issues.append(Issue(where, "a choice option must be finite", option))
        elif canonical in seen_values:
            issues.append(
                Issue(
                    where, "choice options must be distinct", option, "remove the repeated option"
                )
            )
        seen_values.add(canonical)
    if len(issues) > before:
        return None
    return Parameter(
        key,
        name,
        label,
        "choice",
        options=tuple(options),
        children=tuple(children),
        parent=parent,
    )


def _parse_nested_option(
    option: Mapping[Any, Any],
    index: int,
    key: Key,
    label: str,
    where: str,
    seen_names: set[str],
    issues: list[Issue],
) -> tuple[Parameter, ...]:
    option_name = option.get("_name")
    if not isinstance(option_name, str) or not option_name:
        issues.append(
            Issue(
                where,
                "a nested choice option (a dict) needs a string '_name'",
                dict(option),
                "add '_name': '<option name>' to this option",
            )
        )
        return ()
    if option_name in seen_names:
        issues.append(Issue(where, "nested choice options need distinct _name", option_name))
        return ()
    seen_names.add(option_name)
    sub_space = {k: v for k, v in option.items() if k != "_name"}
    return _parse_level(sub_space, (*key, index), f"{label}[{option_name}].", (key, index), issues)
