"""Training services: where trials run. One contract (:class:`TrainingService`), one
conformance suite (tests/conformance), several places: this machine, SSH hosts, Ray clusters.
``create_service(config)`` builds the one a config asks for."""

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
from tunelab.services._remote import RemoteMachine, RemoteTrainingService

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
