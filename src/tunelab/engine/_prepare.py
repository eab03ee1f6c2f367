"""From a validated config to the parts of a running experiment.

``prepare`` is run by ``tunelab create`` and ``tunelab config check`` before anything is
created, and again by the manager when it starts: a config that passes here can be run, and a
config that cannot be run (an unknown tuner or class argument, GPUs that do not exist) fails
here with a :class:`~tunelab.errors.ConfigError`, so no experiment is left half-created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import parse_duration
from tunelab.engine._engine import EngineSettings
from tunelab.errors import ConfigError, Issue
from tunelab.services import GpuInfo, LocalTrainingService, TrainingService
from tunelab.space import SearchSpace
from tunelab.tuners import Tuner, create_tuner

__all__ = ["Prepared", "prepare"]


@dataclass
class Prepared:
    """A config made ready to run: its engine settings, tuner and training service."""

    config: dict[str, Any]
    settings: EngineSettings
    tuner: Tuner
    service: TrainingService
    space: SearchSpace


def _duration(config: dict[str, Any], key: str) -> float | None:
    value = config.get(key)
    return None if value is None else parse_duration(value)


def _fake_gpus() -> list[GpuInfo] | None:
    """GPUs described by ``TUNELAB_FAKE_GPUS`` ("0:0,1:2" = index:foreign processes).

    This machine has no GPU, so tests of GPU placement through a real manager describe the
    GPUs they pretend to have with this variable. It is a test aid and says so in the logs.
    """
    text = os.environ.get("TUNELAB_FAKE_GPUS")
    if text is None:
        return None
    gpus = []
    for item in filter(None, text.split(",")):
        index, _, foreign = item.partition(":")
        gpus.append(GpuInfo(int(index), int(foreign or 0)))
    return gpus


def _service(config: dict[str, Any]) -> TrainingService:
    service_config = config.get("trainingService")
    if isinstance(service_config, list):
        if len(service_config) != 1:
            raise ConfigError(
                Issue(
                    "trainingService",
                    "more than one training service (hybrid) is not supported yet",
                    [item.get("platform") for item in service_config],
                    "list one training service",
                )
            )
        service_config = service_config[0]
    service_config = service_config or {"platform": "local"}
    fake = _fake_gpus()
    return LocalTrainingService(
        gpu_indices=service_config.get("gpuIndices"),
        max_trials_per_gpu=service_config.get("maxTrialNumberPerGpu") or 1,
        use_active_gpu=service_config.get("useActiveGpu"),
        gpu_probe=(lambda: fake) if fake is not None else None,
    )


def prepare(config: dict[str, Any]) -> Prepared:
    """Build the tuner, training service and settings of a canonical config (camelCase JSON).

    Raises:
        ConfigError: the config cannot be run as written.
    """
    space = SearchSpace.from_json(config.get("searchSpace") or {})
    tuner_config = config.get("tuner") or {}
    if tuner_config.get("className"):
        raise ConfigError(
            Issue(
                "tuner.className",
                "custom tuner classes are not supported yet",
                tuner_config.get("className"),
                "use a built-in tuner by name (TPE, Random, GridSearch)",
            )
        )
    tuner = create_tuner(str(tuner_config.get("name", "")), tuner_config.get("classArgs"))
    tuner.update_search_space(space)

    service = _service(config)
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
    return Prepared(config, settings, tuner, service, space)
