"""Tuners by name: NNI's built-in names (matched case-insensitively), and their classArgs.

``create_tuner(name, class_args)`` checks the class arguments against the tuner's constructor
before anything runs, so that an unknown argument or a bad value is a config error at
creation (``tuner.classArgs.optimize_mode: ...``) instead of a crash at the first suggestion.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tunelab.errors import ConfigError, Issue
from tunelab.tuners._base import Tuner
from tunelab.tuners._custom import (
    NniTunerAdapter,
    custom_instance,
    find_registered,
    load_class,
    registered_algorithms,
    validate_class_args,
)
from tunelab.tuners._grid import GridSearchTuner
from tunelab.tuners._random import RandomTuner
from tunelab.tuners._tpe import TpeArguments, TpeTuner

__all__ = ["available_tuners", "builtin_names", "create_tuner", "custom_tuner", "register_tuner"]


@dataclass(frozen=True)
class _Entry:
    name: str
    factory: Callable[..., Tuner]


_REGISTRY: dict[str, _Entry] = {}

# NNI's built-in tuners that tunelab does not run yet; named so that the error says so.
_NOT_YET = (
    "Anneal",
    "Evolution",
    "SMAC",
    "Batch",
    "BatchTuner",
    "Hyperband",
    "BOHB",
    "Metis",
    "MetisTuner",
    "GP",
    "GPTuner",
    "PBT",
    "PBTTuner",
    "DNGO",
    "DNGOTuner",
    "PPO",
    "PPOTuner",
    "RegularizedEvolutionTuner",
    "NetworkMorphism",
    "TPE_legacy",
)


def _normal(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def register_tuner(
    name: str, factory: Callable[..., Tuner], aliases: tuple[str, ...] = ()
) -> None:
    """Make a tuner available by name (and aliases) in every config."""
    entry = _Entry(name, factory)
    for key in (name, *aliases):
        _REGISTRY[_normal(key)] = entry


def available_tuners() -> list[str]:
    """The names of the tuners that can be used, each once."""
    return sorted({entry.name for entry in _REGISTRY.values()})


register_tuner("TPE", TpeTuner)
register_tuner("Random", RandomTuner, aliases=("RandomSearch",))
register_tuner("GridSearch", GridSearchTuner, aliases=("Grid",))


def create_tuner(name: str, class_args: Mapping[str, Any] | None = None) -> Tuner:
    """A tuner from its NNI name and class arguments.

    Raises:
        ConfigError: the name is unknown (the message names the closest one) or a class
            argument is unknown or invalid.
    """
    entry = _REGISTRY.get(_normal(name or ""))
    if entry is None:
        registered = find_registered("tuner", name or "")
        if registered is not None:
            return _registered_tuner(*registered, class_args or {})
        raise ConfigError(_unknown_name(name))
    args = dict(class_args or {})
    issues = _argument_issues(entry, args)
    if issues:
        raise ConfigError(issues)
    try:
        return entry.factory(**args)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            Issue(
                "tuner.classArgs",
                f"{entry.name} refused its arguments: {error}",
                args,
                show_value=False,
            )
        ) from None


def custom_tuner(
    class_name: str, code_directory: str | None, class_args: Mapping[str, Any] | None = None
) -> Tuner:
    """A tuner from a custom class (``tuner: {className, codeDirectory, classArgs}``).

    Raises:
        ConfigError: the class cannot be imported or refuses its arguments.
    """
    cls = load_class(class_name, code_directory, "tuner")
    instance = custom_instance(cls, class_args, "tuner")
    if isinstance(instance, Tuner):
        return instance
    return NniTunerAdapter(instance, cls.__name__)


def _registered_tuner(name: str, entry: dict[str, Any], class_args: Mapping[str, Any]) -> Tuner:
    validate_class_args(entry, class_args, "tuner")
    tuner = custom_tuner(str(entry["className"]), entry.get("codeDirectory"), class_args)
    return tuner


def builtin_names() -> set[str]:
    """Every name a built-in tuner answers to (registered algorithms may not take them)."""
    return {entry.name for entry in _REGISTRY.values()} | set(_REGISTRY) | set(_NOT_YET)


def _unknown_name(name: str) -> Issue:
    names = available_tuners() + sorted(registered_algorithms()["tuner"])
    if any(_normal(name) == _normal(other) for other in _NOT_YET):
        return Issue(
            "tuner.name",
            "this NNI tuner is not available in tunelab yet",
            name,
            "use one of " + ", ".join(names),
        )
    close = difflib.get_close_matches(name, names, 1, cutoff=0.5)
    fix = f"did you mean {close[0]!r}?" if close else "use one of " + ", ".join(names)
    return Issue("tuner.name", "unknown tuner", name, fix)


def _argument_issues(entry: _Entry, args: dict[str, Any]) -> list[Issue]:
    """Problems with class arguments that can be seen before the tuner is built."""
    accepted = _parameters(entry.factory)
    issues = []
    for key, value in args.items():
        where = f"tuner.classArgs.{key}"
        if accepted is not None and key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), 1)
            if close:
                fix = f"did you mean {close[0]!r}?"
            elif accepted:
                fix = f"{entry.name} takes " + ", ".join(sorted(accepted))
            else:
                fix = f"{entry.name} takes no class arguments"
            issues.append(Issue(where, f"unknown argument of {entry.name}", key, fix))
        elif key == "optimize_mode" and value not in ("maximize", "minimize"):
            issues.append(Issue(where, "must be 'maximize' or 'minimize'", value))
        elif (
            key == "seed"
            and value is not None
            and (isinstance(value, bool) or not isinstance(value, int) or value < 0)
        ):
            issues.append(Issue(where, "must be a non-negative integer", value))
        elif key == "tpe_args":
            issues.extend(_tpe_issues(value))
    return issues


def _tpe_issues(value: Any) -> list[Issue]:
    where = "tuner.classArgs.tpe_args"
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [Issue(where, "must be a mapping of TPE settings", value)]
    known = [name for name in TpeArguments.__dataclass_fields__]
    issues = []
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, 1)
            fix = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known)
            issues.append(Issue(f"{where}.{key}", "unknown TPE setting", key, fix))
    if issues:
        return issues
    try:
        TpeArguments(**value)
    except (TypeError, ValueError) as error:
        issues.append(Issue(where, str(error), dict(value), show_value=False))
    return issues


def _parameters(factory: Callable[..., Tuner]) -> set[str] | None:
    """The keyword arguments a factory takes; None when it takes any."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    names = set()
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            names.add(parameter.name)
    names.discard("self")
    return names
