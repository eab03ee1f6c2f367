"""Experiment configs: NNI's config files and search spaces, read and checked.

``load_config(path)`` reads a YAML or JSON config (NNI v2, or v1 converted to v2) and returns an
:class:`ExperimentConfig`; :meth:`ExperimentConfig.to_json` gives the canonical form that the
engine runs. Keys match as in NNI: case and underscores do not matter. Every problem is a
:class:`~tunelab.errors.ConfigError` naming the field, the rule, the value and a fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunelab.config._duration import DURATION_UNITS, DurationError, parse_duration

if TYPE_CHECKING:
    from tunelab.config._base import SUPPORTED_PLATFORMS, UnknownFieldError
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

# The config models (pydantic) load on first use: the manager and the REST API only parse
# durations, and should not pay for the models at start-up.
_LAZY = {
    "SUPPORTED_PLATFORMS": "_base",
    "UnknownFieldError": "_base",
    "LOG_LEVELS": "_fields",
    "MEMORY_UNITS": "_fields",
    "parse_memory_size": "_fields",
    "load_config": "_load",
    "AlgorithmConfig": "_models",
    "CustomAlgorithmConfig": "_models",
    "ExperimentConfig": "_models",
    "LocalConfig": "_models",
    "RayConfig": "_models",
    "RemoteConfig": "_models",
    "RemoteMachineConfig": "_models",
    "TrainingServiceConfig": "_models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tunelab.config' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"tunelab.config.{module}"), name)


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
