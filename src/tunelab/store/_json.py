"""Strict JSON for the outside world: NaN and infinities become strings, and back."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["decode_json_value", "encode_json_value", "format_number"]

_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def format_number(value: float) -> str:
    """The text tunelab writes for a number in CSV and for the non-finite ones in JSON."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def encode_json_value(value: Any) -> Any:
    """Turn a value into one that strict JSON can hold: non-finite floats become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return format_number(value)
    if isinstance(value, dict):
        return {str(key): encode_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_json_value(item) for item in value]
    return value


def decode_json_value(value: Any) -> Any:
    """Undo :func:`encode_json_value` for a metric value ("NaN" back to a float)."""
    if isinstance(value, str) and value in _SPECIAL:
        return _SPECIAL[value]
    if isinstance(value, dict):
        return {key: decode_json_value(item) for key, item in value.items()}
    return value
