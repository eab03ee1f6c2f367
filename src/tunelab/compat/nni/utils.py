"""``nni.utils``: the helpers NNI trial code uses."""

from __future__ import annotations

import enum
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = [
    "ClassArgsValidator",
    "MetricType",
    "OptimizeMode",
    "extract_scalar_history",
    "extract_scalar_reward",
    "merge_parameter",
]

_Base = TypeVar("_Base")


class OptimizeMode(enum.Enum):
    """Whether the tuner looks for the smallest or the largest metric."""

    Minimize = "minimize"
    Maximize = "maximize"


class MetricType:
    """The kinds of metric record (NNI's names)."""

    FINAL = "FINAL"
    PERIODICAL = "PERIODICAL"
    REQUEST_PARAMETER = "REQUEST_PARAMETER"


class _Rule:
    """One check on a class argument, usable on its own (``rule.validate(value)``) or as a
    value in a ``schema.Schema`` (which calls ``validate``)."""

    def __init__(self, test: Any, error: str) -> None:
        self._test, self._error = test, error

    def validate(self, value: Any) -> Any:
        if not self._test(value):
            raise ValueError(self._error)
        return value


class ClassArgsValidator:
    """Base of a custom algorithm's ``classArgsValidator`` (named in its ``algo register``
    meta file): ``validate_class_args(**class_args)`` raises when the arguments are wrong;
    this base accepts anything. ``choices`` and ``range`` make the usual checks."""

    def validate_class_args(self, **kwargs: Any) -> None:
        """Check the class arguments; raise an exception that says what is wrong."""

    def choices(self, key: str, *args: Any) -> _Rule:
        """A rule: the value is one of ``args``."""
        return _Rule(
            lambda value: value in args, f"{key} should be in [{', '.join(map(repr, args))}]!"
        )

    def range(self, key: str, keyType: type, start: Any, end: Any) -> _Rule:
        """A rule: the value is a ``keyType`` between ``start`` and ``end``, both included."""

        def test(value: Any) -> bool:
            if not isinstance(value, keyType) or (keyType is int and isinstance(value, bool)):
                return False
            return bool(start <= value <= end)

        return _Rule(test, f"{key} should be a {keyType.__name__} in range [{start}, {end}]!")


def merge_parameter(base_params: _Base, override_params: Mapping[str, Any] | None) -> _Base:
    """Override parsed arguments (a dict or an ``argparse.Namespace``) with tuned parameters.

    Every key of ``override_params`` must already exist in ``base_params``. A value must keep
    the type of the value it replaces, except that an int may replace a float, and (unlike
    NNI, which raises here) a float with an integral value such as ``32.0`` from ``quniform``
    may replace an int; a base value of None accepts anything.

    Args:
        base_params: the defaults, usually ``parser.parse_args()`` or a dict; updated in place.
        override_params: the tuned parameters, usually ``nni.get_next_parameter()``; None
            leaves ``base_params`` as it is.

    Returns:
        ``base_params``, updated.

    Raises:
        ValueError: a key is not in ``base_params``, or a value has an incompatible type.
    """
    if override_params is None:
        return base_params

    is_dict = isinstance(base_params, dict)
    for key, value in override_params.items():
        if is_dict:
            if key not in base_params:  # type: ignore[operator]
                raise ValueError(_missing_key_message(key, base_params))
            current = base_params[key]  # type: ignore[index]
            base_params[key] = _compatible_value(key, current, value)  # type: ignore[index]
        else:
            if not hasattr(base_params, key):
                raise ValueError(_missing_key_message(key, vars(base_params)))
            setattr(base_params, key, _compatible_value(key, getattr(base_params, key), value))
    return base_params


def extract_scalar_reward(value: Any, scalar_key: str = "default") -> float:
    """Return the number a tuner optimises from a metric (a number or a dict with ``default``).

    Raises:
        RuntimeError: the metric is neither a number nor a dict holding a number under
            ``scalar_key``.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value  # type: ignore[return-value]
    if isinstance(value, dict):
        scalar = value.get(scalar_key)
        if isinstance(scalar, numbers.Real) and not isinstance(scalar, bool):
            return scalar  # type: ignore[return-value]
    raise RuntimeError(
        f"extract_scalar_reward: the metric must be a number or a dict with a numeric "
        f"{scalar_key!r} key (got {value!r}, a {type(value).__name__})"
    )


def extract_scalar_history(
    trial_history: Iterable[Any], scalar_key: str = "default"
) -> list[float]:
    """Apply :func:`extract_scalar_reward` to each metric of a history."""
    return [extract_scalar_reward(value, scalar_key) for value in trial_history]


def _compatible_value(key: str, current: Any, value: Any) -> Any:
    if current is None or type(value) is type(current):
        return value
    if isinstance(current, bool) or isinstance(value, bool):
        pass  # True is an int to Python, but a flag must stay a flag
    elif isinstance(current, float) and isinstance(value, int):
        return float(value)
    elif isinstance(current, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    elif isinstance(value, type(current)):
        return value
    raise ValueError(
        f"merge_parameter: parameter {key!r} must be a {type(current).__name__} like its "
        f"default {current!r} (got {value!r}, a {type(value).__name__}); change the default's "
        "type or the search space"
    )


def _missing_key_message(key: str, base: Any) -> str:
    return (
        f"merge_parameter: parameter {key!r} is not in the base parameters "
        f"(they are {sorted(base)}); add it to the argument parser or remove it from the search "
        "space"
    )
