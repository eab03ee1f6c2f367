"""Durations (field case B21): the unit matrix, and durations in a config."""

from __future__ import annotations

from typing import Any

import pytest
from config_support import Project, valid

from tunelab.config import DURATION_UNITS, DurationError, parse_duration
from tunelab.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("2m", 120),
        ("1.5h", 5400),
        ("1d", 86400),
        (45, 45),
        ("45", 45),
        ("2M", 120),
        (" 3h ", 10800),
        (1.2, 2),  # rounded up to a whole second, as NNI does
        ("0.5s", 1),
    ],
)
def test_unit_matrix(value: Any, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["10x", "-5m", "0", 0, -3, "", "m", "nan", True, None, "1e999d"])
def test_refused_durations(value: Any) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(value)

    assert caught.value.fix and "s (seconds)" in caught.value.fix


def test_units() -> None:
    assert DURATION_UNITS == {"s": 1, "m": 60, "h": 3600, "d": 86400}


@pytest.mark.parametrize("field", ["maxExperimentDuration", "maxTrialDuration"])
@pytest.mark.parametrize("value", ["90s", "2m", "1.5h", "1d", 45])
def test_duration_is_kept_as_written(project: Project, field: str, value: Any) -> None:
    assert project.json(valid(**{field: value}))[field] == value


@pytest.mark.parametrize("field", ["maxExperimentDuration", "maxTrialDuration"])
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("10x", r"has an unknown time unit 'x' \(got '10x'\)"),
        ("-5m", r"must be positive and finite \(got '-5m'\)"),
        (True, r"must be a number of seconds or a string like '2m' \(got True\)"),
        ([1], r"must be a number of seconds or a string like '2m' \(got \[1\]\)"),
    ],
)
def test_bad_duration_names_the_field(project: Project, field: str, value: Any, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"^invalid config: {field}: {rule}; write a positive"):
        project.load(valid(**{field: value}))
