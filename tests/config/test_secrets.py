"""Passwords and passphrases never reach to_json(), repr, str, v2_yaml or an error message."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from config_support import Project, valid

from tunelab.config import ExperimentConfig, RemoteConfig, RemoteMachineConfig
from tunelab.errors import ConfigError

PASSWORD = "hunter2-password"
PASSPHRASE = "correct-horse-passphrase"


def remote_config(project: Project) -> ExperimentConfig:
    (project.folder / "key").write_text("key", encoding="utf-8")
    machines = [
        {"host": "a", "user": "u", "password": PASSWORD},
        {"host": "b", "user": "u", "sshKeyFile": "key", "sshPassphrase": PASSPHRASE},
    ]
    return project.load(valid(trainingService={"platform": "remote", "machineList": machines}))


def test_to_json_leaves_secrets_out(project: Project) -> None:
    config = remote_config(project)

    text = json.dumps(config.to_json())

    assert PASSWORD not in text and PASSPHRASE not in text
    assert "password" not in text and "sshPassphrase" not in text


def test_to_json_includes_secrets_when_asked(project: Project) -> None:
    machines = remote_config(project).to_json(include_secrets=True)["trainingService"][
        "machineList"
    ]

    assert machines[0]["password"] == PASSWORD
    assert machines[1]["sshPassphrase"] == PASSPHRASE


def test_repr_and_str_hide_secrets(project: Project) -> None:
    config = remote_config(project)
    service = config.training_service
    assert isinstance(service, RemoteConfig)

    for text in (repr(config), str(config), repr(service), str(service.machine_list[0])):
        assert PASSWORD not in text and PASSPHRASE not in text


def test_v2_yaml_masks_secrets(project: Project) -> None:
    text = remote_config(project).v2_yaml()

    assert PASSWORD not in text and PASSPHRASE not in text
    assert "password: '***'" in text and "sshPassphrase: '***'" in text


def test_secret_is_still_usable(project: Project) -> None:
    service = remote_config(project).training_service
    assert isinstance(service, RemoteConfig)

    password = service.machine_list[0].password
    assert password is not None and password.get_secret_value() == PASSWORD


def test_round_trip_with_secrets(project: Project) -> None:
    canonical = remote_config(project).to_json(include_secrets=True)

    again = ExperimentConfig.from_dict(canonical).to_json(include_secrets=True)

    assert again == canonical


@pytest.mark.parametrize("field", ["password", "sshPassphrase"])
def test_errors_never_show_a_secret_value(project: Project, field: str) -> None:
    machine: dict[str, Any] = {"host": "a", "user": "u", field: 987654321}

    with pytest.raises(ConfigError) as caught:
        project.load(valid(trainingService={"platform": "remote", "machineList": [machine]}))

    message = str(caught.value)
    assert f"trainingService.machineList[0].{field}: must be a string" in message
    assert "987654321" not in message


def test_error_elsewhere_does_not_show_secrets(project: Project) -> None:
    machine = {"host": "a", "user": "u", "password": PASSWORD, "port": "x"}

    with pytest.raises(ConfigError) as caught:
        project.load(valid(trainingService={"platform": "remote", "machineList": [machine]}))

    assert PASSWORD not in str(caught.value)


def test_secrets_are_not_logged(project: Project, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    config = remote_config(project)
    config.to_json()
    config.v2_yaml()

    assert PASSWORD not in caplog.text and PASSPHRASE not in caplog.text


def test_python_api_secret() -> None:
    machine = RemoteMachineConfig(host="a", user="u", password=PASSWORD)

    assert PASSWORD not in repr(machine)
    assert machine.password is not None
    assert machine.password.get_secret_value() == PASSWORD
