"""Custom algorithms: NNI-style tuner and assessor classes, from a code directory or
registered by name (``tunelab algo register``).

A config names a custom class as NNI does: ``{className: my_tuner.MyTuner, codeDirectory:
./tuners, classArgs: {...}}``. The class is imported in the manager (with the code directory
and tunelab's ``nni`` module on ``sys.path``, so ``from nni.tuner import Tuner`` works without
NNI installed) and wrapped so that it follows tunelab's contract. A class written against
tunelab's own :class:`~tunelab.tuners.Tuner` is used as it is.

Registered algorithms live in ``$TUNELAB_HOME/algorithms.json``: ``{"tuner": {name: {...}},
"assessor": {name: {...}}}``, each entry holding ``className`` (an importable ``module.Class``),
optionally ``codeDirectory`` and ``classArgsValidator``. A registered name is then used in any
config like a built-in one; built-in names cannot be taken.
"""

from __future__ import annotations

import copy
import difflib
import enum
import importlib
import inspect
import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError, Issue, NoMoreTrials, UsageError
from tunelab.space import SearchSpace
from tunelab.store import tunelab_home
from tunelab.tuners._base import Observation, Tuner

__all__ = [
    "ALGORITHM_KINDS",
    "NniTunerAdapter",
    "custom_instance",
    "load_class",
    "register_algorithm",
    "registered_algorithms",
    "unregister_algorithm",
]

logger = logging.getLogger("tunelab.tuners")

ALGORITHM_KINDS = ("tuner", "assessor")
_REGISTRY_FILE = "algorithms.json"


