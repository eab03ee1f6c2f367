"""Training services: local, remote, ray, lists of them, the shortcut fields, refused platforms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from config_support import Project, valid

from tunelab.config import parse_memory_size
from tunelab.errors import ConfigError


def service(project: Project, **changes: Any) -> Any:
    return project.json(valid(**changes))["trainingService"]


# -- platform --------------------------------------------------------------------------------


def test_missing_training_service_means_local(project: Project) -> None:
    assert service(project, trainingService=None)["platform"] == "local"


def test_null_training_service_means_local(project: Project) -> None:
    data = valid()
    data["trainingService"] = None

    assert project.json(data)["trainingService"]["platform"] == "local"


@pytest.mark.parametrize("platform", ["local", "Local", "LOCAL"])
def test_platform_is_matched_in_any_case(project: Project, platform: str) -> None:
    assert service(project, trainingService={"platform": platform})["platform"] == "local"


def test_platform_must_be_given(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"trainingService\.platform: must be given; write "):
        project.load(valid(trainingService={"useActiveGpu": True}))


@pytest.mark.parametrize(
    "platform",
    ["openpai", "pai", "aml", "dlc", "kubeflow", "frameworkcontroller", "adl", "Kubeflow"],
)
def test_nni_platforms_that_tunelab_does_not_run(project: Project, platform: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"trainingService\.platform: '{platform}' is an NNI training service that tunelab "
        r"does not run \(got .*\); use one of local, remote, ray",
    ):
        project.load(valid(trainingService={"platform": platform, "host": "x"}))


def test_unknown_platform_suggests_the_closest(project: Project) -> None:
    with pytest.raises(
        ConfigError,
        match=r"trainingService\.platform: unknown training service \(got 'remot'\); "
        r"did you mean 'remote'\? tunelab runs local, remote, ray",
    ):
        project.load(valid(trainingService={"platform": "remot"}))


def test_platform_must_be_a_string(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"trainingService\.platform: must be the name of a"):
        project.load(valid(trainingService={"platform": 3}))


@pytest.mark.parametrize("value", ["local", 3, [1]])
def test_training_service_must_be_a_mapping_or_list(project: Project, value: Any) -> None:
    with pytest.raises(ConfigError, match=r"trainingService(\[0\])?: must be a mapping"):
        project.load(valid(trainingService=value))


def test_empty_list_of_training_services(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"trainingService: must not be empty"):
        project.load(valid(trainingService=[]))


# -- local -----------------------------------------------------------------------------------


def test_local_defaults(project: Project) -> None:
    local = service(project)

    assert local["maxTrialNumberPerGpu"] == 1
    assert "useActiveGpu" not in local  # unset: treated as false
    assert "gpuIndices" not in local


def test_local_use_active_gpu_is_not_required_with_gpus(project: Project) -> None:
    local = service(project, trialGpuNumber=1)

    assert local["trialGpuNumber"] == 1
    assert "useActiveGpu" not in local


@pytest.mark.parametrize("value", [True, False])
def test_local_use_active_gpu(project: Project, value: bool) -> None:
    data = {"platform": "local", "useActiveGpu": value}

    assert service(project, trainingService=data)["useActiveGpu"] is value


def test_local_use_active_gpu_must_be_bool(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"trainingService\.useActiveGpu: must be true or false"):
        project.load(valid(trainingService={"platform": "local", "useActiveGpu": "no"}))


@pytest.mark.parametrize(
    ("value", "expected"),
    [([0, 1], [0, 1]), (1, [1]), ("0,2", [0, 2]), (" 1, 3 ", [1, 3]), ([], [])],
)
def test_gpu_indices_forms(project: Project, value: Any, expected: list[int]) -> None:
    local = service(project, trainingService={"platform": "local", "gpuIndices": value})

    assert local["gpuIndices"] == expected


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ([0, 0], "must not list a GPU twice"),
        ("1,1", "must not list a GPU twice"),
        ([-1], "must not contain a negative GPU index"),
        (-2, "must not contain a negative GPU index"),
        ("0,-1", "must not contain a negative GPU index"),
        (True, "must be GPU indices, not true/false"),
        ("a,b", "must be whole numbers separated by commas"),
        ("", "must be whole numbers separated by commas"),
        ([0.5], "must list whole numbers only"),
        ([True], "must list whole numbers only"),
        ({"0": 1}, "must be GPU indices"),
    ],
)
def test_gpu_indices_rules(project: Project, value: Any, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"trainingService\.gpuIndices: {rule}"):
        project.load(valid(trainingService={"platform": "local", "gpuIndices": value}))


def test_max_trial_number_per_gpu(project: Project) -> None:
    local = {"platform": "local", "maxTrialNumberPerGpu": 2}

    assert service(project, trialGpuNumber=1, trainingService=local)["maxTrialNumberPerGpu"] == 2
    with pytest.raises(
        ConfigError,
        match=r"trainingService\.maxTrialNumberPerGpu: only applies when trialGpuNumber is at "
        r"least 1",
    ):
        project.load(valid(trainingService=local))
    with pytest.raises(ConfigError, match=r"maxTrialNumberPerGpu: must be greater than 0"):
        project.load(valid(trainingService={"platform": "local", "maxTrialNumberPerGpu": 0}))


def test_local_reuse_mode_is_accepted(project: Project) -> None:
    assert service(project, trainingService={"platform": "local", "reuseMode": True})["reuseMode"]


def test_local_ignores_nni_manager_ip(project: Project) -> None:
    canonical = project.json(valid(nniManagerIp="10.0.0.1"))

    assert canonical["nniManagerIp"] == "10.0.0.1"
    assert "nniManagerIp" not in canonical["trainingService"]


# -- remote ----------------------------------------------------------------------------------


def remote(**machine: Any) -> dict[str, Any]:
    return {
        "platform": "remote",
        "machineList": [{"host": "10.0.0.2", "user": "alice", **machine}],
    }


def test_remote_defaults(project: Project) -> None:
    machine = service(project, trainingService=remote())["machineList"][0]

    assert machine == {
        "host": "10.0.0.2",
        "port": 22,
        "user": "alice",
        "useActiveGpu": False,
        "maxTrialNumberPerGpu": 1,
    }


def test_remote_all_fields(project: Project, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("key", encoding="utf-8")
    data = remote(
        port=2222,
        password="pw",
        sshKeyFile=str(key),
        sshPassphrase="pp",
        useActiveGpu=True,
        maxTrialNumberPerGpu=2,
        gpuIndices="0,1",
        pythonPath="/opt/py/bin",
    )
    data["reuseMode"] = False
    canonical = project.load(valid(trialGpuNumber=1, trainingService=data)).to_json(
        include_secrets=True
    )

    remote_service = canonical["trainingService"]
    assert remote_service["reuseMode"] is False
    assert remote_service["machineList"][0] == {
        "host": "10.0.0.2",
        "port": 2222,
        "user": "alice",
        "password": "pw",
        "sshKeyFile": str(key),
        "sshPassphrase": "pp",
        "useActiveGpu": True,
        "maxTrialNumberPerGpu": 2,
        "gpuIndices": [0, 1],
        "pythonPath": "/opt/py/bin",
    }


def test_remote_key_with_passphrase_needs_no_password(project: Project) -> None:
    """Field case B32: a key file and a passphrase, no password."""
    (project.folder / "key").write_text("key", encoding="utf-8")
    data = remote(sshKeyFile="key", sshPassphrase="secret")

    machine = project.load(valid(trainingService=data)).to_json(include_secrets=True)[
        "trainingService"
    ]["machineList"][0]

    assert machine["sshKeyFile"] == str(project.folder / "key")
    assert machine["sshPassphrase"] == "secret"
    assert "password" not in machine


def test_remote_with_neither_password_nor_key_uses_the_agent(project: Project) -> None:
    machine = service(project, trainingService=remote())["machineList"][0]

    assert "sshKeyFile" not in machine and "password" not in machine


def test_remote_key_file_expands_home(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("key", encoding="utf-8")

    machine = service(project, trainingService=remote(sshKeyFile="~/.ssh/id_rsa"))["machineList"][
        0
    ]

    assert machine["sshKeyFile"] == str(tmp_path / ".ssh" / "id_rsa")


def test_remote_key_file_given_must_exist(project: Project) -> None:
    with pytest.raises(
        ConfigError, match=r"trainingService\.machineList\[0\]\.sshKeyFile: file not found"
    ):
        project.load(valid(trainingService=remote(sshKeyFile="missing_key")))


@pytest.mark.parametrize("field", ["host", "user"])
def test_remote_host_and_user_are_required(project: Project, field: str) -> None:
    data = remote()
    del data["machineList"][0][field]

    with pytest.raises(
        ConfigError, match=rf"trainingService\.machineList\[0\]\.{field}: must be given"
    ):
        project.load(valid(trainingService=data))


@pytest.mark.parametrize(
    ("port", "rule"),
    [
        (0, "must be greater than 0"),
        (65536, "must be less than 65536"),
        ("22", "must be a whole number, not a string"),
    ],
)
def test_remote_port_rules(project: Project, port: Any, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"machineList\[0\]\.port: {rule}"):
        project.load(valid(trainingService=remote(port=port)))


@pytest.mark.parametrize("machines", [[], None])
def test_remote_needs_machines(project: Project, machines: Any) -> None:
    data: dict[str, Any] = {"platform": "remote"}
    if machines is not None:
        data["machineList"] = machines

    with pytest.raises(
        ConfigError, match=r"trainingService\.machineList: must list at least one machine"
    ):
        project.load(valid(trainingService=data))


def test_remote_machine_list_must_be_a_list(project: Project) -> None:
    data = {"platform": "remote", "machineList": {"host": "h"}}

    with pytest.raises(ConfigError, match=r"trainingService\.machineList: must be a list"):
        project.load(valid(trainingService=data))


def test_remote_per_gpu_needs_gpu_number(project: Project) -> None:
    with pytest.raises(
        ConfigError, match=r"machineList\[0\]\.maxTrialNumberPerGpu: only applies when"
    ):
        project.load(valid(trainingService=remote(maxTrialNumberPerGpu=3)))


def test_remote_errors_in_several_machines(project: Project) -> None:
    data = {
        "platform": "remote",
        "machineList": [{"host": "a", "user": "u", "port": -1}, {"host": "b", "usr": "u"}],
    }

    with pytest.raises(ConfigError) as caught:
        project.load(valid(trainingService=data))

    wheres = {issue.where for issue in caught.value.issues}
    assert wheres == {
        "trainingService.machineList[0].port",
        "trainingService.machineList[1].usr",
    }


# -- ray -------------------------------------------------------------------------------------


def test_ray_defaults(project: Project) -> None:
    ray = service(project, trainingService={"platform": "ray"})

    assert ray["trialCpuNumber"] == 1
    assert "address" not in ray and "trialMemorySize" not in ray and "runtimeEnv" not in ray


def test_ray_fields(project: Project) -> None:
    data = {
        "platform": "ray",
        "address": "ray://10.0.0.5:10001",
        "trialCpuNumber": 0.5,
        "trialMemorySize": "2gb",
        "runtimeEnv": {"pip": ["numpy"]},
    }

    ray = service(project, trainingService=data)

    assert ray["address"] == "ray://10.0.0.5:10001"
    assert ray["trialCpuNumber"] == 0.5
    assert ray["trialMemorySize"] == "2gb"
    assert ray["runtimeEnv"] == {"pip": ["numpy"]}


def test_ray_cpu_number_takes_an_integer(project: Project) -> None:
    assert (
        service(project, trainingService={"platform": "ray", "trialCpuNumber": 2})[
            "trialCpuNumber"
        ]
        == 2
    )


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (0, "must be greater than 0"),
        (-1.5, "must be greater than 0"),
        (True, "must be a number"),
        ("2", "must be a number, not a string"),
        (float("inf"), "must be a finite number"),
    ],
)
def test_ray_cpu_number_rules(project: Project, value: Any, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"trainingService\.trialCpuNumber: {rule}"):
        project.load(valid(trainingService={"platform": "ray", "trialCpuNumber": value}))


@pytest.mark.parametrize("size", ["2gb", "512mb", "1.5GB", "1tb", "100kb", "4096b", "2 gb"])
def test_ray_memory_sizes(project: Project, size: str) -> None:
    data = {"platform": "ray", "trialMemorySize": size}

    assert service(project, trainingService=data)["trialMemorySize"] == size


@pytest.mark.parametrize(
    ("size", "rule"),
    [
        ("2", "is not a number with a memory unit"),
        (2048, "must be a memory size written as a string"),
        ("2pb", "has an unknown memory unit 'pb'"),
        ("0gb", "must be positive"),
        ("-1gb", "is not a number with a memory unit"),
        ("gb", "is not a number with a memory unit"),
    ],
)
def test_ray_memory_size_rules(project: Project, size: Any, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"trainingService\.trialMemorySize: {rule}"):
        project.load(valid(trainingService={"platform": "ray", "trialMemorySize": size}))


@pytest.mark.parametrize(
    ("size", "megabytes"),
    [("2gb", 2048), ("512mb", 512), ("1.5GB", 1536), ("1kb", 1), ("1tb", 1024**2), ("1b", 1)],
)
def test_parse_memory_size(size: str, megabytes: int) -> None:
    assert parse_memory_size(size) == megabytes


@pytest.mark.parametrize("size", ["2", "2xb", 5, "0mb"])
def test_parse_memory_size_refuses(size: Any) -> None:
    with pytest.raises(ValueError, match="memory size"):
        parse_memory_size(size)


def test_ray_runtime_env_must_be_a_mapping(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"trainingService\.runtimeEnv: must be a mapping"):
        project.load(valid(trainingService={"platform": "ray", "runtimeEnv": ["numpy"]}))


# -- shortcut fields and lists ---------------------------------------------------------------


def test_top_level_shortcuts_are_copied_into_the_service(project: Project) -> None:
    canonical = project.json(valid(trialGpuNumber=0, debug=True))

    local = canonical["trainingService"]
    assert local["trialCommand"] == "python3 trial.py"
    assert local["trialCodeDirectory"] == str(project.folder)
    assert local["trialGpuNumber"] == 0
    assert local["debug"] is True


def test_shortcuts_written_in_the_service_only(project: Project) -> None:
    (project.folder / "code").mkdir()
    data = valid(
        trialCommand=None,
        trialCodeDirectory=None,
        trainingService={
            "platform": "local",
            "trialCommand": "python3 t.py",
            "trialCodeDirectory": "code",
            "trialGpuNumber": 1,
        },
    )

    canonical = project.json(data)

    assert canonical["trialCommand"] == "python3 t.py"
    assert canonical["trialGpuNumber"] == 1
    assert canonical["trainingService"]["trialCodeDirectory"] == str(project.folder / "code")
    assert canonical["trainingService"]["trialCommand"] == "python3 t.py"


def test_service_value_wins_over_top_level(project: Project) -> None:
    data = valid(trialGpuNumber=0, trainingService={"platform": "local", "trialGpuNumber": 2})

    canonical = project.json(data)

    assert canonical["trialGpuNumber"] == 0
    assert canonical["trainingService"]["trialGpuNumber"] == 2


def test_remote_service_carries_nni_manager_ip(project: Project) -> None:
    canonical = project.json(valid(nniManagerIp="10.0.0.1", trainingService=remote()))

    assert canonical["trainingService"]["nniManagerIp"] == "10.0.0.1"


def test_list_of_services_stays_a_list(project: Project) -> None:
    data = valid(trainingService=[{"platform": "local"}, remote()])

    services = project.json(data)["trainingService"]

    assert [item["platform"] for item in services] == ["local", "remote"]
    assert all(item["trialCommand"] == "python3 trial.py" for item in services)


def test_list_of_one_service(project: Project) -> None:
    services = project.json(valid(trainingService=[{"platform": "local"}]))["trainingService"]

    assert services == [
        {
            "platform": "local",
            "trialCommand": "python3 trial.py",
            "trialCodeDirectory": str(project.folder),
            "debug": False,
            "maxTrialNumberPerGpu": 1,
        }
    ]


def test_services_with_their_own_commands(project: Project) -> None:
    data = valid(
        trialCommand=None,
        trainingService=[
            {"platform": "local", "trialCommand": "python3 a.py"},
            {"platform": "ray", "trialCommand": "python3 b.py"},
        ],
    )

    canonical = project.json(data)

    assert "trialCommand" not in canonical
    assert [s["trialCommand"] for s in canonical["trainingService"]] == [
        "python3 a.py",
        "python3 b.py",
    ]


def test_service_without_a_command_when_others_have_one(project: Project) -> None:
    data = valid(
        trialCommand=None,
        trainingService=[
            {"platform": "local", "trialCommand": "python3 a.py"},
            {"platform": "ray"},
        ],
    )

    with pytest.raises(
        ConfigError, match=r"^invalid config: trainingService\[1\]\.trialCommand: "
    ):
        project.load(data)


def test_service_code_directory_must_exist(project: Project) -> None:
    data = valid(trainingService={"platform": "local", "trialCodeDirectory": "nope"})

    with pytest.raises(
        ConfigError, match=r"trainingService\.trialCodeDirectory: folder not found"
    ):
        project.load(data)


def test_max_trial_number_per_gpu_with_no_gpu_per_trial(project: Project) -> None:
    local = {"platform": "local", "maxTrialNumberPerGpu": 2}

    with pytest.raises(ConfigError, match=r"maxTrialNumberPerGpu: only applies when"):
        project.load(valid(trialGpuNumber=0, trainingService=local))
