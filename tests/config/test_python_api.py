"""Configs built in Python, NNI style: constructors, then attributes one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import SPACE

from tunelab.config import (
    AlgorithmConfig,
    CustomAlgorithmConfig,
    ExperimentConfig,
    LocalConfig,
    RayConfig,
    RemoteConfig,
    RemoteMachineConfig,
    UnknownFieldError,
)
from tunelab.errors import ConfigError


def test_keyword_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = ExperimentConfig(
        trial_command="python3 trial.py",
        trial_concurrency=2,
        search_space=SPACE,
        tuner=AlgorithmConfig(name="TPE", class_args={"optimize_mode": "maximize"}),
        training_service=LocalConfig(use_active_gpu=False),
    )

    canonical = config.to_json()

    assert canonical["trialCodeDirectory"] == str(tmp_path)
    assert canonical["tuner"] == {"name": "TPE", "classArgs": {"optimize_mode": "maximize"}}
    assert canonical["trainingService"]["useActiveGpu"] is False


def test_attribute_by_attribute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = ExperimentConfig("local")
    config.trial_command = "python3 trial.py"
    config.trial_concurrency = 2
    config.search_space = SPACE
    assert config.tuner is not None
    config.tuner.name = "TPE"
    config.tuner.class_args = {"optimize_mode": "maximize"}
    config.max_trial_number = 10
    assert isinstance(config.training_service, LocalConfig)
    config.training_service.use_active_gpu = True

    canonical = config.to_json()

    assert canonical["tuner"]["name"] == "TPE"
    assert canonical["maxTrialNumber"] == 10
    assert canonical["trainingService"]["useActiveGpu"] is True


def test_empty_config_reports_what_is_missing() -> None:
    with pytest.raises(ConfigError) as caught:
        ExperimentConfig().validate()

    wheres = {issue.where for issue in caught.value.issues}
    assert wheres == {"searchSpace", "trialCommand", "trialConcurrency", "tuner"}


@pytest.mark.parametrize(
    ("platform", "kind"), [("local", LocalConfig), ("remote", RemoteConfig), ("ray", RayConfig)]
)
def test_platform_argument(platform: str, kind: type) -> None:
    assert isinstance(ExperimentConfig(platform).training_service, kind)


def test_platform_list_argument() -> None:
    services = ExperimentConfig(["local", "ray"]).training_service

    assert isinstance(services, list)
    assert [service.platform for service in services] == ["local", "ray"]


def test_remote_machines_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = ExperimentConfig("remote", trial_command="x", trial_concurrency=1, search_space={})
    assert config.tuner is not None
    config.tuner.name = "Random"
    assert isinstance(config.training_service, RemoteConfig)
    config.training_service.machine_list.append(RemoteMachineConfig(host="h", user="u"))

    assert config.to_json()["trainingService"]["machineList"][0]["host"] == "h"


def test_appended_values_are_checked_by_validate() -> None:
    config = ExperimentConfig(
        "remote", trial_command="x", trial_concurrency=1, search_space={}, tuner={"name": "TPE"}
    )
    assert isinstance(config.training_service, RemoteConfig)
    config.training_service.machine_list.append({"host": "h", "user": "u", "port": "22"})  # type: ignore[arg-type]

    with pytest.raises(ConfigError, match=r"trainingService\.machineList\[0\]\.port: must be a"):
        config.validate()


def test_dicts_are_converted_on_assignment() -> None:
    config = ExperimentConfig()
    config.tuner = {"name": "TPE"}  # type: ignore[assignment]
    config.training_service = {"platform": "ray", "trialCpuNumber": 2}  # type: ignore[assignment]

    assert isinstance(config.tuner, AlgorithmConfig)
    assert isinstance(config.training_service, RayConfig)


def test_unknown_attribute_raises_attribute_error() -> None:
    config = ExperimentConfig()

    with pytest.raises(AttributeError, match=r"trial_comand: ExperimentConfig has no such field"):
        config.trial_comand = "x"
    with pytest.raises(UnknownFieldError, match=r"did you mean 'trial_command'\?"):
        config.trialCommand = "x"
    with pytest.raises(ConfigError, match=r"did you mean 'name'\?"):
        AlgorithmConfig().nmae = "TPE"


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("trial_concurrency", True, r"trialConcurrency: must be a whole number, not true/false"),
        ("trial_concurrency", 0, r"trialConcurrency: must be greater than 0"),
        ("max_experiment_duration", "10x", r"maxExperimentDuration: has an unknown time unit"),
        ("training_service", {"platform": "aml"}, r"trainingService\.platform: 'aml' is an NNI"),
        ("tuner", "TPE", r"tuner: must be a mapping"),
    ],
)
def test_assignment_is_type_checked(attribute: str, value: object, message: str) -> None:
    config = ExperimentConfig()

    with pytest.raises(ConfigError, match=message):
        setattr(config, attribute, value)


def test_failed_assignment_keeps_the_old_value() -> None:
    config = ExperimentConfig(trial_concurrency=2)

    with pytest.raises(ConfigError):
        config.trial_concurrency = -1

    assert config.trial_concurrency == 2


def test_constructor_type_errors_are_config_errors() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^invalid config \(2 problems\): trialConcurrency: .*"
        r"trainingService\.gpuIndices: ",
    ):
        ExperimentConfig(
            trial_concurrency="2", training_service={"gpuIndices": [0, 0], "platform": "local"}
        )


def test_nested_constructor_errors_keep_their_path() -> None:
    with pytest.raises(ConfigError, match=r"machineList\[0\]\.port: must be less than 65536"):
        RemoteConfig(machine_list=[{"host": "h", "port": 70000}])


def test_platform_of_a_service_class_is_fixed() -> None:
    with pytest.raises(
        ConfigError,
        match=r"platform: must be 'local' in a LocalConfig .*"
        r"use RemoteConfig for 'remote'",
    ):
        LocalConfig(platform="remote")
    assert LocalConfig(platform="LOCAL").platform == "local"


def test_path_objects_are_accepted(tmp_path: Path) -> None:
    config = ExperimentConfig(
        trial_command="x",
        trial_concurrency=1,
        search_space={},
        tuner={"name": "TPE"},
        trial_code_directory=tmp_path,
    )

    assert config.to_json()["trialCodeDirectory"] == str(tmp_path)


def test_custom_algorithm_config_alias(tmp_path: Path) -> None:
    algorithm = CustomAlgorithmConfig(class_name="my.Tuner", code_directory=tmp_path)

    assert isinstance(algorithm, AlgorithmConfig)
    assert algorithm.code_directory == str(tmp_path)


def test_tuner_set_to_none_is_missing() -> None:
    config = ExperimentConfig(trial_command="x", trial_concurrency=1, search_space={})
    config.tuner = None

    with pytest.raises(ConfigError, match=r"tuner: must be given"):
        config.validate()


def test_v1_converted_is_false_for_python_configs() -> None:
    assert ExperimentConfig().v1_converted is False


def test_parts_of_a_config_validate_on_their_own() -> None:
    service = RemoteConfig(machine_list=[RemoteMachineConfig(host="h", user="u")])
    service.validate()
    service.machine_list.append({"host": 5})  # type: ignore[arg-type]

    with pytest.raises(ConfigError, match=r"^invalid config: machineList\[1\]\.host: must be a"):
        service.validate()