def _normal(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


# -- loading ----------------------------------------------------------------------------------


def load_class(class_name: str, code_directory: str | None, where: str) -> type:
    """Import ``module.Class``, with ``code_directory`` first on ``sys.path``.

    Raises:
        ConfigError: the name is malformed, or the module or class cannot be imported (the
            message carries the import's own error).
    """
    module_name, _, attribute = class_name.rpartition(".")
    if not module_name or not attribute:
        raise ConfigError(
            Issue(
                f"{where}.className",
                "must be 'module.Class'",
                class_name,
                "for example my_tuner.MyTuner, with my_tuner.py in codeDirectory",
            )
        )
    _make_nni_importable()
    if code_directory:
        folder = os.fspath(Path(code_directory).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # user code: any error at import is the user's to see
        raise ConfigError(
            Issue(
                f"{where}.className",
                f"cannot import module {module_name!r}: {type(error).__name__}: {error}",
                class_name,
                "check codeDirectory and the module's own imports",
                show_value=False,
            )
        ) from None
    found = getattr(module, attribute, None)
    if not inspect.isclass(found):
        names = [n for n, v in vars(module).items() if inspect.isclass(v)]
        close = difflib.get_close_matches(attribute, names, 1)
        fix = f"did you mean {close[0]!r}?" if close else f"{module_name} defines no such class"
        raise ConfigError(Issue(f"{where}.className", "no such class", class_name, fix))
    return found


def _make_nni_importable() -> None:
    """Let user code import ``nni`` (tunelab's shim) unless a real NNI is installed."""
    try:
        importlib.import_module("nni")
    except ImportError:
        from tunelab.compat import nni_path

        sys.path.append(nni_path())


def custom_instance(cls: type, class_args: Mapping[str, Any] | None, where: str) -> Any:
    """Build a custom class with its classArgs; a bad argument is a ConfigError."""
    try:
        return cls(**dict(class_args or {}))
    except Exception as error:  # user code
        raise ConfigError(
            Issue(
                f"{where}.classArgs",
                f"{cls.__name__}({', '.join(sorted(class_args or {}))}) failed: "
                f"{type(error).__name__}: {error}",
                dict(class_args or {}),
                show_value=False,
            )
        ) from None


def _mode_of(instance: Any) -> str:
    mode = getattr(instance, "optimize_mode", None)
    if isinstance(mode, enum.Enum):
        mode = mode.value
    if isinstance(mode, str) and mode.lower() in ("maximize", "minimize"):
        return mode.lower()
    return "maximize"


class NniTunerAdapter(Tuner):
    """An NNI-style tuner (``generate_parameters``, ``receive_trial_result``, ...) behind
    tunelab's contract.

    The wrapped tuner owns its search: it may repeat parameters, and it says when it has
    nothing left by raising NNI's ``NoMoreTrialError``. Results of trials it did not suggest
    (user-added, rerun, imported, or replayed when the experiment resumes) reach it through
    its ``import_data``, as NNI feeds a resumed tuner.
    """

    def __init__(self, instance: Any, name: str) -> None:
        super().__init__(_mode_of(instance), seed=0)
        self.instance = instance
        self.name = name  # type: ignore[misc]
        self._foreign: set[int] = set()

    def update_search_space(self, space: SearchSpace) -> None:
        """Raises:
        ConfigError: the tuner refused the space (its own exception, in one line)."""
        super().update_search_space(space)
        try:
            self.instance.update_search_space(copy.deepcopy(dict(space.raw)))
        except Exception as error:  # user code
            raise ConfigError(
                Issue(
                    "searchSpace",
                    f"the tuner {self.name} refused it in update_search_space: "
                    f"{type(error).__name__}: {error}",
                    None,
                    "change the search space, or the tuner, so that it takes the space",
                    show_value=False,
                )
            ) from None

    def suggest(self, trial: int) -> dict[str, Any]:
        try:
            parameters = self.instance.generate_parameters(trial)
        except Exception as error:
            if type(error).__name__ == "NoMoreTrialError":
                raise NoMoreTrials(str(error) or f"{self.name} has nothing left") from None
            raise
        if not isinstance(parameters, dict):
            raise TypeError(
                f"{self.name}.generate_parameters must return a dict of parameters "
                f"(got {type(parameters).__name__})"
            )
        point = self._require_space().from_parameters(parameters)
        self.history[trial] = Observation(trial, parameters, point)
        return parameters

    def observe(self, trial: int, value: float, metric: Any = None) -> None:
        super().observe(trial, value, metric)
        observation = self.history.get(trial)
        if observation is None:
            return
        reported = metric if metric is not None else value
        if trial in self._foreign:
            self.instance.import_data([{"parameter": observation.parameters, "value": reported}])
        else:
            # NNI passes customized= with every result of a trial its tuner suggested.
            self.instance.receive_trial_result(
                trial, observation.parameters, reported, customized=False
            )

    def trial_end(self, trial: int, succeeded: bool) -> None:
        super().trial_end(trial, succeeded)
        if trial not in self._foreign and hasattr(self.instance, "trial_end"):
            self.instance.trial_end(trial, succeeded)

    def add_trial(self, trial: int, parameters: Mapping[str, Any]) -> None:
        super().add_trial(trial, parameters)
        self._foreign.add(trial)

    def loss(self, value: float) -> float:
        return math.inf if not math.isfinite(value) else super().loss(value)


# -- the registry of named custom algorithms --------------------------------------------------


def _registry_path() -> Path:
    return tunelab_home() / _REGISTRY_FILE


def registered_algorithms() -> dict[str, dict[str, dict[str, Any]]]:
    """``{"tuner": {name: entry}, "assessor": {name: entry}}`` of this machine."""
    path = _registry_path()
    empty: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in ALGORITHM_KINDS}
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return empty
    except (OSError, ValueError) as error:
        raise UsageError(f"{path} cannot be read ({error}); remove or fix it") from None
    for kind in ALGORITHM_KINDS:
        empty[kind].update(data.get(kind) or {})
    return empty


def find_registered(kind: str, name: str) -> tuple[str, dict[str, Any]] | None:
    for registered, entry in registered_algorithms()[kind].items():
        if _normal(registered) == _normal(name):
            return registered, entry
    return None


def register_algorithm(meta: Mapping[str, Any], builtin: set[str]) -> tuple[str, str]:
    """Register a custom algorithm from NNI's meta fields (algoType, builtinName, className,
    classArgsValidator; codeDirectory optional). Returns (kind, name).

    Raises:
        UsageError: a field is missing or wrong, the class cannot be imported, or the name is
            taken by a built-in algorithm.
    """
    kind = str(meta.get("algoType", "")).lower()
    if kind == "advisor":
        kind = "tuner"
    if kind not in ALGORITHM_KINDS:
        raise UsageError(f"algoType must be 'tuner' or 'assessor' (got {meta.get('algoType')!r})")
    name = meta.get("builtinName")
    class_name = meta.get("className")
    if not isinstance(name, str) or not name:
        raise UsageError("builtinName: the name to use in configs is missing")
    if not isinstance(class_name, str) or not class_name:
        raise UsageError("className: the class ('module.Class') is missing")
    if _normal(name) in {_normal(b) for b in builtin}:
        raise UsageError(f"builtinName {name!r} is a built-in algorithm; choose another name")
    code_directory = meta.get("codeDirectory")
    try:
        load_class(class_name, code_directory, f"algo {name}")
    except ConfigError as error:
        raise UsageError(str(error)) from None

    entry: dict[str, Any] = {"className": class_name}
    if code_directory:
        entry["codeDirectory"] = os.fspath(Path(code_directory).resolve())
    if meta.get("classArgsValidator"):
        entry["classArgsValidator"] = meta["classArgsValidator"]
    data = registered_algorithms()
    data[kind][name] = entry
    _write_registry(data)
    return kind, name


def unregister_algorithm(name: str, builtin: set[str]) -> str:
    """Remove a registered algorithm by name; returns its kind."""
    if _normal(name) in {_normal(b) for b in builtin}:
        raise UsageError(f"{name!r} is a built-in algorithm and cannot be unregistered")
    data = registered_algorithms()
    for kind in ALGORITHM_KINDS:
        for registered in list(data[kind]):
            if _normal(registered) == _normal(name):
                del data[kind][registered]
                _write_registry(data)
                return kind
    known = sorted(n for kind in ALGORITHM_KINDS for n in data[kind])
    raise UsageError(
        f"no registered algorithm named {name!r} (registered: {', '.join(known) or 'none'})"
    )


def _write_registry(data: Mapping[str, Any]) -> None:
    path = _registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def validate_class_args(
    entry: Mapping[str, Any], class_args: Mapping[str, Any], where: str
) -> None:
    """Run a registered algorithm's classArgsValidator (NNI's ``validate_class_args``)."""
    validator_name = entry.get("classArgsValidator")
    if not validator_name:
        return
    validator_cls = load_class(str(validator_name), entry.get("codeDirectory"), where)
    try:
        validator_cls().validate_class_args(**dict(class_args))
    except Exception as error:  # user code
        raise ConfigError(
            Issue(
                f"{where}.classArgs",
                f"rejected by {validator_name}: {error}",
                dict(class_args),
                show_value=False,
            )
        ) from None
