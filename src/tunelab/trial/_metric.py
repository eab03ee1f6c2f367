"""Checking and converting a reported metric into plain JSON values.

A metric is a number or a dict whose ``default`` key holds a number; the tuner optimises that
number and the other keys are kept as extra columns. A number is anything registered as
:class:`numbers.Real` (Python's int and float, numpy's scalars) or an object with a zero-arg
``item()`` that returns one (a 0-d torch tensor or numpy array); numpy and torch are never
imported here. NaN and infinities are numbers: a diverged trial reports ``float("nan")`` and
the manager keeps it out of "best". ``bool``, ``None`` and strings (``"nan"`` included) are
rejected at the call, so a mistake shows in the trial's traceback rather than as a silent bad
value in the experiment.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any

__all__ = ["normalize_metric"]

_RULE = "the metric must be a number or a dict with a numeric 'default' key"
_MAX_DEPTH = 32


def normalize_metric(metric: object, function: str) -> float | int | dict[str, Any]:
    """Check a metric and convert it to plain JSON values.

    Args:
        metric: what the trial passed to a ``report_*`` function.
        function: that function's name, for error messages.

    Returns:
        An int or float, or a dict of plain JSON values whose ``default`` is an int or float.

    Raises:
        TypeError: the metric, or one of a dict metric's values, has a type that is not allowed.
        ValueError: a dict metric has no ``default`` key.
    """
    if isinstance(metric, dict):
        return _normalize_dict_metric(metric, function)

    number = _as_number(metric)
    if number is None:
        raise TypeError(f"{function}: {_RULE} (got {_describe(metric)}); {_fix_for(metric)}")
    return number


def _normalize_dict_metric(metric: dict[Any, Any], function: str) -> dict[str, Any]:
    if "default" not in metric:
        raise ValueError(
            f"{function}: {_RULE} (got a dict without 'default', keys {sorted(map(str, metric))})"
            "; add 'default': <the number the tuner optimises>"
        )

    default = _as_number(metric["default"])
    if default is None:
        raise TypeError(
            f"{function}: {_RULE} (got {_describe(metric['default'])} as 'default'); "
            f"{_fix_for(metric['default'])}"
        )

    result = _to_json(metric, function, "metric", 0)
    result["default"] = default
    return result  # type: ignore[no-any-return]


def _as_number(value: object) -> float | int | None:
    """The value as a Python int or float, or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        number = int(value)
        if abs(number) > sys.float_info.max:  # beyond every float: the tuner sees infinity
            return math.inf if number > 0 else -math.inf
        return number
    if isinstance(value, numbers.Real):
        return float(value)

    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes, dict)):
        try:
            scalar = item()
        except Exception:
            return None
        if scalar is not value and not callable(getattr(scalar, "item", None)):
            return _as_number(scalar)
    return None


def _to_json(value: object, function: str, where: str, depth: int) -> Any:
    """Convert an extra value of a dict metric to plain JSON, or raise TypeError."""
    if depth > _MAX_DEPTH:
        raise TypeError(f"{function}: {where} is nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, dict):
        converted: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{function}: the keys of a dict metric must be strings (got "
                    f"{_describe(key)} in {where}); convert the key with str()"
                )
            converted[key] = _to_json(item, function, f"{where}[{key!r}]", depth + 1)
        return converted
    if isinstance(value, (list, tuple)):
        return [
            _to_json(item, function, f"{where}[{index}]", depth + 1)
            for index, item in enumerate(value)
        ]

    number = _as_number(value)
    if number is not None:
        return number
    item = getattr(value, "item", None)
    if callable(item):
        try:
            scalar = item()
        except Exception:
            scalar = value
        if isinstance(scalar, (str, bool)):
            return scalar
    raise TypeError(
        f"{function}: {where} cannot be written as JSON (got {_describe(value)}); the values "
        "of a dict metric must be numbers, strings, bools, None, lists or dicts of those"
    )


def _describe(value: object) -> str:
    if value is None:
        return "None"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text}, a {type(value).__name__}"


def _fix_for(value: object) -> str:
    if isinstance(value, str):
        if value.strip().lower() in ("", "nan", "none", "null", "inf", "-inf", "infinity"):
            return "report float('nan') for a diverged result"
        return "convert it with float() before reporting"
    if value is None:
        return "report float('nan') for a diverged result, or skip the report"
    if type(value).__name__ in ("bool", "bool_"):  # numpy.bool_ included
        return "a bool is not a metric; convert it with float() if 1.0 / 0.0 is meant"
    return "convert it with float(), or report {'default': float(value), ...}"
