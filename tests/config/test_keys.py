"""Keys match as in NNI: case and underscores do not matter, at every level."""

from __future__ import annotations

from typing import Any

import pytest
from config_support import SPACE, Project, valid

from tunelab.config import AlgorithmConfig, ExperimentConfig, LocalConfig, RemoteMachineConfig
from tunelab.errors import ConfigError


@pytest.mark.parametrize(
    "key", ["trialConcurrency", "trial_concurrency", "TRIALCONCURRENCY", "Trial_Concurrency"]
)
def test_top_level_key_spellings(project: Project, key: str) -> None:
    data = valid(trialConcurrency=None)
    data[key] = 3

    assert project.json(data)["trialConcurrency"] == 3


def test_snake_case_config_file(project: Project) -> None:
    data = {
        "experiment_name": "snake",
        "search_space_file": "search_space.json",
        "trial_command": "python3 trial.py",
        "trial_code_directory": ".",
        "trial_concurrency": 1,
        "max_experiment_duration": "1h",
        "tuner": {"name": "TPE", "class_args": {"optimize_mode": "minimize"}},
        "training_service": {
            "platform": "local",
            "use_active_gpu": True,
            "max_trial_number_per_gpu": 2,
            "gpu_indices": [0],
        },
        "trial_gpu_number": 1,
    }

    canonical = project.json(data)

    assert canonical["experimentName"] == "snake"
    assert canonical["maxExperimentDuration"] == "1h"
    assert canonical["tuner"] == {"name": "TPE", "classArgs": {"optimize_mode": "minimize"}}
    service = canonical["trainingService"]
    assert service["useActiveGpu"] is True
    assert service["maxTrialNumberPerGpu"] == 2
    assert service["gpuIndices"] == [0]


def test_keys_match_in_training_service_machines_and_tuner(project: Project) -> None:
    data = valid(
        TUNER={"NAME": "Random", "CLASS_ARGS": {"seed": 1}},
        tuner=None,
        trainingService={
            "PLATFORM": "Remote",
            "Machine_List": [{"HOST": "10.0.0.2", "User": "alice", "SSH_PASSPHRASE": "pp"}],
        },
    )

    canonical = project.json(data)

    assert canonical["tuner"] == {"name": "Random", "classArgs": {"seed": 1}}
    machine = canonical["trainingService"]["machineList"][0]
    assert (machine["host"], machine["user"], machine["port"]) == ("10.0.0.2", "alice", 22)
    assert canonical["trainingService"]["platform"] == "remote"


def test_class_args_and_search_space_are_user_data(project: Project) -> None:
    class_args = {"optimize_mode": "maximize", "Seed_Value": 3, "nested": {"Camel_Key": [1]}}
    space = {"Learning_Rate": {"_type": "choice", "_value": [1]}, "lr": SPACE["lr"]}
    data = valid(searchSpaceFile=None, searchSpace=space)
    data["tuner"]["classArgs"] = class_args

    canonical = project.json(data)

    assert canonical["tuner"]["classArgs"] == class_args
    assert canonical["searchSpace"] == space


def test_runtime_env_is_user_data(project: Project) -> None:
    env = {"env_vars": {"MY_VAR": "1"}, "pip": ["numpy"]}
    data = valid(trainingService={"platform": "ray", "runtimeEnv": env})

    assert project.json(data)["trainingService"]["runtimeEnv"] == env


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"trialConcurency": 2},
            r"^invalid config: trialConcurency: unknown field \(got 'trialConcurency'\); "
            r"did you mean 'trialConcurrency'\?$",
        ),
        ({"maxTrialNumbr": 2}, r"maxTrialNumbr: unknown field .*did you mean 'maxTrialNumber'"),
        (
            {"trainingService": {"platform": "local", "gpuIndex": [0]}},
            r"trainingService\.gpuIndex: unknown field .*did you mean 'gpuIndices'",
        ),
        (
            {"tuner": {"name": "TPE", "classArg": {}}},
            r"tuner\.classArg: unknown field .*did you mean 'classArgs'",
        ),
        (
            {
                "trainingService": {
                    "platform": "remote",
                    "machineList": [{"host": "h", "user": "u", "prot": 22}],
                }
            },
            r"trainingService\.machineList\[0\]\.prot: unknown field .*did you mean 'port'",
        ),
        (
            {"trainingService": [{"platform": "local"}, {"platform": "ray", "adress": "x"}]},
            r"trainingService\[1\]\.adress: unknown field .*did you mean 'address'",
        ),
        ({"zzz": 1}, r"zzz: unknown field \(got 'zzz'\); remove it; valid fields are "),
    ],
)
def test_unknown_key_names_path_and_closest_key(
    project: Project, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        project.load(valid(**changes))


def test_v1_key_in_a_v2_config_gets_its_v2_name(project: Project) -> None:
    with pytest.raises(
        ConfigError, match=r"maxTrialNum: .*NNI v1 name; in v2 write 'maxTrialNumber'"
    ):
        project.load(valid(maxTrialNum=3))


def test_key_given_twice_under_two_spellings(project: Project) -> None:
    data = valid()
    data["trial_concurrency"] = 3

    with pytest.raises(
        ConfigError,
        match=r"trialConcurrency: given twice, as 'trialConcurrency' and 'trial_concurrency'",
    ):
        project.load(data)


def test_key_given_twice_in_a_training_service(project: Project) -> None:
    data = valid(trainingService={"platform": "local", "gpuIndices": [0], "GPU_INDICES": [1]})

    with pytest.raises(ConfigError, match=r"trainingService\.gpuIndices: given twice"):
        project.load(data)


def test_platform_given_twice(project: Project) -> None:
    data = valid(trainingService={"platform": "local", "Platform": "local"})

    with pytest.raises(ConfigError, match=r"trainingService\.platform: given twice"):
        project.load(data)


def test_non_string_key(project: Project) -> None:
    data = valid()
    data[3] = "x"  # type: ignore[index]

    with pytest.raises(ConfigError, match=r"\[3\]: unknown field"):
        project.load(data)


def test_non_string_key_in_class_args(project: Project) -> None:
    data = valid()
    data["tuner"]["classArgs"] = {1: "x"}

    with pytest.raises(ConfigError, match=r"tuner\.classArgs\[1\]: keys must be strings"):
        project.load(data)


def test_constructors_take_camel_and_snake_case() -> None:
    camel = ExperimentConfig(trialConcurrency=2, trialCommand="x", searchSpace={})
    snake = ExperimentConfig(trial_concurrency=2, trial_command="x", search_space={})

    assert camel == snake
    assert AlgorithmConfig(className="a.B").class_name == "a.B"
    assert LocalConfig(useActiveGpu=True).use_active_gpu is True
    assert RemoteMachineConfig(HOST="h").host == "h"


def test_from_dict_takes_every_spelling() -> None:
    config = ExperimentConfig.from_dict({"TRIAL_COMMAND": "x", "trialconcurrency": 1})

    assert (config.trial_command, config.trial_concurrency) == ("x", 1)


def test_constructor_refuses_unknown_key_with_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"trialComand: unknown field .*'trialCommand'"):
        ExperimentConfig(trialComand="x")
