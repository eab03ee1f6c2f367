"""Training services by platform: from a config's ``trainingService`` section to a service.

Each platform module registers a builder here. A builder receives one training-service
section (canonical camelCase JSON, secrets included when the manager has them) and the whole
experiment config, and returns a :class:`TrainingService`. A list of sections (hybrid) is
handed to the ``hybrid`` builder when one is registered.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tunelab.errors import ConfigError, Issue
from tunelab.services._base import TrainingService
from tunelab.services._gpu import GpuInfo
from tunelab.services._local import LocalTrainingService

__all__ = ["create_service", "fake_gpus", "register_hybrid", "register_platform"]

Builder = Callable[[dict[str, Any], dict[str, Any]], TrainingService]
HybridBuilder = Callable[[list[TrainingService], dict[str, Any]], TrainingService]

_BUILDERS: dict[str, Builder] = {}
_HYBRID: list[HybridBuilder] = []


def register_platform(platform: str, builder: Builder) -> None:
    """Make ``platform: <platform>`` usable in configs."""
    _BUILDERS[platform] = builder


def register_hybrid(builder: HybridBuilder) -> None:
    """Set how a list of training services is combined into one."""
    _HYBRID[:] = [builder]


def fake_gpus() -> list[GpuInfo] | None:
    """GPUs described by ``TUNELAB_FAKE_GPUS`` ("0:0,1:2" = index:foreign processes).

    This machine has no GPU, so tests of GPU placement through a real manager describe the
    GPUs they pretend to have with this variable. It is a test aid: without it, GPUs are
    found through NVIDIA's management library.
    """
    text = os.environ.get("TUNELAB_FAKE_GPUS")
    if text is None:
        return None
    gpus = []
    for item in filter(None, text.split(",")):
        index, _, foreign = item.partition(":")
        gpus.append(GpuInfo(int(index), int(foreign or 0)))
    return gpus


def _local(section: dict[str, Any], config: dict[str, Any]) -> TrainingService:
    fake = fake_gpus()
    return LocalTrainingService(
        gpu_indices=section.get("gpuIndices"),
        max_trials_per_gpu=section.get("maxTrialNumberPerGpu") or 1,
        use_active_gpu=section.get("useActiveGpu"),
        gpu_probe=(lambda: fake) if fake is not None else None,
    )


register_platform("local", _local)


def create_service(config: dict[str, Any]) -> TrainingService:
    """The training service of a canonical experiment config.

    Raises:
        ConfigError: a platform tunelab cannot run, or hybrid without a hybrid service.
    """
    sections = config.get("trainingService") or {"platform": "local"}
    if isinstance(sections, list):
        services = [
            _build(section, config, f"trainingService[{index}]")
            for index, section in enumerate(sections)
        ]
        if len(services) == 1:
            return services[0]
        if not _HYBRID:
            raise ConfigError(
                Issue(
                    "trainingService",
                    "several training services in one experiment (hybrid) are not available",
                    [section.get("platform") for section in sections],
                    "list one training service",
                )
            )
        return _HYBRID[0](services, config)
    return _build(sections, config, "trainingService")


def _build(section: dict[str, Any], config: dict[str, Any], where: str) -> TrainingService:
    platform = str(section.get("platform", "local"))
    builder = _BUILDERS.get(platform)
    if builder is None:
        raise ConfigError(
            Issue(
                f"{where}.platform",
                "this platform is not available in tunelab",
                platform,
                "use one of " + ", ".join(sorted(_BUILDERS)),
            )
        )
    return builder(section, config)
