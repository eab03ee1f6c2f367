"""The remote training service against real OpenSSH servers on loopback (tests/services/sshd.py).

The contract itself is checked by tests/conformance for every service; these tests cover what
only remote has: the logins, the code upload and its limits (field case B29), GPU placement on
a host (B31), key + passphrase from creation to cleanup (B32), unreachable and lost hosts, and
secrets kept out of logs, states and messages.
"""

from __future__ import annotations

import ast
import asyncio
import itertools
import json
import logging
import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.services.sshd import SshLab, SshServer, ssh_lab  # noqa: F401 - the lab fixture
from tunelab.engine import Engine, EngineSettings
from tunelab.errors import ConfigError
from tunelab.services import (
    GpuInfo,
    Placement,
    RemoteMachine,
    RemoteTrainingService,
    TrialExit,
    TrialHandle,
    TrialSpec,
    create_service,
)
from tunelab.services._remote_keeper import parse_gpu_info
from tunelab.services._remote_upload import support_files
from tunelab.space import SearchSpace
from tunelab.store import ExperimentStore
from tunelab.tuners import create_tuner

T = TypeVar("T")

TRIAL = textwrap.dedent(
    """
    import os, sys, time
    import nni

    p = nni.get_next_parameter()
    print("hello from", os.environ["USER"], os.getcwd(), flush=True)
    for step in range(p.get("steps", 2)):
        nni.report_intermediate_result(step)
        time.sleep(p.get("sleep", 0))
    if p.get("child"):
        import subprocess
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        nni.report_intermediate_result({"default": 0, "child": child.pid})
        time.sleep(300)
    nni.report_final_result(p.get("x", 1.0))
    """
)


