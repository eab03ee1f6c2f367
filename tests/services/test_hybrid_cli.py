"""Hybrid through the real CLI: one config whose ``trainingService`` lists an SSH platform (two
loopback sshd servers) and a Ray cluster (head + worker on loopback); trials spread over both
and every one ends with its result."""

from __future__ import annotations

import contextlib
import shutil

import pytest

from tests.conftest import Lab
from tests.services.ray_cluster import RayCluster, ray_cluster  # noqa: F401 - fixture
from tests.services.sshd import SshLab, kill_processes_under, ssh_lab  # noqa: F401 - fixture

TRIAL = """
import os, time
import nni

params = nni.get_next_parameter()
print("platform", os.environ["NNI_PLATFORM"], "user", os.environ.get("USER", "?"), flush=True)
time.sleep(0.5)
nni.report_final_result(params["x"])
"""


@pytest.mark.slow
def test_one_experiment_runs_trials_on_ssh_hosts_and_a_ray_cluster_at_once(
    lab: Lab,
    ssh_lab: SshLab,  # noqa: F811
    ray_cluster: RayCluster,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    config = lab.write(
        {"x": {"_type": "choice", "_value": [1, 2, 3, 4, 5, 6, 7, 8]}},
        TRIAL,
        trialCommand="python3 trial.py",
        trialConcurrency=4,
        maxTrialNumber=8,
        tuner={"name": "GridSearch"},
        trainingService=[
            {
                "platform": "remote",
                "machineList": [
                    {
                        "host": "127.0.0.1",
                        "port": ssh_lab.alpha.port,
                        "user": "tl-alpha",
                        "sshKeyFile": str(ssh_lab.plain_key),
                    },
                    {
                        "host": "127.0.0.1",
                        "port": ssh_lab.beta.port,
                        "user": "tl-beta",
                        "password": ssh_lab.password,
                    },
                ],
            },
            {"platform": "ray", "address": ray_cluster.address, "trialCpuNumber": 0.25},
        ],
    )
    created: list[str] = []

    def leave_nothing() -> None:
        for experiment_id in created:
            lab.cli("stop", experiment_id, timeout=120)
            kill_processes_under(f"tunelab-experiments/{experiment_id}")
            for user in ("tl-alpha", "tl-beta"):
                root = ssh_lab.home(user) / "tunelab-experiments"
                shutil.rmtree(root / experiment_id, ignore_errors=True)
                with contextlib.suppress(OSError):
                    root.rmdir()

    request.addfinalizer(leave_nothing)

    result, experiment_id = lab.run(config, timeout=300)
    created.append(experiment_id)

    assert result.code == 0, result.stderr
    trials = lab.trials(experiment_id)
    assert sorted(t["status"] for t in trials) == ["SUCCEEDED"] * 8
    assert sorted(t["default"] for t in trials) == [1, 2, 3, 4, 5, 6, 7, 8]
    platforms = set()
    for trial in trials:
        stdout = lab.home / experiment_id / "trials" / trial["id"] / "trial.stdout"
        platforms.add(stdout.read_text().split()[1])
    assert platforms == {"remote", "ray"}
