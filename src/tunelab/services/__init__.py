"""Training services: where trials run. One contract (:class:`TrainingService`), one
conformance suite, several places: this machine now, SSH hosts and Ray clusters next."""

from tunelab.services._base import Placement, TrainingService, TrialExit, TrialHandle, TrialSpec
from tunelab.services._gpu import GpuInfo, GpuProbe, GpuScheduler, nvml_probe
from tunelab.services._local import LocalTrainingService

__all__ = [
    "GpuInfo",
    "GpuProbe",
    "GpuScheduler",
    "LocalTrainingService",
    "Placement",
    "TrainingService",
    "TrialExit",
    "TrialHandle",
    "TrialSpec",
    "nvml_probe",
]
