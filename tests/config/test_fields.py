"""Top-level fields: types, defaults and rules (NNI v2 names)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from config_support import SPACE, VALID, Project, valid

from tunelab.config import ExperimentConfig
from tunelab.errors import ConfigError


def test_defaults_of_a_minimal_config(project: Project) -> None:
    data = {
        "searchSpace": {},
        "trialCommand": "python3 trial.py",
        "trialConcurrency": 1,
        "tuner": {"name": "Random"},
    }

    canonical = project.json(data)

    assert canonical == {
        "experimentType": "hpo",
        "searchSpace": {},
        "trialCommand": "python3 trial.py",
        "trialCodeDirectory": str(project.folder),
        "trialConcurrency": 1,
        "debug": False,
        "logLevel": "info",
        "tuner": {"name": "Random"},
        "trainingService": {
            "platform": "local",
            "trialCommand": "python3 trial.py",
            "trialCodeDirectory": str(project.folder),
            "debug": False,
            "maxTrialNumberPerGpu": 1,
        },
    }


# -- experimentName, experimentType ----------------------------------------------------------


def test_experiment_name(project: Project) -> None:
    assert project.json(valid(experimentName="mnist"))["experimentName"] == "mnist"
    with pytest.raises(ConfigError, match=r"experimentName: must be a string \(got 5\)"):
        project.load(valid(experimentName=5))


@pytest.mark.parametrize("value", ["hpo", "HPO"])
def test_experiment_type_hpo(project: Project, value: str) -> None:
    assert project.json(valid(experimentType=value))["experimentType"] == "hpo"


def test_experiment_type_nas_is_not_supported_yet(project: Project) -> None:
    with pytest.raises(
        ConfigError, match=r"experimentType: NAS experiments are not supported yet"
    ):
        project.load(valid(experimentType="nas"))


def test_experiment_type_unknown(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"experimentType: must be 'hpo' \(got 'hyper'\)"):
        project.load(valid(experimentType="hyper"))


# -- search space ----------------------------------------------------------------------------


def test_search_space_inline(project: Project) -> None:
    canonical = project.json(valid(searchSpaceFile=None, searchSpace=SPACE))

    assert canonical["searchSpace"] == SPACE
    assert "searchSpaceFile" not in canonical


def test_empty_search_space_is_written_as_empty_mapping(project: Project) -> None:
    assert project.json(valid(searchSpaceFile=None, searchSpace={}))["searchSpace"] == {}


def test_search_space_file_json(project: Project) -> None:
    canonical = project.json(VALID)

    assert canonical["searchSpace"] == SPACE
    assert canonical["searchSpaceFile"] == str(project.folder / "search_space.json")


def test_search_space_file_yaml(project: Project) -> None:
    (project.folder / "space.yml").write_text(
        "lr:\n  _type: loguniform\n  _value: [0.0001, 0.1]\nact:\n  _type: choice\n"
        "  _value: [relu, tanh]\n",
        encoding="utf-8",
    )

    assert project.json(valid(searchSpaceFile="space.yml"))["searchSpace"] == SPACE


def test_search_space_file_in_a_sub_folder(project: Project) -> None:
    (project.folder / "spaces").mkdir()
    (project.folder / "spaces" / "s.json").write_text(json.dumps({"x": SPACE["lr"]}), "utf-8")

    assert project.json(valid(searchSpaceFile="spaces/s.json"))["searchSpace"] == {
        "x": SPACE["lr"]
    }


def test_search_space_file_wins_over_inline(project: Project) -> None:
    canonical = project.json(valid(searchSpace={"other": {"_type": "choice", "_value": [1]}}))

    assert canonical["searchSpace"] == SPACE


def test_search_space_is_required(project: Project) -> None:
    with pytest.raises(
        ConfigError, match=r"searchSpace: must be given; write searchSpace or searchSpaceFile"
    ):
        project.load(valid(searchSpaceFile=None))


def test_search_space_must_be_a_mapping(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"searchSpace: must be a mapping"):
        project.load(valid(searchSpaceFile=None, searchSpace=[1, 2]))


def test_search_space_must_be_json(project: Project) -> None:
    space = {"x": {"_type": "uniform", "_value": [0, float("nan")]}}

    with pytest.raises(
        ConfigError, match=r"searchSpace: must be plain JSON data; it contains nan"
    ):
        project.load(valid(searchSpaceFile=None, searchSpace=space))


def test_search_space_file_missing(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"searchSpaceFile: .*nope\.json: file not found"):
        project.load(valid(searchSpaceFile="nope.json"))


def test_search_space_file_empty(project: Project) -> None:
    (project.folder / "empty.json").write_text("", encoding="utf-8")

    with pytest.raises(ConfigError, match=r"searchSpaceFile: the file is empty: .*written \{\}"):
        project.load(valid(searchSpaceFile="empty.json"))


def test_search_space_file_not_a_mapping(project: Project) -> None:
    (project.folder / "list.json").write_text("[1, 2]", encoding="utf-8")

    with pytest.raises(ConfigError, match=r"searchSpaceFile: must hold a JSON object"):
        project.load(valid(searchSpaceFile="list.json"))


def test_search_space_file_syntax_error_names_line(project: Project) -> None:
    path = project.folder / "bad.yml"
    path.write_text("x:\n  _type: choice\n  _value: [1, 2\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"searchSpaceFile: {path}:\d+: YAML syntax error"):
        project.load(valid(searchSpaceFile="bad.yml"))


def test_search_space_file_json_syntax_error(project: Project) -> None:
    path = project.folder / "bad.json"
    path.write_text('{"x":\n  {"_value": [1, 2}\n}', encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"searchSpaceFile: {path}:2: JSON syntax error"):
        project.load(valid(searchSpaceFile="bad.json"))


# -- trial command and code directory --------------------------------------------------------


def test_trial_command_is_required(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"^invalid config: trialCommand: must be given"):
        project.load(valid(trialCommand=None))


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "must not be empty"),
        ("  ", "must not be empty"),
        (5, "must be a shell command"),
        (["python3", "t.py"], "must be a shell command"),
    ],
)
def test_trial_command_rules(project: Project, value: Any, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"trialCommand: {rule}"):
        project.load(valid(trialCommand=value))


def test_trial_code_directory_defaults_to_config_folder(project: Project) -> None:
    assert project.json(valid(trialCodeDirectory=None))["trialCodeDirectory"] == str(
        project.folder
    )


def test_trial_code_directory_relative_and_absolute(project: Project, tmp_path: Path) -> None:
    (project.folder / "src").mkdir()

    assert project.json(valid(trialCodeDirectory="src"))["trialCodeDirectory"] == str(
        project.folder / "src"
    )
    assert project.json(valid(trialCodeDirectory=str(tmp_path)))["trialCodeDirectory"] == str(
        tmp_path
    )


def test_trial_code_directory_expands_home(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "code").mkdir()

    assert project.json(valid(trialCodeDirectory="~/code"))["trialCodeDirectory"] == str(
        tmp_path / "code"
    )


def test_trial_code_directory_must_exist(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"trialCodeDirectory: folder not found: .*/nope"):
        project.load(valid(trialCodeDirectory="nope"))


def test_trial_code_directory_must_be_a_folder(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"trialCodeDirectory: is not a folder: .*trial\.py"):
        project.load(valid(trialCodeDirectory="trial.py"))


def test_path_with_spaces(project: Project) -> None:
    (project.folder / "my code").mkdir()

    assert project.json(valid(trialCodeDirectory="my code"))["trialCodeDirectory"] == str(
        project.folder / "my code"
    )


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (0, r"must be greater than 0 \(got 0\)"),
        (-1, r"must be greater than 0"),
        (True, r"must be a whole number, not true/false \(got True\)"),
        (2.0, r"must be a whole number \(got 2\.0\); write it without a fraction"),
        (2.5, r"must be a whole number \(got 2\.5\)"),
        ("2", r"must be a whole number, not a string \(got '2'\); write the number without"),
        (None, r"must be given"),
    ],
)
def test_trial_concurrency_rules(project: Project, value: Any, rule: str) -> None:
    data = valid(trialConcurrency=None)
    data["trialConcurrency"] = value

    with pytest.raises(ConfigError, match=rf"trialConcurrency: {rule}"):
        project.load(data)


def test_trial_concurrency_is_required(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"trialConcurrency: must be given"):
        project.load(valid(trialConcurrency=None))


@pytest.mark.parametrize("value", [0, 1, 4])
def test_trial_gpu_number(project: Project, value: int) -> None:
    canonical = project.json(valid(trialGpuNumber=value))

    assert canonical["trialGpuNumber"] == value
    assert canonical["trainingService"]["trialGpuNumber"] == value


def test_trial_gpu_number_default_is_unset(project: Project) -> None:
    assert "trialGpuNumber" not in project.json(VALID)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (-1, "must be at least 0"),
        (True, "must be a whole number, not true"),
        (0.5, "must be a whole number"),
    ],
)
def test_trial_gpu_number_rules(project: Project, value: Any, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"trialGpuNumber: {rule}"):
        project.load(valid(trialGpuNumber=value))


def test_max_trial_number(project: Project) -> None:
    assert project.json(valid(maxTrialNumber=5))["maxTrialNumber"] == 5
    assert "maxTrialNumber" not in project.json(valid(maxTrialNumber=None))
    with pytest.raises(ConfigError, match=r"maxTrialNumber: must be greater than 0"):
        project.load(valid(maxTrialNumber=0))
    with pytest.raises(ConfigError, match=r"maxTrialNumber: must be a whole number"):
        project.load(valid(maxTrialNumber="10"))


# -- plain settings --------------------------------------------------------------------------


def test_nni_manager_ip_is_accepted(project: Project) -> None:
    canonical = project.json(valid(nniManagerIp="10.0.0.1"))

    assert canonical["nniManagerIp"] == "10.0.0.1"
    with pytest.raises(ConfigError, match=r"nniManagerIp: must be a string"):
        project.load(valid(nniManagerIp=10))


def test_use_annotation_false_is_accepted(project: Project) -> None:
    assert "useAnnotation" not in project.json(valid(useAnnotation=False))


def test_use_annotation_true_is_refused(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"useAnnotation: annotations are not supported"):
        project.load(valid(useAnnotation=True))


def test_debug_sets_the_default_log_level(project: Project) -> None:
    canonical = project.json(valid(debug=True))

    assert (canonical["debug"], canonical["logLevel"]) == (True, "debug")
    assert canonical["trainingService"]["debug"] is True
    assert project.json(valid(debug=True, logLevel="warning"))["logLevel"] == "warning"
    with pytest.raises(ConfigError, match=r"debug: must be true or false"):
        project.load(valid(debug="yes"))


@pytest.mark.parametrize("level", ["fatal", "error", "warning", "info", "debug", "trace", "INFO"])
def test_log_levels(project: Project, level: str) -> None:
    assert project.json(valid(logLevel=level))["logLevel"] == level.lower()


def test_log_level_unknown(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"logLevel: must be one of fatal, error, warning, "):
        project.load(valid(logLevel="verbose"))


def test_experiment_working_directory(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))

    assert "experimentWorkingDirectory" not in project.json(VALID)
    assert project.json(valid(experimentWorkingDirectory="~/runs"))[
        "experimentWorkingDirectory"
    ] == str(tmp_path / "runs")
    assert project.json(valid(experimentWorkingDirectory="runs"))[
        "experimentWorkingDirectory"
    ] == str(project.folder / "runs")


@pytest.mark.parametrize(("value", "expected"), [("0,1", [0, 1]), (2, [2]), ([1, 3], [1, 3])])
def test_tuner_gpu_indices(project: Project, value: Any, expected: list[int]) -> None:
    assert project.json(valid(tunerGpuIndices=value))["tunerGpuIndices"] == expected


def test_shared_storage_is_refused(project: Project) -> None:
    storage = {"storageType": "NFS", "nfsServer": "10.0.0.3", "exportedDirectory": "/x"}

    with pytest.raises(ConfigError, match=r"sharedStorage: shared storage is not supported"):
        project.load(valid(sharedStorage=storage))


# -- tuner, assessor, advisor ----------------------------------------------------------------


def test_tuner_is_required(project: Project) -> None:
    with pytest.raises(
        ConfigError, match=r"tuner: must be given; for example tuner: \{name: TPE\}"
    ):
        project.load(valid(tuner=None))


def test_tuner_name_is_kept_as_written(project: Project) -> None:
    assert project.json(valid(tuner={"name": "tpe"}))["tuner"] == {"name": "tpe"}


def test_tuner_without_name_or_class(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"tuner\.name: must be given"):
        project.load(valid(tuner={"classArgs": {"optimize_mode": "maximize"}}))


def test_tuner_with_name_and_class(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"tuner: gives both name and className"):
        project.load(valid(tuner={"name": "TPE", "className": "my.Tuner"}))


def test_custom_tuner(project: Project) -> None:
    (project.folder / "algos").mkdir()
    tuner = {"className": "my_tuner.MyTuner", "codeDirectory": "algos", "classArgs": {"k": 1}}

    assert project.json(valid(tuner=tuner))["tuner"] == {
        "className": "my_tuner.MyTuner",
        "codeDirectory": str(project.folder / "algos"),
        "classArgs": {"k": 1},
    }


def test_custom_tuner_code_directory_defaults_to_config_folder(project: Project) -> None:
    tuner = project.json(valid(tuner={"className": "my_tuner.MyTuner"}))["tuner"]

    assert tuner["codeDirectory"] == str(project.folder)


def test_custom_tuner_code_directory_must_exist(project: Project) -> None:
    tuner = {"className": "my_tuner.MyTuner", "codeDirectory": "nope"}

    with pytest.raises(ConfigError, match=r"tuner\.codeDirectory: folder not found"):
        project.load(valid(tuner=tuner))


@pytest.mark.parametrize("class_name", ["MyTuner", "my_tuner.", ".MyTuner", "a..B"])
def test_custom_tuner_class_name_needs_module(project: Project, class_name: str) -> None:
    with pytest.raises(ConfigError, match=r"tuner\.className: must be a module and a class"):
        project.load(valid(tuner={"className": class_name}))


def test_code_directory_without_class_name(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"tuner\.codeDirectory: only applies with className"):
        project.load(valid(tuner={"name": "TPE", "codeDirectory": "."}))


@pytest.mark.parametrize(
    ("value", "rule"), [([1], "must be a mapping"), ("a", "must be a mapping")]
)
def test_class_args_must_be_a_mapping(project: Project, value: Any, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"tuner\.classArgs: {rule}"):
        project.load(valid(tuner={"name": "TPE", "classArgs": value}))


def test_class_args_must_be_json(project: Project) -> None:
    tuner = {"name": "TPE", "classArgs": {"seed": float("inf")}}

    with pytest.raises(ConfigError, match=r"tuner\.classArgs: must be plain JSON data"):
        project.load(valid(tuner=tuner))


def test_class_args_null_is_unset(project: Project) -> None:
    assert project.json(valid(tuner={"name": "TPE", "classArgs": None}))["tuner"] == {
        "name": "TPE"
    }


def test_assessor(project: Project) -> None:
    assessor = {"name": "Medianstop", "classArgs": {"start_step": 3}}

    assert project.json(valid(assessor=assessor))["assessor"] == assessor
    assert "assessor" not in project.json(VALID)
    with pytest.raises(ConfigError, match=r"assessor\.name: must be given"):
        project.load(valid(assessor={"classArgs": {"start_step": 3}}))
    # Empty class arguments are what a new config starts with: no assessor.
    assert "assessor" not in project.json(valid(assessor={"classArgs": {}}))


def test_class_args_can_be_filled_in_on_a_new_config() -> None:
    """NNI's quick start sets ``config.tuner.class_args["optimize_mode"]`` on a new config."""
    config = ExperimentConfig("local")
    config.tuner.name = "TPE"
    config.tuner.class_args["optimize_mode"] = "maximize"
    config.assessor.class_args["optimize_mode"] = "maximize"
    with pytest.raises(ConfigError, match=r"assessor\.name: must be given"):
        config.validate()
    config.assessor.name = "Medianstop"
    config.trial_command = "python3 trial.py"
    config.search_space = {"x": {"_type": "uniform", "_value": [0, 1]}}
    config.trial_concurrency = 1
    out = config.to_json()
    assert out["tuner"] == {"name": "TPE", "classArgs": {"optimize_mode": "maximize"}}
    assert out["assessor"] == {"name": "Medianstop", "classArgs": {"optimize_mode": "maximize"}}


def test_advisor_is_moved_into_tuner(project: Project) -> None:
    advisor = {"name": "Hyperband", "classArgs": {"R": 9}}
    canonical = project.json(valid(tuner=None, advisor=advisor))

    assert canonical["tuner"] == advisor
    assert "advisor" not in canonical


def test_advisor_and_tuner_together(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"advisor: cannot be given together with tuner"):
        project.load(valid(advisor={"name": "Hyperband"}))


def test_advisor_errors_name_the_advisor(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"advisor\.codeDirectory: folder not found"):
        project.load(valid(tuner=None, advisor={"className": "a.B", "codeDirectory": "x"}))


def test_both_search_spaces_warn_once(project: Project, caplog: pytest.LogCaptureFixture) -> None:
    config = project.load(valid(searchSpace={"other": {"_type": "choice", "_value": [1]}}))
    config.to_json()
    config.to_json()

    warnings = [r for r in caplog.records if "both searchSpace and searchSpaceFile" in r.message]
    assert len(warnings) == 1
