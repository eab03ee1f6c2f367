"""Durations as NNI writes them: ``"90s"``, ``"2m"``, ``"1.5h"``, ``"1d"`` or a bare number."""

from __future__ import annotations

import math
import re

__all__ = ["DURATION_UNITS", "DurationError", "parse_duration"]

DURATION_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400}
"""Seconds per unit; units are matched case-insensitively."""

_PATTERN = re.compile(
    r"^\s*(?P<number>[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?)\s*(?P<unit>[a-z]*)\s*$"
)
_FIX = (
    "write a positive number followed by a unit s (seconds), m (minutes), h (hours) "
    "or d (days), for example '90s', '2m' or '1.5h'"
)


class DurationError(ValueError):
    """A value that is not a usable duration.

    Attributes:
        rule: The broken rule in words.
        value: The value received.
        fix: How to write a valid duration (names the units).
    """

    def __init__(self, rule: str, value: object) -> None:
        self.rule = rule
        self.value = value
        self.fix = _FIX
        super().__init__(f"duration {rule} (got {value!r}); {_FIX}")


def parse_duration(value: str | int | float) -> float:
    """Turn a duration into whole seconds.

    Args:
        value: A number of seconds, or a string ``<number><unit>`` with unit ``s``, ``m``, ``h``
            or ``d`` (any case). A bare number in a string also means seconds.

    Returns:
        The duration in seconds, rounded up to a whole second as NNI does.

    Raises:
        DurationError: (a ``ValueError``) the value is not a positive, finite duration in a
            known unit: bools, NaN, zero, negative values and unknown units are refused. The
            message names the units.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DurationError("must be a number of seconds or a string like '2m'", value)

    seconds = _parse_text(value) if isinstance(value, str) else _to_float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise DurationError("must be positive and finite", value)
    return float(math.ceil(seconds))


def _parse_text(text: str) -> float:
    match = _PATTERN.match(text.lower())
    if match is None:
        raise DurationError("is not a number with a time unit", text)

    unit = match["unit"] or "s"
    if unit not in DURATION_UNITS:
        raise DurationError(f"has an unknown time unit {match['unit']!r}", text)
    return _to_float(match["number"]) * DURATION_UNITS[unit]


def _to_float(number: str | int | float) -> float:
    try:
        return float(number)
    except OverflowError:
        return math.inf
