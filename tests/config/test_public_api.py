"""The public surface of tunelab.config: a change to it is a decision, so a test notices it."""

from __future__ import annotations

import tunelab.config

EXPECTED = {
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
}


def test_all_lists_the_public_names() -> None:
    assert set(tunelab.config.__all__) == EXPECTED


def test_every_public_name_exists() -> None:
    for name in tunelab.config.__all__:
        assert getattr(tunelab.config, name) is not None


def test_supported_platforms() -> None:
    assert tunelab.config.SUPPORTED_PLATFORMS == ("local", "remote", "ray")
