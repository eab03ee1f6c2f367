"""From a validated config to the parts of a running experiment.

``prepare`` is run by ``tunelab create`` and ``tunelab config check`` before anything is
created, and again by the manager when it starts: a config that passes here can be run, and a
config that cannot be run (an unknown tuner or class argument, GPUs that do not exist) fails
here with a :class:`~tunelab.errors.ConfigError`, so no experiment is left half-created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.assessors import Assessor, create_assessor, custom_assessor
from tunelab.config import parse_duration
from tunelab.engine._engine import EngineSettings
from tunelab.services import TrainingService, create_service
from tunelab.space import SearchSpace
from tunelab.tuners import Tuner, create_tuner, custom_tuner

__all__ = ["Prepared", "prepare"]


@dataclass
class Prepared:
    """A config made ready to run: its engine settings, tuner and training service."""

    config: dict[str, Any]
    settings: EngineSettings
    tuner: Tuner
    service: TrainingService
    space: SearchSpace
    assessor: Assessor | None = None


def _duration(config: dict[str, Any], key: str) -> float | None:
    value = config.get(key)
    return None if value is None else parse_duration(value)


def _tuner(section: dict[str, Any]) -> Tuner:
    if section.get("className"):
        return custom_tuner(
            str(section["className"]), section.get("codeDirectory"), section.get("classArgs")
        )
    return create_tuner(str(section.get("name", "")), section.get("classArgs"))


def _assessor(section: dict[str, Any] | None) -> Assessor | None:
    if not section:
        return None
    if section.get("className"):
        return custom_assessor(
            str(section["className"]), section.get("codeDirectory"), section.get("classArgs")
        )
    return create_assessor(str(section.get("name", "")), section.get("classArgs"))


def prepare(config: dict[str, Any]) -> Prepared:
    """Build the tuner, training service and settings of a canonical config (camelCase JSON).

    Raises:
        ConfigError: the config cannot be run as written.
    """
    space = SearchSpace.from_json(config.get("searchSpace") or {})
    tuner = _tuner(config.get("tuner") or {})
    tuner.update_search_space(space)
    assessor = _assessor(config.get("assessor"))

    service = create_service(config)
    gpu_number = config.get("trialGpuNumber")
    service.check_feasible(gpu_number)
    settings = EngineSettings(
        trial_command=config["trialCommand"],
        code_dir=Path(config["trialCodeDirectory"]),
        concurrency=int(config["trialConcurrency"]),
        gpu_number=gpu_number,
        max_trials=config.get("maxTrialNumber"),
        max_duration=_duration(config, "maxExperimentDuration"),
        max_trial_duration=_duration(config, "maxTrialDuration"),
        optimize_mode=tuner.optimize_mode,
    )
    return Prepared(config, settings, tuner, service, space, assessor)
