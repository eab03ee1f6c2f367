"""Assessors by name (NNI's built-in names, case-insensitive), custom classes, and the
adapter that runs an NNI-style assessor class (``assess_trial`` / ``trial_end``)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

from tunelab.assessors._base import Assessor
from tunelab.assessors._medianstop import MedianstopAssessor
from tunelab.errors import ConfigError, Issue

__all__ = ["NniAssessorAdapter", "available_assessors", "create_assessor", "custom_assessor"]

_BUILTIN: dict[str, type[Assessor]] = {"medianstop": MedianstopAssessor}
_NOT_YET = ("Curvefitting",)


def available_assessors() -> list[str]:
    return sorted(cls.name for cls in _BUILTIN.values())


class NniAssessorAdapter(Assessor):
    """An NNI-style assessor behind tunelab's contract (trial ids are the trial numbers as
    strings, as NNI's were strings)."""

    def __init__(self, instance: Any, name: str) -> None:
        self.instance = instance
        self.label = name

    def assess(self, trial: int, history: list[float]) -> bool:
        result = self.instance.assess_trial(str(trial), list(history))
        value = getattr(result, "value", result)
        return bool(value)

    def trial_end(self, trial: int, succeeded: bool, history: list[float]) -> None:
        if hasattr(self.instance, "trial_end"):
            self.instance.trial_end(str(trial), succeeded)


def assessor_name(assessor: Assessor) -> str:
    return getattr(assessor, "label", None) or assessor.name or type(assessor).__name__


def create_assessor(name: str, class_args: Mapping[str, Any] | None = None) -> Assessor:
    """An assessor from its NNI name (or a registered name) and class arguments.

    Raises:
        ConfigError: unknown name, unknown or invalid class argument.
    """
    cls = _BUILTIN.get(name.replace("_", "").lower())
    if cls is None:
        from tunelab.tuners._custom import find_registered, validate_class_args

        registered = find_registered("assessor", name)
        if registered is not None:
            entry = registered[1]
            validate_class_args(entry, class_args or {}, "assessor")
            return custom_assessor(str(entry["className"]), entry.get("codeDirectory"), class_args)
        raise ConfigError(_unknown(name))
    args = dict(class_args or {})
    accepted = set(inspect.signature(cls).parameters)
    for key in args:
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), 1)
            fix = (
                f"did you mean {close[0]!r}?" if close else "takes " + ", ".join(sorted(accepted))
            )
            raise ConfigError(
                Issue(f"assessor.classArgs.{key}", f"unknown argument of {cls.name}", key, fix)
            )
    try:
        return cls(**args)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            Issue("assessor.classArgs", str(error), args, show_value=False)
        ) from None


def custom_assessor(
    class_name: str, code_directory: str | None, class_args: Mapping[str, Any] | None = None
) -> Assessor:
    """An assessor from a custom class (``assessor: {className, codeDirectory}``)."""
    from tunelab.tuners._custom import custom_instance, load_class

    cls = load_class(class_name, code_directory, "assessor")
    instance = custom_instance(cls, class_args, "assessor")
    if isinstance(instance, Assessor):
        return instance
    return NniAssessorAdapter(instance, cls.__name__)


def _unknown(name: str) -> Issue:
    names = available_assessors()
    if name.lower() in (n.lower() for n in _NOT_YET):
        return Issue(
            "assessor.name",
            "this NNI assessor is not available in tunelab yet",
            name,
            "use " + ", ".join(names) + ", or no assessor",
        )
    close = difflib.get_close_matches(name, names, 1, cutoff=0.5)
    fix = f"did you mean {close[0]!r}?" if close else "use one of " + ", ".join(names)
    return Issue("assessor.name", "unknown assessor", name, fix)
