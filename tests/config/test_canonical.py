"""The canonical JSON form: what the engine reads, JSON-serialisable, stable on a round trip."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from config_support import SPACE, VALID, Project, valid

from tunelab.config import ExperimentConfig
from tunelab.errors import ConfigError


def full_config(project: Project) -> dict[str, Any]:
    (project.folder / "algos").mkdir()
    (project.folder / "key").write_text("key", encoding="utf-8")
    return valid(
        experimentType="hpo",
        searchSpace={"ignored": {"_type": "choice", "_value": [1]}},
        trialGpuNumber=0,
        maxExperimentDuration="1.5h",
        maxTrialDuration=90,
        nniManagerIp="10.0.0.1",
        debug=True,
        experimentWorkingDirectory="runs",
        tunerGpuIndices="0",
        tuner={"className": "my_tuner.MyTuner", "codeDirectory": "algos", "classArgs": {"k": 1}},
        assessor={"name": "Medianstop", "classArgs": {"start_step": 2}},
        trainingService=[
            {"platform": "local", "useActiveGpu": False, "gpuIndices": "0,1"},
            {
                "platform": "remote",
                "reuseMode": True,
                "machineList": [{"host": "h", "user": "u", "sshKeyFile": "key", "password": "pw"}],
            },
            {"platform": "ray", "trialMemorySize": "1gb", "runtimeEnv": {"pip": ["x"]}},
        ],
    )


def test_canonical_keys_are_camel_case(project: Project) -> None:
    canonical = project.json(full_config(project))

    def keys(value: Any, skip: bool = False) -> list[str]:
        if isinstance(value, dict):
            found = [] if skip else list(value)
            for key, item in value.items():
                found += keys(item, skip or key in ("searchSpace", "classArgs", "runtimeEnv"))
            return found
        if isinstance(value, list):
            return [key for item in value for key in keys(item, skip)]
        return []

    assert all("_" not in key and key[0].islower() for key in keys(canonical))


def test_canonical_form_for_the_engine(project: Project) -> None:
    canonical = project.json(full_config(project))

    assert canonical["searchSpace"] == SPACE  # the file wins, inlined
    assert canonical["searchSpaceFile"] == str(project.folder / "search_space.json")
    assert canonical["maxExperimentDuration"] == "1.5h"
    assert canonical["maxTrialDuration"] == 90
    assert canonical["logLevel"] == "debug"
    assert canonical["experimentWorkingDirectory"] == str(project.folder / "runs")
    assert canonical["tuner"]["codeDirectory"] == str(project.folder / "algos")
    assert canonical["assessor"] == {"name": "Medianstop", "classArgs": {"start_step": 2}}
    local, remote, ray = canonical["trainingService"]
    assert local["gpuIndices"] == [0, 1]
    assert remote["machineList"][0]["sshKeyFile"] == str(project.folder / "key")
    assert ray["trialMemorySize"] == "1gb"
    for service in canonical["trainingService"]:
        assert service["trialCommand"] == "python3 trial.py"
        assert service["trialCodeDirectory"] == str(project.folder)
        assert service["trialGpuNumber"] == 0
        assert service["debug"] is True


def test_none_fields_are_left_out(project: Project) -> None:
    def values(value: Any) -> list[Any]:
        if isinstance(value, dict):
            return [v for item in value.values() for v in [item, *values(item)]]
        if isinstance(value, list):
            return [v for item in value for v in [item, *values(item)]]
        return []

    assert None not in values(project.json(full_config(project)))


@pytest.mark.parametrize("secrets", [False, True])
def test_canonical_form_is_strict_json(project: Project, secrets: bool) -> None:
    canonical = project.load(full_config(project)).to_json(include_secrets=secrets)

    text = json.dumps(canonical, allow_nan=False)

    assert json.loads(text) == canonical


@pytest.mark.parametrize("secrets", [False, True])
def test_round_trip(project: Project, secrets: bool) -> None:
    canonical = project.load(full_config(project)).to_json(include_secrets=secrets)

    again = ExperimentConfig.from_dict(canonical).to_json(include_secrets=secrets)

    assert again == canonical


def test_round_trip_through_json_text_from_another_folder(
    project: Project, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    canonical = project.json(VALID)
    monkeypatch.chdir(tmp_path)

    again = ExperimentConfig.from_dict(json.loads(json.dumps(canonical))).to_json()

    assert again == canonical


def test_round_trip_of_a_minimal_python_config(project: Project) -> None:
    config = ExperimentConfig(
        trial_command="python3 trial.py",
        trial_concurrency=1,
        search_space={},
        tuner={"name": "Random"},
    )

    canonical = config.to_json()

    assert ExperimentConfig.from_dict(canonical).to_json() == canonical


def test_canonical_form_is_a_fresh_copy(project: Project) -> None:
    config = project.load(VALID)

    first = config.to_json()
    first["tuner"]["name"] = "changed"
    first["tuner"]["classArgs"]["optimize_mode"] = "changed"
    first["searchSpace"]["lr"]["_value"].append(1)

    second = config.to_json()
    assert second["tuner"] == {"name": "TPE", "classArgs": {"optimize_mode": "maximize"}}
    assert second["searchSpace"] == SPACE


def test_to_json_validates(project: Project) -> None:
    config = ExperimentConfig.from_dict(valid(trialConcurrency=None), base_dir=project.folder)

    with pytest.raises(ConfigError, match="trialConcurrency: must be given"):
        config.to_json()


def test_values_that_are_not_json_are_refused(project: Project) -> None:
    data = valid(trainingService={"platform": "ray", "runtimeEnv": {"x": {1, 2}}})

    with pytest.raises(ConfigError, match=r"trainingService\.runtimeEnv: must be plain JSON data"):
        project.load(data)


def test_durations_are_never_nan(project: Project) -> None:
    with pytest.raises(ConfigError, match="maxTrialDuration: must be positive and finite"):
        project.load(valid(maxTrialDuration=math.nan))
