"""Value types of config fields, each checked with tunelab's own words.

Every check here raises :func:`rule_error`, a pydantic error that carries tunelab's rule and fix,
so :mod:`tunelab.config._base` can turn it into an :class:`~tunelab.errors.Issue` without showing
a pydantic message. Decisions:

- Types are strict, as NNI's typeguard checks are: ``true`` is not an integer, ``2.0`` is not
  an integer, ``"2"`` is not a number. A float field takes an integer.
- Durations are kept as written (``"2m"``, ``90``) once :func:`parse_duration` accepts them;
  the engine parses them again when it needs seconds.
- Memory sizes are NNI's ``<number><unit>`` strings with units ``tb``, ``gb``, ``mb``, ``kb``,
  ``b`` (any case, 1024-based); they are kept as written. A bare number is refused, because it
  is unclear whether it means bytes or megabytes.
- GPU indices may be a list of integers, one integer or a comma-separated string (``"0,1"``),
  as NNI allows; they are stored as a list. Duplicates and negative indices are refused. An
  empty list is accepted (no GPU may be used), as NNI accepts it.
"""

from __future__ import annotations

import math
import os
import re
from typing import Annotated, Any, NoReturn

from pydantic import PlainValidator
from pydantic_core import PydanticCustomError

from tunelab.config._duration import DurationError, parse_duration

__all__ = [
    "LOG_LEVELS",
    "MEMORY_UNITS",
    "Command",
    "Duration",
    "ExperimentType",
    "GpuIndices",
    "LogLevel",
    "MemorySize",
    "PathText",
    "Text",
    "parse_memory_size",
    "rule_error",
]

LOG_LEVELS = ("fatal", "error", "warning", "info", "debug", "trace")

MEMORY_UNITS: dict[str, int] = {"tb": 1024**4, "gb": 1024**3, "mb": 1024**2, "kb": 1024, "b": 1}
"""Bytes per unit of a memory size; units are matched case-insensitively."""

_MEMORY = re.compile(r"^\s*(?P<number>[0-9]+\.?[0-9]*|\.[0-9]+)\s*(?P<unit>[a-z]+)\s*$")
_MEMORY_FIX = "write a number followed by a unit tb, gb, mb, kb or b, for example '2gb' or '512mb'"


def rule_error(
    rule: str, fix: str | None = None, *, at: str | None = None, value: Any = None
) -> PydanticCustomError:
    """A pydantic error carrying tunelab's rule and fix.

    Args:
        rule: The broken rule in words ("must be positive").
        fix: How to write a valid value.
        at: A key below the field the error is reported on, added to the path.
        value: The value to show, when it is not the input of the failing validator.
    """
    context: dict[str, Any] = {"rule": rule, "fix": fix}
    if at is not None:
        context["at"] = at
    if value is not None:
        context["value"] = value
    return PydanticCustomError("tunelab", "{rule}", context)


def _fail(rule: str, fix: str | None = None) -> NoReturn:
    raise rule_error(rule, fix)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        _fail("must be a string", "put the value in quotes if it looks like a number")
    if not value.strip():
        _fail("must not be empty")
    return value


def _command(value: Any) -> str:
    if not isinstance(value, str):
        _fail("must be a shell command written as a string", "for example 'python3 trial.py'")
    if not value.strip():
        _fail(
            "must not be empty", "write the command that runs one trial, e.g. 'python3 trial.py'"
        )
    return value


def _path_text(value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        _fail("must be a path written as a string")
    if not value.strip():
        _fail("must not be empty", "write '.' for the config file's folder")
    if "\0" in value:
        _fail("must not contain a NUL character")
    return value


def _duration(value: Any) -> str | int | float:
    try:
        parse_duration(value)
    except DurationError as error:
        raise rule_error(error.rule, error.fix) from None
    return value  # type: ignore[no-any-return]


def parse_memory_size(value: str) -> int:
    """Turn an NNI memory size (``"2gb"``, ``"512mb"``) into whole megabytes, rounded up.

    Raises:
        ValueError: the value is not a positive size with a known unit.
    """
    if not isinstance(value, str):
        raise ValueError(f"memory size must be a string like '2gb' (got {value!r})")
    match = _MEMORY.match(value.lower())
    if match is None or match["unit"] not in MEMORY_UNITS:
        raise ValueError(f"memory size {value!r} is not a number with a unit; {_MEMORY_FIX}")
    size = float(match["number"]) * MEMORY_UNITS[match["unit"]]
    if not math.isfinite(size) or size <= 0:
        raise ValueError(f"memory size {value!r} must be positive; {_MEMORY_FIX}")
    return math.ceil(size / MEMORY_UNITS["mb"])


def _memory(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str):
        _fail("must be a memory size written as a string", _MEMORY_FIX)
    match = _MEMORY.match(value.lower())
    if match is None:
        _fail("is not a number with a memory unit", _MEMORY_FIX)
    if match["unit"] not in MEMORY_UNITS:
        _fail(f"has an unknown memory unit {match['unit']!r}", _MEMORY_FIX)
    number = float(match["number"])
    if not math.isfinite(number) or number <= 0:
        _fail("must be positive and finite", _MEMORY_FIX)
    return value


def _gpu_indices(value: Any) -> list[int]:
    fix = "write GPU indices as a list [0, 1], one number, or a string '0,1'"
    if isinstance(value, bool):
        _fail("must be GPU indices, not true/false", fix)
    if isinstance(value, int):
        indices = [value]
    elif isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        if not all(re.fullmatch(r"[+-]?[0-9]+", part) for part in parts):
            _fail("must be whole numbers separated by commas", fix)
        indices = [int(part) for part in parts]
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            _fail("must list whole numbers only", fix)
        indices = list(value)
    else:
        _fail("must be GPU indices", fix)

    if any(index < 0 for index in indices):
        _fail("must not contain a negative GPU index", "GPU indices count from 0")
    if len(set(indices)) != len(indices):
        _fail("must not list a GPU twice", "remove the repeated index")
    return indices


def _log_level(value: Any) -> str:
    choices = ", ".join(LOG_LEVELS)
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        _fail(f"must be one of {choices}", "for example 'info' or 'debug'")
    return value.lower()


def _experiment_type(value: Any) -> str:
    if isinstance(value, str) and value.lower() == "hpo":
        return "hpo"
    if isinstance(value, str) and value.lower() == "nas":
        _fail(
            "NAS experiments are not supported yet",
            "write 'hpo' (hyper-parameter optimisation) or remove experimentType",
        )
    _fail("must be 'hpo'", "remove experimentType, or write 'hpo'")


Text = Annotated[str, PlainValidator(_text)]
"""A non-empty string."""

Command = Annotated[str, PlainValidator(_command)]
"""A non-empty shell command."""

PathText = Annotated[str, PlainValidator(_path_text)]
"""A path as written (a string or ``os.PathLike``); resolved when the config is validated."""

Duration = Annotated[str | int | float, PlainValidator(_duration)]
"""A duration as written, accepted by :func:`~tunelab.config.parse_duration`."""

MemorySize = Annotated[str, PlainValidator(_memory)]
"""A memory size as written, accepted by :func:`parse_memory_size`."""

GpuIndices = Annotated[list[int], PlainValidator(_gpu_indices)]
"""GPU indices, stored as a list of distinct non-negative integers."""

LogLevel = Annotated[str, PlainValidator(_log_level)]
"""One of :data:`LOG_LEVELS`, stored in lower case."""

ExperimentType = Annotated[str, PlainValidator(_experiment_type)]
"""``'hpo'`` (NAS is refused until tunelab supports it)."""
