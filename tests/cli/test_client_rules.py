"""Rules of the client layer that need no manager: what ``resume --config`` takes from a
file (its secrets) and when it refuses one (another experiment), and the import formats."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import Lab
from tunelab.cli._experiment import import_records
from tunelab.client import config_differences, secrets_of
from tunelab.engine.manager import merge_secrets, strip_secrets
from tunelab.errors import UsageError

SPACE = {"x": {"_type": "uniform", "_value": [0, 1]}}
MACHINES = [
    {"host": "10.0.0.1", "user": "tuner", "password": "s3cret"},
    {"host": "10.0.0.2", "user": "tuner", "sshKeyFile": __file__, "sshPassphrase": "pp"},
]


def _remote(lab: Lab, name: str = "exp", **config: object) -> dict:
    from tunelab.config import load_config

    path = lab.write(
        SPACE,
        "print(1)\n",
        name=name,
        trainingService={"platform": "remote", "machineList": MACHINES},
        **config,
    )
    return load_config(path).to_json(include_secrets=True)


def test_resume_config_gives_secrets_and_must_be_the_same_experiment(lab: Lab) -> None:
    given = _remote(lab)
    stored = strip_secrets(given)  # what the manager keeps in the store

    found = secrets_of(given)
    assert found == {
        "trainingService.machineList[0].password": "s3cret",
        "trainingService.machineList[1].sshPassphrase": "pp",
    }
    assert merge_secrets(stored, found) == given
    assert config_differences(stored, strip_secrets(given)) == []

    # Budgets, the space and where things are kept may differ; the rest may not.
    moved = _remote(lab, name="moved", maxTrialNumber=7, trialConcurrency=3)
    assert config_differences(stored, strip_secrets(moved)) == []
    other = _remote(lab, name="other", trialCommand=f"{sys.executable} other.py")
    assert config_differences(stored, strip_secrets(other)) == ["trainingService", "trialCommand"]
    hosts = strip_secrets(given)
    hosts["trainingService"]["machineList"][0]["host"] = "10.0.0.9"
    assert config_differences(stored, hosts) == ["trainingService"]


def test_import_takes_nni_lists_and_tunelab_exports() -> None:
    nni = [{"parameter": {"x": 0.5}, "value": "0.9"}]
    assert import_records(nni, "f") == nni
    export = {
        "experiment": {"id": "e"},
        "trials": [
            {"parameters": {"x": 0.1}, "value": {"default": 0.3, "loss": "NaN"}},
            {"parameters": {"x": 0.2}, "value": None, "status": "FAILED"},
        ],
    }
    assert import_records(export, "f") == [
        {"parameter": {"x": 0.1}, "value": {"default": 0.3, "loss": "NaN"}}
    ]
    with pytest.raises(UsageError, match="NNI's format"):
        import_records({"rows": []}, "f")
