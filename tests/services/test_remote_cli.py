"""An NNI config with ``platform: remote`` through the real CLI and manager: trials on two SSH
servers (tests/services/sshd.py), then ``experiment delete`` cleaning the remote folders."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import Lab
from tests.services.sshd import SshLab, kill_processes_under, ssh_lab  # noqa: F401

TRIAL = """
import os
import nni

params = nni.get_next_parameter()
print("ran as", os.environ["USER"], "in", os.getcwd(), flush=True)
nni.report_intermediate_result(params["x"] / 2)
nni.report_final_result(params["x"])
"""


def remove_experiment(lab: Lab, ssh_lab: SshLab, experiment_id: str) -> None:  # noqa: F811
    """What a failed test may leave on the hosts: processes, the experiment's folders, and the
    default remote root once it is empty. The manager goes first, or it would reconnect and
    upload again."""
    lab.cli("stop", experiment_id, timeout=120)
    kill_processes_under(f"tunelab-experiments/{experiment_id}")
    for user in ("tl-alpha", "tl-beta"):
        root = ssh_lab.home(user) / "tunelab-experiments"
        shutil.rmtree(root / experiment_id, ignore_errors=True)
        with contextlib.suppress(OSError):
            root.rmdir()


@pytest.mark.slow
def test_an_nni_config_runs_on_two_ssh_hosts_and_delete_cleans_them(
    lab: Lab,
    ssh_lab: SshLab,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    created: list[str] = []

    def leave_nothing() -> None:
        for experiment_id in created:
            remove_experiment(lab, ssh_lab, experiment_id)

    request.addfinalizer(leave_nothing)
    config = lab.write(
        {"x": {"_type": "choice", "_value": [1, 2, 3, 4]}},
        TRIAL,
        trialCommand="python3 trial.py",
        trialConcurrency=2,
        maxTrialNumber=4,
        tuner={"name": "GridSearch"},
        trainingService={
            "platform": "remote",
            "machineList": [
                {
                    "host": "127.0.0.1",
                    "port": ssh_lab.alpha.port,
                    "user": "tl-alpha",
                    "sshKeyFile": str(ssh_lab.protected_key),
                    "sshPassphrase": ssh_lab.passphrase,
                },
                {
                    "host": "127.0.0.1",
                    "port": ssh_lab.beta.port,
                    "user": "tl-beta",
                    "password": ssh_lab.password,
                },
            ],
        },
    )

    result, experiment_id = lab.run(config)
    created.append(experiment_id)
    assert result.code == 0, result.stderr
    trials = lab.trials(experiment_id)
    assert sorted(t["status"] for t in trials) == ["SUCCEEDED"] * 4
    assert sorted(t["default"] for t in trials) == [1, 2, 3, 4]
    users = set()
    for trial in trials:
        stdout = lab.home / experiment_id / "trials" / trial["id"] / "trial.stdout"
        users.add(stdout.read_text().split()[2])
    assert users == {"tl-alpha", "tl-beta"}  # both machines ran trials
    # Each trial says which machine ran it.
    assert {t["host"] for t in trials} == {ssh_lab.alpha.address, ssh_lab.beta.address}
    for user in users:
        assert (ssh_lab.home(user) / "tunelab-experiments" / experiment_id / "code").is_dir()
    stored = (lab.home / experiment_id / "experiment.db").read_bytes()
    assert ssh_lab.password.encode() not in stored
    assert ssh_lab.passphrase.encode() not in stored
    log = "".join(p.read_text() for p in (lab.home / experiment_id / "log").glob("*"))
    assert ssh_lab.password not in log and ssh_lab.passphrase not in log

    deleted = lab.cli("experiment", "delete", experiment_id, "--yes", "--config", str(config))
    assert deleted.code == 0, deleted.stderr
    for user in users:
        assert not (ssh_lab.home(user) / "tunelab-experiments" / experiment_id).exists()
    assert json.dumps(trials).count(ssh_lab.password) == 0


@pytest.mark.slow
def test_a_trial_waiting_for_an_unreachable_host_shows_why_then_runs(
    lab: Lab,
    ssh_lab: SshLab,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    down = ssh_lab.new_server(start=False)
    config = lab.write(
        {"x": {"_type": "choice", "_value": [1, 2]}},
        TRIAL,
        trialCommand="python3 trial.py",
        trialConcurrency=1,
        maxTrialNumber=2,
        tuner={"name": "GridSearch"},
        trainingService={
            "platform": "remote",
            "machineList": [
                {
                    "host": "127.0.0.1",
                    "port": down.port,
                    "user": "tl-alpha",
                    "sshKeyFile": str(ssh_lab.plain_key),
                }
            ],
        },
    )
    created = lab.cli("create", "--config", str(config))
    assert created.code == 0, created.stderr
    experiment_id = created.stdout.split()[1]
    request.addfinalizer(lambda: remove_experiment(lab, ssh_lab, experiment_id))

    expected = f"waiting: host {down.address} unreachable (Connection refused), retrying"
    deadline = time.monotonic() + 30
    while True:
        waiting = [t for t in lab.trials(experiment_id) if t["status"] == "WAITING"]
        if waiting and (waiting[0].get("reason") or "").startswith(expected):
            break
        assert time.monotonic() < deadline, f"no waiting reason: {waiting}"
        time.sleep(0.2)
    shown = lab.cli("trial", "ls", experiment_id)
    assert "unreachable" in shown.stdout, shown.stdout
    # The reason counts down ("retrying in 5 s", "in 4 s", ...); the log says it once.
    time.sleep(4)
    log = (lab.client(experiment_id).dir / "log" / "manager.log").read_text("utf-8")
    said = [line for line in log.splitlines() if f"Trial {waiting[0]['id']} waiting:" in line]
    assert 1 <= len(said) <= 2, said

    down.start()
    while lab.status(experiment_id)["status"] != "DONE":
        assert time.monotonic() < deadline + 30, lab.status(experiment_id)
        time.sleep(0.3)
    assert [t["status"] for t in lab.trials(experiment_id)] == ["SUCCEEDED"] * 2


GATED = """
import os, time
import nni

