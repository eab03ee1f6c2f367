"""Training services: where trials run. One contract (:class:`TrainingService`), one
conformance suite (tests/conformance), several places: this machine, SSH hosts, Ray clusters.
``create_service(config)`` builds the one a config asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunelab.services import _ray  # noqa: F401 - registers platform: ray (imports no ray)
from tunelab.services._base import Placement, TrainingService, TrialExit, TrialHandle, TrialSpec
from tunelab.services._factory import (
    create_service,
    fake_gpus,
    register_hybrid,
    register_platform,
)
from tunelab.services._gpu import GpuInfo, GpuProbe, GpuScheduler, nvml_probe
from tunelab.services._hybrid import HybridTrainingService  # registers lists of services
from tunelab.services._local import LocalTrainingService, kill_tree

if TYPE_CHECKING:
    from tunelab.services._remote import RemoteMachine, RemoteTrainingService


def _build_remote(section: dict[str, Any], config: dict[str, Any]) -> TrainingService:
    # asyncssh loads only for experiments that use SSH hosts.
    from tunelab.services._remote import build_remote

    return build_remote(section, config)


register_platform("remote", _build_remote)


def __getattr__(name: str) -> Any:
    if name in ("RemoteMachine", "RemoteTrainingService"):
        from tunelab.services import _remote

        return getattr(_remote, name)
    raise AttributeError(f"module 'tunelab.services' has no attribute {name!r}")


__all__ = [
    "GpuInfo",
    "GpuProbe",
    "GpuScheduler",
    "HybridTrainingService",
    "LocalTrainingService",
    "Placement",
    "RemoteMachine",
    "RemoteTrainingService",
    "TrainingService",
    "TrialExit",
    "TrialHandle",
    "TrialSpec",
    "create_service",
    "fake_gpus",
    "kill_tree",
    "nvml_probe",
    "register_hybrid",
    "register_platform",
]
