"""NNI v1 configs: detected, converted to v2, validated; unsupported v1 fields are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from config_support import SPACE, Project

from tunelab.config import ExperimentConfig, load_config
from tunelab.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

V1: dict[str, Any] = {
    "authorName": "default",
    "experimentName": "v1-demo",
    "trialConcurrency": 2,
    "maxExecDuration": "1h",
    "maxTrialNum": 10,
    "trainingServicePlatform": "local",
    "searchSpacePath": "search_space.json",
    "useAnnotation": False,
    "tuner": {"builtinTunerName": "TPE", "classArgs": {"optimize_mode": "maximize"}},
    "trial": {"command": "python3 trial.py", "codeDir": ".", "gpuNum": 0},
}


def v1(**changes: Any) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(V1))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_the_repository_v1_example_loads() -> None:
    folder = REPO / "examples" / "nni-trial-unchanged"

    config = load_config(folder / "config_v1.yml")
    canonical = config.to_json()

    assert config.v1_converted is True
    assert canonical["experimentName"] == "nni-trial-unchanged-v1"
    assert canonical["trialCommand"] == "python3 trial.py"
    assert canonical["trialCodeDirectory"] == str(folder)
    assert canonical["trialGpuNumber"] == 0
    assert canonical["maxExperimentDuration"] == "10m"
    assert canonical["maxTrialNumber"] == 20
    assert canonical["tuner"] == {"name": "Random"}
    assert canonical["trainingService"]["platform"] == "local"
    assert canonical["searchSpaceFile"] == str(folder / "search_space.json")


@pytest.mark.parametrize(
    "path",
    sorted((REPO / "examples").glob("*/config*.yml")),
    ids=lambda path: f"{path.parent.name}/{path.name}",
)
def test_every_example_config_loads(path: Path) -> None:
    config = load_config(path)

    canonical = config.to_json()
    assert canonical["searchSpace"]
    assert config.v1_converted is (path.name == "config_v1.yml")


def test_v2_yaml_of_a_converted_config(project: Project) -> None:
    config = project.load(v1())

    text = config.v2_yaml()

    assert yaml.safe_load(text) == {
        "experimentName": "v1-demo",
        "searchSpaceFile": "search_space.json",
        "trialCommand": "python3 trial.py",
        "trialCodeDirectory": ".",
        "trialConcurrency": 2,
        "trialGpuNumber": 0,
        "maxExperimentDuration": "1h",
        "maxTrialNumber": 10,
        "tuner": {"name": "TPE", "classArgs": {"optimize_mode": "maximize"}},
        "trainingService": {"platform": "local"},
    }


def test_v2_yaml_loads_to_the_same_config(project: Project) -> None:
    config = project.load(v1())
    path = project.folder / "converted.yml"
    path.write_text(config.v2_yaml(), encoding="utf-8")

    again = load_config(path)

    assert again.v1_converted is False
    assert again.to_json() == config.to_json()


def test_v2_config_is_not_converted(project: Project) -> None:
    config = project.load(
        {"searchSpace": {}, "trialCommand": "x", "trialConcurrency": 1, "tuner": {"name": "TPE"}}
    )

    assert config.v1_converted is False


def test_v1_keys_match_in_any_case(project: Project) -> None:
    data = {
        "author_name": "x",
        "TRIAL_CONCURRENCY": 1,
        "search_space_path": "search_space.json",
        "Trial": {"COMMAND": "python3 trial.py"},
        "tuner": {"builtin_tuner_name": "Random"},
    }

    canonical = project.json(data)

    assert canonical["trialCommand"] == "python3 trial.py"
    assert canonical["tuner"] == {"name": "Random"}


@pytest.mark.parametrize(
    ("value", "expected"), [(3600, "3600s"), (1.5, "1.5s"), ("2h", "2h"), ("90", "90")]
)
def test_max_exec_duration(project: Project, value: Any, expected: str) -> None:
    assert project.json(v1(maxExecDuration=value))["maxExperimentDuration"] == expected


def test_top_level_moves(project: Project, tmp_path: Path) -> None:
    data = v1(
        logDir=str(tmp_path / "runs"),
        nniManagerIp="10.0.0.1",
        debug=True,
        logLevel="trace",
    )

    canonical = project.json(data)

    assert canonical["experimentWorkingDirectory"] == str(tmp_path / "runs")
    assert canonical["nniManagerIp"] == "10.0.0.1"
    assert (canonical["debug"], canonical["logLevel"]) == (True, "trace")
    assert canonical["searchSpace"] == SPACE


@pytest.mark.parametrize(
    "field", ["authorName", "description", "versionCheck", "logCollection", "multiThread"]
)
def test_harmless_v1_fields_are_dropped(project: Project, field: str) -> None:
    value: Any = {"versionCheck": True, "multiThread": True}.get(field, "x")
    config = project.load(v1(**{field: value}))

    assert field not in config.v2_yaml()
    assert config.to_json()["trialConcurrency"] == 2


def test_multi_phase_false_is_dropped(project: Project) -> None:
    assert project.load(v1(multiPhase=False)).v1_converted


def test_multi_phase_true_is_refused(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"^invalid config: multiPhase: multi-phase trials are"):
        project.load(v1(multiPhase=True))


def test_use_annotation_true_is_refused(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"useAnnotation: annotations are not supported"):
        project.load(v1(useAnnotation=True))


def test_local_config(project: Project) -> None:
    data = v1(localConfig={"gpuIndices": "0,1", "maxTrialNumPerGpu": 2, "useActiveGpu": True})
    data["trial"]["gpuNum"] = 1

    local = project.json(data)["trainingService"]

    assert local["gpuIndices"] == [0, 1]
    assert local["maxTrialNumberPerGpu"] == 2
    assert local["useActiveGpu"] is True
    assert local["trialGpuNumber"] == 1


def test_remote_machines(project: Project) -> None:
    (project.folder / "id_rsa").write_text("key", encoding="utf-8")
    data = v1(
        trainingServicePlatform="remote",
        remoteConfig={"reuse": False},
        machineList=[
            {
                "ip": "10.0.0.2",
                "port": 2222,
                "username": "alice",
                "passwd": "pw",
                "gpuIndices": [0],
                "maxTrialNumPerGpu": 1,
                "useActiveGpu": True,
                "pythonPath": "/opt/py/bin",
            },
            {"ip": "10.0.0.3", "username": "bob", "sshKeyPath": "id_rsa", "passphrase": "pp"},
        ],
    )

    config = project.load(data)
    remote = config.to_json(include_secrets=True)["trainingService"]

    assert remote["platform"] == "remote"
    assert remote["reuseMode"] is False
    first, second = remote["machineList"]
    assert (first["host"], first["port"], first["user"], first["password"]) == (
        "10.0.0.2",
        2222,
        "alice",
        "pw",
    )
    assert (first["gpuIndices"], first["useActiveGpu"], first["pythonPath"]) == (
        [0],
        True,
        "/opt/py/bin",
    )
    assert (second["host"], second["port"], second["user"]) == ("10.0.0.3", 22, "bob")
    assert second["sshKeyFile"] == str(project.folder / "id_rsa")
    assert second["sshPassphrase"] == "pp"
    assert "pw" not in config.v2_yaml() and "pp" not in config.v2_yaml()


@pytest.mark.parametrize("kind", ["tuner", "assessor", "advisor"])
def test_builtin_algorithm_names(project: Project, kind: str) -> None:
    builtin = {"builtin" + kind.title() + "Name": "Algo", "classArgs": {"a": 1}}
    data = v1(**{kind: builtin})
    if kind == "advisor":
        del data["tuner"]

    canonical = project.json(data)

    expected_key = "tuner" if kind == "advisor" else kind
    assert canonical[expected_key] == {"name": "Algo", "classArgs": {"a": 1}}


def test_custom_tuner(project: Project) -> None:
    (project.folder / "algos").mkdir()
    tuner = {
        "codeDir": "algos",
        "classFileName": "my_tuner.py",
        "className": "MyTuner",
        "classArgs": {"k": 2},
    }

    assert project.json(v1(tuner=tuner))["tuner"] == {
        "className": "my_tuner.MyTuner",
        "codeDirectory": str(project.folder / "algos"),
        "classArgs": {"k": 2},
    }


def test_custom_tuner_file_in_a_sub_folder(project: Project) -> None:
    tuner = {"codeDir": ".", "classFileName": "pkg/my_tuner.py", "className": "MyTuner"}

    assert project.json(v1(tuner=tuner))["tuner"]["className"] == "pkg.my_tuner.MyTuner"


def test_custom_tuner_needs_class_name(project: Project) -> None:
    tuner = {"codeDir": ".", "classFileName": "my_tuner.py"}

    with pytest.raises(ConfigError, match=r"tuner\.className: must be given with classFileName"):
        project.load(v1(tuner=tuner))


def test_custom_tuner_file_must_be_python(project: Project) -> None:
    tuner = {"codeDir": ".", "classFileName": "my_tuner", "className": "T"}

    with pytest.raises(ConfigError, match=r"tuner\.classFileName: must be a Python file name"):
        project.load(v1(tuner=tuner))


def test_v1_class_name_without_file(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"tuner\.className: needs classFileName"):
        project.load(v1(tuner={"codeDir": ".", "className": "MyTuner"}))


def test_tuner_gpu_indices(project: Project) -> None:
    tuner = {"builtinTunerName": "GPTuner", "gpuIndices": "0"}

    assert project.json(v1(tuner=tuner))["tunerGpuIndices"] == [0]


def test_include_intermediate_results(project: Project) -> None:
    tuner = {"builtinTunerName": "TPE", "includeIntermediateResults": True}

    with pytest.raises(ConfigError, match=r"tuner\.includeIntermediateResults: is not supported"):
        project.load(v1(tuner=tuner))
    tuner["includeIntermediateResults"] = False
    assert project.json(v1(tuner=tuner))["tuner"] == {"name": "TPE"}


@pytest.mark.parametrize(
    "platform", ["pai", "openpai", "paiYarn", "kubeflow", "frameworkcontroller", "aml", "dlc"]
)
def test_platforms_tunelab_does_not_run(project: Project, platform: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"^invalid config: trainingServicePlatform: '{platform}' is an NNI training "
        r"service that tunelab does not run",
    ):
        project.load(v1(trainingServicePlatform=platform))


def test_hybrid_v1_is_refused_with_a_fix(project: Project) -> None:
    data = v1(
        trainingServicePlatform="hybrid",
        hybridConfig={"trainingServicePlatforms": ["local", "remote"]},
    )

    with pytest.raises(
        ConfigError, match=r"with a list of training services under trainingService"
    ):
        project.load(data)


def test_missing_platform_means_local(project: Project) -> None:
    assert project.json(v1(trainingServicePlatform=None))["trainingService"]["platform"] == "local"


def test_cluster_config_with_local_platform(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"paiConfig: configures NNI's 'openpai' training"):
        project.load(v1(paiConfig={"userName": "x"}))


def test_local_config_with_remote_platform(project: Project) -> None:
    data = v1(
        trainingServicePlatform="remote",
        localConfig={"useActiveGpu": True},
        machineList=[{"ip": "h", "username": "u"}],
    )

    with pytest.raises(ConfigError, match=r"localConfig: applies only to trainingServicePlatform"):
        project.load(data)


def test_unknown_v1_field_suggests_the_closest(project: Project) -> None:
    with pytest.raises(
        ConfigError,
        match=r"maxTrailNum: unknown field in an NNI v1 config \(got 'maxTrailNum'\); "
        r"did you mean 'maxTrialNum'\?",
    ):
        project.load(v1(maxTrailNum=3))


def test_unknown_trial_field(project: Project) -> None:
    data = v1()
    data["trial"]["image"] = "msranni/nni"

    with pytest.raises(ConfigError, match=r"trial\.image: unknown field in an NNI v1 config"):
        project.load(data)


def test_unknown_machine_field(project: Project) -> None:
    data = v1(trainingServicePlatform="remote", machineList=[{"ip": "h", "usrname": "u"}])

    with pytest.raises(ConfigError) as caught:
        project.load(data)

    assert [issue.where for issue in caught.value.issues] == ["machineList[0].usrname"]
    assert "did you mean 'username'?" in str(caught.value)


def test_v1_key_given_twice(project: Project) -> None:
    data = v1()
    data["max_trial_num"] = 3

    with pytest.raises(ConfigError, match=r"max_trial_num: given twice, as 'maxTrialNum' and"):
        project.load(data)


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"maxExecDuration": "10x"}, "maxExecDuration"),
        ({"maxTrialNum": 0}, "maxTrialNum"),
        ({"searchSpacePath": "nope.json"}, "searchSpacePath"),
        ({"searchSpacePath": None}, "searchSpacePath"),
        ({"trial": {"command": "python3 trial.py", "codeDir": "nope"}}, "trial.codeDir"),
        ({"trial": {"command": ""}}, "trial.command"),
        ({"trial": {"codeDir": "."}}, "trial.command"),
        ({"tuner": {"builtinTunerName": 5}}, "tuner.builtinTunerName"),
        ({"localConfig": {"gpuIndices": [0, 0]}}, "localConfig.gpuIndices"),
        ({"trialConcurrency": None}, "trialConcurrency"),
        (
            {"trainingServicePlatform": "remote", "machineList": [{"ip": "h", "port": 0}]},
            "machineList[0].port",
        ),
        (
            {"trainingServicePlatform": "remote", "machineList": [{"port": 22, "username": "u"}]},
            "machineList[0].ip",
        ),
        ({"trainingServicePlatform": "remote"}, "machineList"),
    ],
)
def test_errors_after_conversion_name_the_v1_field(
    project: Project, changes: dict[str, Any], where: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        project.load(v1(**changes))

    assert [issue.where for issue in caught.value.issues] == [where]


def test_v1_detected_by_algorithm_fields_only() -> None:
    config = ExperimentConfig.from_dict(
        {"trialConcurrency": 1, "tuner": {"builtinTunerName": "TPE"}}
    )

    assert config.v1_converted is True
    assert config.tuner is not None and config.tuner.name == "TPE"


def test_mixed_v1_and_v2_is_read_as_v2_with_hints(project: Project) -> None:
    data = v1(trialCommand="python3 trial.py")

    with pytest.raises(ConfigError) as caught:
        project.load(data)

    message = str(caught.value)
    assert "maxExecDuration: unknown field" in message
    assert "in v2 write 'maxExperimentDuration'" in message
    assert "tuner.builtinTunerName: unknown field" in message
    assert (
        "authorName: unknown field (got 'authorName'); this NNI v1 field has no meaning" in message
    )