params = nni.get_next_parameter()
nni.report_intermediate_result(0)
while not os.path.exists(os.environ["GATE"]):
    time.sleep(0.05)
nni.report_final_result(params["x"])
"""


@pytest.mark.slow
def test_trials_on_a_host_survive_a_killed_manager_and_are_reattached(
    lab: Lab,
    ssh_lab: SshLab,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    gate_dir = Path(tempfile.mkdtemp(prefix="tunelab-gate-"))
    gate_dir.chmod(0o777)  # the trials run as tl-alpha
    gate = gate_dir / "open"
    created: list[str] = []

    def leave_nothing() -> None:
        for experiment_id in created:
            remove_experiment(lab, ssh_lab, experiment_id)
        shutil.rmtree(gate_dir, ignore_errors=True)

    request.addfinalizer(leave_nothing)
    config = lab.write(
        {"x": {"_type": "choice", "_value": [1, 2, 3]}},
        GATED,
        trialCommand=f"GATE={gate} python3 trial.py",
        trialConcurrency=2,
        maxTrialNumber=3,
        tuner={"name": "GridSearch"},
        trainingService={
            "platform": "remote",
            "machineList": [
                {
                    "host": "127.0.0.1",
                    "port": ssh_lab.alpha.port,
                    "user": "tl-alpha",
                    "sshKeyFile": str(ssh_lab.plain_key),
                }
            ],
        },
    )
    result = lab.cli("create", "--config", str(config))
    assert result.code == 0, result.stderr
    experiment_id = result.stdout.split()[1]
    created.append(experiment_id)

    deadline = time.monotonic() + 30
    while len([t for t in lab.trials(experiment_id) if t["status"] == "RUNNING"]) < 2:
        assert time.monotonic() < deadline, lab.trials(experiment_id)
        time.sleep(0.2)
    time.sleep(0.5)  # the first metric is in
    before = {t["id"]: t for t in lab.trials(experiment_id) if t["status"] == "RUNNING"}
    _kill_manager(lab, experiment_id)

    resumed = lab.cli("resume", experiment_id)
    assert resumed.code == 0, resumed.stderr
    gate.touch()
    while lab.status(experiment_id)["status"] != "DONE":
        assert time.monotonic() < deadline + 60, lab.status(experiment_id)
        time.sleep(0.3)

    after = {t["id"]: t for t in lab.trials(experiment_id)}
    assert sorted(t["status"] for t in after.values()) == ["SUCCEEDED"] * 3
    for trial_id, old in before.items():
        new = after[trial_id]
        # Found again on the host, not run a second time.
        assert new["startTime"] == old["startTime"], (old, new)
        assert new["default"] == new["parameters"]["x"]


@pytest.mark.slow
def test_stop_after_a_killed_manager_takes_the_passphrase_from_the_config(
    lab: Lab,
    ssh_lab: SshLab,  # noqa: F811
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store never holds the passphrase; the stop of a dead manager's experiment must
    log in to the host itself, so it takes the config file as resume does."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    gate_dir = Path(tempfile.mkdtemp(prefix="tunelab-gate-"))
    gate_dir.chmod(0o777)
    config = lab.write(
        {"x": {"_type": "choice", "_value": [1, 2]}},
        GATED,
        trialCommand=f"GATE={gate_dir / 'never'} python3 trial.py",
        trialConcurrency=2,
        maxTrialNumber=2,
        tuner={"name": "GridSearch"},
        trainingService={
            "platform": "remote",
            "machineList": [
                {
                    "host": "127.0.0.1",
                    "port": ssh_lab.alpha.port,
                    "user": "tl-alpha",
                    "sshKeyFile": str(ssh_lab.protected_key),
                    "sshPassphrase": ssh_lab.passphrase,
                }
            ],
        },
    )
    result = lab.cli("create", "--config", str(config))
    assert result.code == 0, result.stderr
    experiment_id = result.stdout.split()[1]
    request.addfinalizer(lambda: remove_experiment(lab, ssh_lab, experiment_id))
    request.addfinalizer(lambda: shutil.rmtree(gate_dir, ignore_errors=True))
    deadline = time.monotonic() + 30
    while len([t for t in lab.trials(experiment_id) if t["status"] == "RUNNING"]) < 2:
        assert time.monotonic() < deadline, lab.trials(experiment_id)
        time.sleep(0.2)
    _kill_manager(lab, experiment_id)
    assert len(_trial_processes(experiment_id)) >= 2  # they outlive their manager

    refused = lab.cli("stop", experiment_id)
    assert refused.code == 2, refused.stderr
    assert "is encrypted and no passphrase was given" in refused.stderr
    assert ssh_lab.passphrase not in refused.stderr

    stopped = lab.cli("stop", experiment_id, "--config", str(config))
    assert stopped.code == 0, stopped.stderr
    assert "its manager had died" in stopped.stdout
    assert {t["status"] for t in lab.trials(experiment_id)} == {"USER_CANCELED"}
    assert _trial_processes(experiment_id) == []


def _kill_manager(lab: Lab, experiment_id: str) -> None:
    """SIGKILL the experiment's manager and wait until it is gone."""
    manager = json.loads((lab.home / experiment_id / "manager.json").read_text())["pid"]
    os.kill(manager, signal.SIGKILL)
    while psutil.pid_exists(manager) and psutil.Process(manager).status() != "zombie":
        time.sleep(0.05)


def _trial_processes(experiment_id: str) -> list[psutil.Process]:
    """The test users' processes of one experiment's trials (by their trial folder)."""
    found = []
    for process in psutil.process_iter(["username"]):
        with contextlib.suppress(psutil.Error):
            if process.info["username"] in ("tl-alpha", "tl-beta") and experiment_id in (
                process.environ().get("TUNELAB_TRIAL_DIR", "")
            ):
                found.append(process)
    return found
