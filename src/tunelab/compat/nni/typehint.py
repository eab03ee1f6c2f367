"""``nni.typehint``: the type names NNI trial code annotates with."""

from __future__ import annotations

from typing import Any, Union

__all__ = ["ParameterRecord", "Parameters", "SearchSpace", "TrialMetric", "TrialRecord"]

Parameters = dict[str, Any]
SearchSpace = dict[str, Any]
ParameterRecord = dict[str, Any]
TrialMetric = Union[float, dict[str, Any]]  # noqa: UP007
TrialRecord = dict[str, Any]