class Remote:
    """One test's experiment on the lab's hosts: code, local folders, services to close."""

    def __init__(self, lab: SshLab, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.lab = lab
        self.tmp = tmp_path
        self.code = tmp_path / "code"
        self.code.mkdir()
        (self.code / "trial.py").write_text(TRIAL, encoding="utf-8")
        self.root = lab.remote_root(request)
        self.experiment = "exp1"
        self.services: list[RemoteTrainingService] = []

    def service(self, machines: list[RemoteMachine], **options: Any) -> RemoteTrainingService:
        options.setdefault("experiment_id", self.experiment)
        options.setdefault("known_hosts", self.tmp / "known_hosts")
        options.setdefault("user_known_hosts", None)
        options.setdefault("kill_grace", 1.0)
        options.setdefault("retry_delays", (0.2, 0.5))
        options.setdefault("remote_root", self.root)
        service = RemoteTrainingService(machines, code_dir=self.code, **options)
        self.services.append(service)
        return service

    def spec(self, sequence: int, parameters: dict[str, Any], **extra: Any) -> TrialSpec:
        trial_id = f"r{sequence:03d}"
        return TrialSpec(
            experiment_id=self.experiment,
            trial_id=trial_id,
            sequence=sequence,
            command="python3 trial.py",
            code_dir=self.code,
            trial_dir=self.tmp / "trials" / trial_id,
            parameters=parameters,
            **extra,
        )

    def remote_dir(self, user: str) -> Path:
        return self.lab.home(user) / self.root / self.experiment

    def run(self, body: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60) -> T:
        async def main() -> T:
            try:
                return await asyncio.wait_for(body(), timeout)
            finally:
                for service in self.services:
                    await service.close()
                self.services.clear()

        return asyncio.run(main())


@pytest.fixture
def remote(ssh_lab: SshLab, tmp_path: Path, request: pytest.FixtureRequest) -> Remote:  # noqa: F811
    return Remote(ssh_lab, tmp_path, request)


async def run_trial(
    service: RemoteTrainingService, spec: TrialSpec
) -> tuple[TrialExit, list[dict[str, Any]], TrialHandle]:
    placement = service.place(spec)
    assert isinstance(placement, Placement), placement
    handle = await service.launch(spec, placement)
    exit_info = await service.wait(handle)
    return exit_info, await service.read_metrics(handle), handle


async def placed(service: RemoteTrainingService, spec: TrialSpec, timeout: float) -> Placement:
    deadline = time.monotonic() + timeout
    while True:
        placement = service.place(spec)
        if isinstance(placement, Placement):
            return placement
        assert time.monotonic() < deadline, placement
        await asyncio.sleep(0.05)


# -- logins -------------------------------------------------------------------------------


@pytest.mark.parametrize("login", ["key", "passphrase", "password", "agent"])
def test_each_login_kind_runs_a_trial_as_its_own_user(
    remote: Remote, login: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = remote.lab.beta if login in ("password", "agent") else remote.lab.alpha
    if login == "agent":
        monkeypatch.setenv("SSH_AUTH_SOCK", remote.lab.agent_socket)
    machine = remote.lab.machine(server, login)

    async def body() -> None:
        service = remote.service([machine])
        await service.start()
        exit_info, records, _ = await run_trial(service, remote.spec(0, {"x": 0.5}))

        assert exit_info.exit_code == 0, (remote.tmp / "trials/r000/trial.stderr").read_text()
        assert [r["type"] for r in records] == ["INTERMEDIATE", "INTERMEDIATE", "FINAL"]
        assert records[-1]["value"] == 0.5
        stdout = (remote.tmp / "trials" / "r000" / "trial.stdout").read_text()
        # The trial ran as the machine's user, in the code folder under that user's home.
        assert f"hello from {server.user} {remote.remote_dir(server.user)}/code" in stdout

    remote.run(body)


def test_secrets_can_come_from_the_environment(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = remote.lab
    port = lab.alpha.port
    monkeypatch.setenv(f"TUNELAB_SSH_PASSPHRASE_127_0_0_1_{port}", lab.passphrase)
    monkeypatch.setenv("TUNELAB_SSH_PASSWORD", lab.password)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    # What a resumed experiment's config looks like: the key file without its passphrase, and
    # a machine whose password was dropped from the stored config.
    keyed = RemoteMachine("127.0.0.1", "tl-alpha", port, ssh_key_file=str(lab.protected_key))
    bare = RemoteMachine("127.0.0.1", "tl-beta", lab.beta.port)

    async def body() -> None:
        service = remote.service([keyed, bare])
        await service.start()
        for sequence in range(2):
            exit_info, _, _ = await run_trial(service, remote.spec(sequence, {}))
            assert exit_info.exit_code == 0

    remote.run(body)


def test_a_refused_login_fails_start_naming_the_host_and_not_the_password(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    wrong = remote.lab.machine(remote.lab.beta, "password")
    wrong.password = "not-the-password-" + remote.lab.password
    locked = RemoteMachine(
        "127.0.0.1", "tl-alpha", remote.lab.alpha.port, ssh_key_file=str(remote.lab.protected_key)
    )
    # A wrong passphrase is as lasting as a wrong password: refused, never retried.
    mistyped = RemoteMachine(
        "127.0.0.1",
        "tl-alpha",
        remote.lab.alpha.port,
        ssh_key_file=str(remote.lab.protected_key),
        ssh_passphrase="not-the-passphrase",
    )

    async def body() -> None:
        service = remote.service([wrong, locked, mistyped])
        with pytest.raises(ConfigError) as caught:
            await service.start()
        message = str(caught.value)
        assert f"host {remote.lab.beta.address}: permission denied for user tl-beta" in message
        assert "is encrypted and no passphrase was given" in message
        assert "TUNELAB_SSH_PASSPHRASE" in message
        assert (
            f"the key {remote.lab.protected_key} cannot be used: Incorrect passphrase" in message
        )
        assert wrong.password not in message and remote.lab.password not in message
        assert "not-the-passphrase" not in message

    remote.run(body)


def test_a_changed_host_key_is_refused(remote: Remote) -> None:
    other = "[127.0.0.1]:{} ssh-ed25519 {}\n"
    fake_key = "AAAAC3NzaC1lZDI1NTE5AAAAIHh0aGlzIGlzIG5vdCB0aGUga2V5IG9mIHRoZSBob3N0"
    (remote.tmp / "known_hosts").write_text(other.format(remote.lab.alpha.port, fake_key))

    async def body() -> None:
        service = remote.service([remote.lab.machine(remote.lab.alpha)])
        with pytest.raises(ConfigError, match="host key differs from the one recorded in"):
            await service.start()

    remote.run(body)


def test_a_host_key_is_remembered_on_first_use_and_then_required(remote: Remote) -> None:
    machine = remote.lab.machine(remote.lab.alpha)

    async def body() -> None:
        first = remote.service([machine])
        await first.start()
        await first.close()
        recorded = (remote.tmp / "known_hosts").read_text()
        assert recorded.startswith(f"[127.0.0.1]:{remote.lab.alpha.port} ssh-ed25519 ")
        second = remote.service([machine])
        await second.start()  # the same key again: accepted without a new line
        assert (remote.tmp / "known_hosts").read_text() == recorded

    remote.run(body)


# -- upload -------------------------------------------------------------------------------


def test_the_upload_honours_the_ignore_file_and_ships_the_trial_side(remote: Remote) -> None:
    (remote.code / "data").mkdir()
    (remote.code / "data" / "big.bin").write_bytes(b"x" * 1000)
    (remote.code / "cache").mkdir()
    (remote.code / "cache" / "junk.txt").write_text("junk")
    (remote.code / "keep.txt").write_text("kept")
    (remote.code / "sub").mkdir()
    (remote.code / "sub" / "also.bin").write_bytes(b"y")
    (remote.code / ".nniignore").write_text("cache/\n*.bin\n")
    (remote.code / ".tunelabignore").write_text("sub/\n")

    async def body() -> None:
        service = remote.service([remote.lab.machine(remote.lab.alpha)])
        await service.start()
        code = remote.remote_dir("tl-alpha") / "code"
        assert (code / "keep.txt").read_text() == "kept"
        assert (code / "trial.py").exists() and (code / "data").is_dir()
        assert not (code / "cache").exists()
        assert not (code / "data" / "big.bin").exists() and not (code / "sub").exists()
        # The trial side goes with the code: `import nni` works without tunelab on the host.
        lib = remote.remote_dir("tl-alpha") / "lib" / "tunelab"
        assert (lib / "compat" / "nni" / "__init__.py").exists()
        exit_info, records, _ = await run_trial(service, remote.spec(0, {"x": 2.0}))
        assert exit_info.exit_code == 0 and records[-1]["value"] == 2.0

    remote.run(body)


def _make_b29_code_dir(code: Path) -> None:
    cache = code / "cache"
    cache.mkdir()
    for index in range(3000):
        (cache / f"f{index:04d}.txt").write_bytes(b"k" * 1024)
    with open(code / "data.bin", "wb") as data:
        data.truncate(400 * 1024 * 1024)  # sparse: 400 MB as the scan sees it, no disk used


def test_b29_too_many_files_and_a_large_file_are_refused_before_upload(remote: Remote) -> None:
    _make_b29_code_dir(remote.code)

    async def body() -> None:
        service = remote.service([remote.lab.machine(remote.lab.alpha)])
        started = time.monotonic()
        with pytest.raises(ConfigError) as caught:
            await service.start()
        assert time.monotonic() - started < 5
        message = str(caught.value)
        assert "3,002 files (limit 2,000)" in message
        assert "most in cache/ (3,000)" in message
        assert "400.0 MB" in message and "(limit 300.0 MB)" in message
        assert "data.bin (400.0 MB)" in message
        assert ".nniignore" in message and "'cache/'" in message and "'data.bin'" in message
        assert not remote.remote_dir("tl-alpha").exists()  # nothing was sent

    remote.run(body)


def test_b29_with_an_ignore_file_the_same_code_runs(remote: Remote) -> None:
    _make_b29_code_dir(remote.code)
    (remote.code / ".nniignore").write_text("data.bin\ncache/\n")

    async def body() -> None:
        service = remote.service([remote.lab.machine(remote.lab.alpha)])
        await service.start()
        exit_info, _, _ = await run_trial(service, remote.spec(0, {}))
        assert exit_info.exit_code == 0
        assert not (remote.remote_dir("tl-alpha") / "code" / "cache").exists()

    remote.run(body)


# -- GPUs (field case B31) ----------------------------------------------------------------


def test_b31_one_gpu_three_sequential_trials_run_back_to_back(remote: Remote) -> None:
    machine = remote.lab.machine(remote.lab.alpha, gpu_indices=[0], max_trials_per_gpu=1)
    machine.use_active_gpu = True
    space = {"x": {"_type": "choice", "_value": [0.1, 0.2, 0.3]}}
    tuner = create_tuner("GridSearch")
    tuner.update_search_space(SearchSpace.from_json(space))
    exp_dir = remote.tmp / "experiment"
    exp_dir.mkdir()
    store = ExperimentStore(exp_dir / "experiment.db")
    store.create_experiment(remote.experiment, {"searchSpace": space})

    async def body() -> str:
        probes = {machine.address: lambda: [GpuInfo(0, foreign_processes=1)]}
        service = remote.service([machine], gpu_probes=probes)
        await service.start()
        settings = EngineSettings(
            trial_command="python3 trial.py",
            code_dir=remote.code,
            concurrency=1,
            max_trials=3,
            gpu_number=1,
        )
        engine = Engine(remote.experiment, exp_dir, settings, store, service, tuner)
        return await engine.run()

    assert remote.run(body) == "DONE"
    trials = sorted(store.trials(), key=lambda t: t.sequence)
    assert [t.status for t in trials] == ["SUCCEEDED"] * 3
    for before, after in itertools.pairwise(trials):
        assert after.start_time - before.end_time < 2.0  # type: ignore[operator]


def test_b31_a_busy_gpu_is_refused_with_a_reason_naming_it(remote: Remote) -> None:
    machine = remote.lab.machine(remote.lab.alpha, gpu_indices=[0, 1])
    probes = {machine.address: lambda: [GpuInfo(0, foreign_processes=2), GpuInfo(1)]}

    async def body() -> None:
        service = remote.service([machine], gpu_probes=probes)
        await service.start()
        first = service.place(remote.spec(0, {}, gpu_number=1))
        assert isinstance(first, Placement) and first.gpu_indices == [1]
        reason = service.place(remote.spec(1, {}, gpu_number=1))
        assert isinstance(reason, str)
        assert reason.startswith(f"waiting: host {machine.address}: ")
        assert "busy: GPU 0 (2 other processes)" in reason and "useActiveGpu is false" in reason

    remote.run(body)


def test_gpus_are_found_with_nvidia_smi_on_the_host(
    remote: Remote, request: pytest.FixtureRequest
) -> None:
    # A stand-in nvidia-smi on the host's PATH (through pythonPath): GPU 0 runs a process of
    # another session (pid 1), GPU 1 is free.
    bin_dir = Path(tempfile.mkdtemp(prefix="tunelab-fakebin-"))
    request.addfinalizer(lambda: shutil.rmtree(bin_dir, ignore_errors=True))
    script = bin_dir / "nvidia-smi"
    script.write_text(
        textwrap.dedent(
            """\
            #!/bin/sh
            case "$1" in
              --query-gpu=*) printf '0, GPU-aaa\\n1, GPU-bbb\\n' ;;
              --query-compute-apps=*) printf 'GPU-aaa, 1\\n' ;;
            esac
            """
        )
    )
    script.chmod(0o755)
    bin_dir.chmod(0o755)
    (bin_dir / "python3").symlink_to("/usr/bin/python3")
    machine = remote.lab.machine(remote.lab.alpha, python_path=str(bin_dir))

    async def body() -> None:
        service = remote.service([machine], gpu_number=1, gpu_poll=0.2)
        service.check_feasible(1)  # not known before the host is asked: checked at start
        await service.start()
        with pytest.raises(ConfigError, match="no machine has that many usable"):
            service.check_feasible(3)
        placement = service.place(remote.spec(0, {}, gpu_number=1))
        assert isinstance(placement, Placement) and placement.gpu_indices == [1]
        reason = service.place(remote.spec(1, {}, gpu_number=1))
        assert isinstance(reason, str) and "busy: GPU 0 (1 other process)" in reason

    remote.run(body)


def test_the_gpu_answer_of_nvidia_smi_is_parsed() -> None:
    gpus = "0, GPU-a\n1, GPU-b\n2, GPU-c\n"
    apps = "GPU-a, 1\nGPU-a, 1\nGPU-c, 999999999\nbad line\n"
    found = parse_gpu_info(gpus, apps, own_sessions=set())
    assert found == [
        {"index": 0, "foreign": 2},
        {"index": 1, "foreign": 0},
        {"index": 2, "foreign": 1},
    ]
    assert parse_gpu_info(gpus, "GPU-a, 1\n", own_sessions={os.getsid(1)})[0]["foreign"] == 0


# -- key + passphrase from start to cleanup (field case B32) ------------------------------


def test_b32_key_and_passphrase_without_password_create_run_and_delete(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    machine = remote.lab.machine(remote.lab.alpha, "passphrase")
    assert machine.password is None

    async def body() -> None:
        service = remote.service([machine])
        await service.start()
        exit_info, _, _ = await run_trial(service, remote.spec(0, {}))
        assert exit_info.exit_code == 0
        await service.close()
        assert remote.remote_dir("tl-alpha").is_dir()

        # `experiment delete`: a service built afresh from the config, never started.
        deleting = remote.service([remote.lab.machine(remote.lab.alpha, "passphrase")])
        await deleting.cleanup(remote.experiment)
        assert not remote.remote_dir("tl-alpha").exists()

    remote.run(body)


def test_cleanup_names_the_hosts_it_could_not_reach(remote: Remote) -> None:
    down = remote.lab.new_server(start=False)

    async def body() -> None:
        service = remote.service([remote.lab.machine(down)], connect_timeout=2)
        with pytest.raises(OSError, match=rf"host {down.address}: Connection refused"):
            await service.cleanup(remote.experiment)

    remote.run(body)


# -- unreachable and lost hosts -----------------------------------------------------------


def test_an_unreachable_host_is_the_reason_and_is_retried(
    remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tunelab.services.remote")
    down = remote.lab.new_server(start=False)

    async def body() -> None:
        service = remote.service([remote.lab.machine(down)], retry_delays=(0.3, 0.5))
        await service.start()  # does not fail: the host may come up
        reason = service.place(remote.spec(0, {}))
        assert isinstance(reason, str)
        assert reason.startswith(f"waiting: host {down.address} unreachable (Connection refused)")
        assert "retrying in 1 s" in reason or "retrying now" in reason

        await asyncio.sleep(1.2)  # a few more failed attempts: logged once
        down.start()
        placement = await placed(service, remote.spec(0, {}), timeout=10)
        handle = await service.launch(remote.spec(0, {}), placement)
        assert (await service.wait(handle)).exit_code == 0

    remote.run(body)
    messages = [r.getMessage() for r in caplog.records if r.name == "tunelab.services.remote"]
    lost = [m for m in messages if m.startswith(f"Host {down.address} unreachable")]
    assert lost == [f"Host {down.address} unreachable (Connection refused); retrying"]
    assert any(m.startswith(f"Host {down.address} connected after") for m in messages)


def test_a_lost_connection_is_restored_and_the_running_trial_loses_nothing(
    remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tunelab.services.remote")
    server = remote.lab.new_server()

    async def body() -> None:
        service = remote.service([remote.lab.machine(server)], retry_delays=(0.5,))
        await service.start()
        spec = remote.spec(0, {"steps": 6, "sleep": 0.3, "x": 3.0})
        handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
        await asyncio.sleep(0.5)

        server.drop_connections()
        deadline = time.monotonic() + 5
        while isinstance(service.place(remote.spec(1, {})), Placement):
            assert time.monotonic() < deadline, "the lost connection was not noticed"
            await asyncio.sleep(0.02)
        reason = service.place(remote.spec(1, {}))
        assert isinstance(reason, str) and f"host {server.address} unreachable" in reason
        # The running trial says why it cannot be followed now, and for how long it waits.
        note = service.note(handle)
        assert note is not None and note.startswith(f"host {server.address} unreachable (")
        assert "the trial goes on if it comes back within " in note and note.endswith(
            " s, and is given up then"
        )

        exit_info = await service.wait(handle)
        assert service.note(handle) is None
        records = await service.read_metrics(handle)
        assert exit_info.exit_code == 0
        assert [r["seq"] for r in records] == list(range(7))
        assert records[-1]["value"] == 3.0

    remote.run(body)
    messages = [r.getMessage() for r in caplog.records if r.name == "tunelab.services.remote"]
    assert f"Host {server.address} connection lost; retrying" in messages
    assert any(m.startswith(f"Host {server.address} connection restored after") for m in messages)


def test_trials_on_a_host_that_stays_away_end_with_that_reason(remote: Remote) -> None:
    server = remote.lab.new_server()

    async def body() -> None:
        service = remote.service(
            [remote.lab.machine(server)], retry_delays=(0.2,), lost_timeout=1.0
        )
        await service.start()
        spec = remote.spec(0, {"steps": 1, "sleep": 30})
        handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        server.stop()
        started = time.monotonic()
        exit_info = await asyncio.wait_for(service.wait(handle), 10)

        assert 0.9 < time.monotonic() - started < 5
        assert exit_info.exit_code is None
        assert exit_info.describe().startswith(f"host {server.address} unreachable for 1 s (")
        assert exit_info.describe().endswith("the trial's end is unknown")

    remote.run(body)


# -- cancel, secrets, the builder ---------------------------------------------------------


def test_cancel_also_ends_a_child_that_started_its_own_session(remote: Remote) -> None:
    import psutil

    async def body() -> None:
        service = remote.service([remote.lab.machine(remote.lab.alpha)])
        await service.start()
        spec = remote.spec(0, {"steps": 0, "child": True})
        handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
        child = None
        while child is None:
            for record in await service.read_metrics(handle):
                if isinstance(record["value"], dict):
                    child = record["value"]["child"]
            await asyncio.sleep(0.05)
        assert psutil.Process(child).username() == "tl-alpha"

        await service.cancel(handle)
        exit_info = await asyncio.wait_for(service.wait(handle), 10)
        assert exit_info.signal is not None or exit_info.exit_code != 0
        await asyncio.sleep(0.3)
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"

    remote.run(body)


def test_secrets_reach_no_log_state_or_message(
    remote: Remote, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    lab = remote.lab
    with_passphrase = lab.machine(lab.alpha, "passphrase")
    with_password = lab.machine(lab.beta, "password")
    secrets = [lab.password, lab.passphrase]

    async def body() -> list[str]:
        service = remote.service([with_passphrase, with_password])
        await service.start()
        seen = [repr(with_passphrase), repr(with_password)]
        for sequence in range(2):
            _, _, handle = await run_trial(service, remote.spec(sequence, {}))
            seen.append(json.dumps(handle.state()))
        wrong = lab.machine(lab.beta, "password")
        wrong.password = lab.password + "-wrong"
        secrets.append(wrong.password)
        failing = remote.service([wrong])
        with pytest.raises(ConfigError) as caught:
            await failing.start()
        seen.append(str(caught.value))
        return seen

    seen = remote.run(body)
    assert "127.0.0.1" in caplog.text  # the logs were captured
    for secret in secrets:
        assert secret not in caplog.text
        for text in seen:
            assert secret not in text


def test_the_remote_platform_is_built_from_a_config(tmp_path: Path) -> None:
    config = {
        "trialCommand": "python3 trial.py",
        "trialCodeDirectory": str(tmp_path),
        "trialGpuNumber": 1,
        "trainingService": {
            "platform": "remote",
            "machineList": [
                {"host": "box-a.example", "user": "me", "password": "pw", "gpuIndices": "0,1"},
                {
                    "host": "h2",
                    "port": 2222,
                    "user": "me",
                    "sshKeyFile": "/k",
                    "useActiveGpu": True,
                },
            ],
        },
    }
    service = create_service(config)
    assert isinstance(service, RemoteTrainingService)
    first, second = (host.machine for host in service._hosts)
    assert first.gpu_indices == [0, 1] and first.port == 22 and first.password == "pw"
    assert "pw" not in repr(first)
    assert second.use_active_gpu and second.ssh_key_file == "/k"
    config["trainingService"] = {"platform": "remote", "machineList": []}
    with pytest.raises(ConfigError, match="machineList: needs at least one machine"):
        create_service(config)


def test_platform_clean_removes_the_whole_remote_root(remote: Remote) -> None:
    async def body() -> None:
        service = remote.service([remote.lab.machine(remote.lab.alpha)])
        await service.start()
        await service.close()
        root = remote.lab.home("tl-alpha") / remote.root
        assert root.is_dir()
        await remote.service([remote.lab.machine(remote.lab.alpha)]).cleanup(None)
        assert not root.exists()
        careless = remote.service([remote.lab.machine(remote.lab.alpha)], remote_root=".")
        with pytest.raises(ValueError, match="not a folder tunelab may remove"):
            await careless.cleanup(None)

    remote.run(body)


def test_what_is_shipped_to_hosts_parses_as_python_3_8() -> None:
    # The hosts' Python may be older than ours, and a formatter that targets ours may rewrite
    # code into newer syntax (a parenthesized "with", for one).
    shipped = support_files()
    assert "tools/tunelab_keeper.py" in shipped and "lib/tunelab/trial/_api.py" in shipped
    for name, data in shipped.items():
        ast.parse(data.decode(), filename=name, feature_version=(3, 8))
