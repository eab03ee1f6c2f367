"""Experiment configs: NNI's config files and search spaces, read and checked.

``load_config(path)`` reads a YAML or JSON config (NNI v2, or v1 converted to v2) and returns an
:class:`ExperimentConfig`; :meth:`ExperimentConfig.to_json` gives the canonical form that the
engine runs. Keys match as in NNI: case and underscores do not matter. Every problem is a
:class:`~tunelab.errors.ConfigError` naming the field, the rule, the value and a fix.
"""

from __future__ import annotations

from tunelab.config._base import SUPPORTED_PLATFORMS, UnknownFieldError
from tunelab.config._duration import DURATION_UNITS, DurationError, parse_duration
from tunelab.config._fields import LOG_LEVELS, MEMORY_UNITS, parse_memory_size
from tunelab.config._load import load_config
from tunelab.config._models import (
    AlgorithmConfig,
    CustomAlgorithmConfig,
    ExperimentConfig,
    LocalConfig,
    RayConfig,
    RemoteConfig,
    RemoteMachineConfig,
    TrainingServiceConfig,
)

__all__ = [
    "DURATION_UNITS",
    "LOG_LEVELS",
    "MEMORY_UNITS",
    "SUPPORTED_PLATFORMS",
    "AlgorithmConfig",
    "CustomAlgorithmConfig",
    "DurationError",
    "ExperimentConfig",
    "LocalConfig",
    "RayConfig",
    "RemoteConfig",
    "RemoteMachineConfig",
    "TrainingServiceConfig",
    "UnknownFieldError",
    "load_config",
    "parse_duration",
    "parse_memory_size",
]
