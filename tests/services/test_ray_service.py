"""What the ray training service does beyond the conformance suite, on a real local cluster
(tests/services/ray_cluster.py): Ray's own GPU and CPU accounting with the reasons a trial
waits, no retries by Ray, the shipped code and trial side, re-attaching after the manager's
process died, cleanup, the config builder and the local cluster of a config without address.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from tests.conftest import Lab
from tests.services.ray_cluster import RayCluster, ray_cluster  # noqa: F401 - fixture
from tunelab.errors import ConfigError
from tunelab.services import Placement, TrainingService, TrialHandle, TrialSpec, create_service
from tunelab.services._ray import RayTrainingService, parse_memory_size

T = TypeVar("T")
REPO_SRC = Path(__file__).resolve().parents[2] / "src"


def run(body: Coroutine[Any, Any, T], timeout: float = 120) -> T:
    return asyncio.run(asyncio.wait_for(body, timeout))


class RayLab:
    """A code directory, a manager-side experiment folder and services on the cluster."""

    def __init__(self, root: Path, cluster: RayCluster, experiment_id: str) -> None:
        self.root = root
        self.cluster = cluster
        self.experiment_id = experiment_id
        self.code_dir = root / "code"
        self.code_dir.mkdir(parents=True)
        self.worker_root = str(root / "worker")

    def service(self, **options: Any) -> RayTrainingService:
        options.setdefault("trial_cpus", 0.5)
        return RayTrainingService(
            address=self.cluster.address, kill_grace=1.0, worker_root=self.worker_root, **options
        )

    def spec(
        self, sequence: int, source: str, python: str = sys.executable, **extra: Any
    ) -> TrialSpec:
        name = f"trial_{sequence}.py"
        (self.code_dir / name).write_text(textwrap.dedent(source), encoding="utf-8")
        trial_id = f"r{sequence:03d}"
        return TrialSpec(
            experiment_id=self.experiment_id,
            trial_id=trial_id,
            sequence=sequence,
            command=f"{python} {name}",
            code_dir=self.code_dir,
            trial_dir=self.root / "experiment" / "trials" / trial_id,
            parameters={"n": sequence},
            **extra,
        )


@pytest.fixture
def ray_lab(
    tmp_path: Path,
    ray_cluster: RayCluster,  # noqa: F811 - the fixture imported above
    request: pytest.FixtureRequest,
) -> Iterator[RayLab]:
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    the_lab = RayLab(tmp_path, ray_cluster, f"raytest-{name}")
    yield the_lab
    run(the_lab.service().cleanup(the_lab.experiment_id))


async def finish(
    service: TrainingService, handle: TrialHandle
) -> tuple[Any, list[dict[str, Any]]]:
    exit_info = await service.wait(handle)
    return exit_info, await service.read_metrics(handle)


FINAL_ENV = """
import os, tunelab
tunelab.get_next_parameter()
tunelab.report_final_result({"default": 1, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")})
"""


def test_ray_places_gpu_trials_and_says_why_one_waits(ray_lab: RayLab) -> None:
    async def body() -> None:
        service = ray_lab.service()
        service.check_feasible(1)  # before start: checked once connected
        await service.start()
        try:
            with pytest.raises(ConfigError, match="trialGpuNumber"):
                service.check_feasible(2)  # the one GPU node has 1

            first = ray_lab.spec(1, FINAL_ENV, gpu_number=1)
            second = ray_lab.spec(2, FINAL_ENV, gpu_number=1)
            placement = service.place(first)
            assert isinstance(placement, Placement)
            reason = service.place(second)
            assert reason == "waiting: no Ray node has 1 free GPU (cluster: 0 of 1 free)"

            handle = await service.launch(first, placement)
            exit_info, records = await finish(service, handle)
            assert exit_info.exit_code == 0
            assert records[-1]["value"]["cuda"] == "0"  # the GPU Ray gave the task

            again = service.place(second)  # free again once the first trial has ended
            assert isinstance(again, Placement)
        finally:
            await service.close()

    run(body())


def test_a_trial_asking_for_more_than_any_node_has_waits_with_the_reason(ray_lab: RayLab) -> None:
    async def body() -> None:
        service = ray_lab.service(trial_cpus=3, trial_memory=parse_memory_size("100000gb"))
        await service.start()
        try:
            reason = service.place(ray_lab.spec(3, FINAL_ENV))
            assert reason == "waiting: no Ray node has 3 CPUs (the largest has 2 CPUs)"
        finally:
            await service.close()

    run(body())


def test_a_runtime_environment_ray_refuses_fails_the_launch_with_ray_s_reason(
    ray_lab: RayLab,
) -> None:
    async def body() -> None:
        service = ray_lab.service(runtime_env={"env_vars": {"THREADS": 4}})  # not a string
        await service.start()
        try:
            spec = ray_lab.spec(11, FINAL_ENV)
            placement = service.place(spec)
            assert isinstance(placement, Placement)
            with pytest.raises(OSError, match=r"Ray did not take the trial: .*env_vars"):
                await service.launch(spec, placement)
            # The refused trial holds nothing: the next one may use its place.
            assert isinstance(service.place(ray_lab.spec(12, FINAL_ENV)), Placement)
        finally:
            await service.close()

    run(body())


RUN_COUNTER = """
import os, sys, tunelab
p = tunelab.get_next_parameter()
with open(os.path.join({folder!r}, "runs.txt"), "a") as f:
    f.write("ran\\n")
tunelab.report_intermediate_result(0)
if {kill_worker}:
    # The trial's parent is the supervisor's bash; its parent the Ray worker running the task.
    with open("/proc/%d/stat" % os.getppid()) as f:
        worker = int(f.read().rsplit(")", 1)[1].split()[1])
    os.kill(worker, 9)
    import time; time.sleep(30)
sys.exit(1)
"""


@pytest.mark.parametrize("kill_worker", [False, True], ids=["exit-1", "worker-killed"])
def test_ray_never_runs_a_trial_again_by_itself(ray_lab: RayLab, kill_worker: bool) -> None:
    async def body() -> None:
        service = ray_lab.service()
        await service.start()
        try:
            source = RUN_COUNTER.format(folder=str(ray_lab.root), kill_worker=kill_worker)
            spec = ray_lab.spec(4, source)
            handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
            exit_info, records = await finish(service, handle)
            await asyncio.sleep(2)  # time for a retry, if Ray made one
        finally:
            await service.close()

        assert (ray_lab.root / "runs.txt").read_text() == "ran\n"
        assert [r["type"] for r in records] == ["INTERMEDIATE"]
        if kill_worker:
            assert exit_info.exit_code is None
            assert "Ray task of the trial failed" in exit_info.describe()
        else:
            assert exit_info.exit_code == 1

    run(body())


LIST_FILES = """
import os, tunelab
tunelab.get_next_parameter()
found = sorted(
    os.path.relpath(os.path.join(d, f), ".") for d, _, fs in os.walk(".") for f in fs
)
tunelab.report_final_result({"default": 1, "files": found})
"""


def test_the_shipped_code_leaves_out_what_the_ignore_files_name(ray_lab: RayLab) -> None:
    code = ray_lab.code_dir
    (code / ".nniignore").write_text("# NNI's ignore file\ndata/\n*.ckpt\n")
    (code / ".gitignore").write_text("secret.txt\n")
    (code / "data").mkdir()
    (code / "data" / "big.csv").write_text("1,2\n")
    (code / "model.ckpt").write_text("weights")
    (code / "secret.txt").write_text("token")
    (code / "pkg").mkdir()
    (code / "pkg" / "helper.py").write_text("X = 1\n")

    async def body() -> list[str]:
        service = ray_lab.service()
        await service.start()
        try:
            spec = ray_lab.spec(5, LIST_FILES)
            handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
            exit_info, records = await finish(service, handle)
            assert exit_info.exit_code == 0, (spec.trial_dir / "trial.stderr").read_text()
            files: list[str] = records[-1]["value"]["files"]
            return files
        finally:
            await service.close()

    files = run(body())
    assert "trial_5.py" in files and os.path.join("pkg", "helper.py") in files
    assert not any(f.startswith("data") or f.endswith(".ckpt") or f == "secret.txt" for f in files)


WHERE_FROM = """
import sys
import nni
import tunelab
params = nni.get_next_parameter()
nni.report_final_result({"default": 1, "nni": nni.__file__, "tunelab": tunelab.__file__,
                         "site": "site" in sys.modules})
"""


def test_import_nni_works_on_the_worker_from_the_shipped_trial_side(ray_lab: RayLab) -> None:
    async def body() -> tuple[dict[str, Any], dict[str, Any] | None]:
        service = ray_lab.service()
        await service.start()
        try:
            # -S: no site-packages, so the installed tunelab cannot be what the trial imports.
            spec = ray_lab.spec(6, WHERE_FROM, python=f"{sys.executable} -S")
            handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
            exit_info, records = await finish(service, handle)
            assert exit_info.exit_code == 0, (spec.trial_dir / "trial.stderr").read_text()
            return records[-1]["value"], handle.info  # type: ignore[attr-defined]
        finally:
            await service.close()

    seen, info = run(body())
    assert not seen["site"]
    for name in ("nni", "tunelab"):
        assert "runtime_resources" in seen[name], seen
        assert not Path(seen[name]).is_relative_to(REPO_SRC)
    # The supervisor itself found the trial side in the shipped copy too.
    assert info is not None and "runtime_resources" in info["tunelab"]


MANAGER_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from tunelab.services import TrialSpec
from tunelab.services._ray import RayTrainingService

async def main():
    service = RayTrainingService(address={address!r}, trial_cpus=0.5, kill_grace=1.0,
                                 worker_root={worker_root!r})
    await service.start()
    spec = TrialSpec({exp!r}, "r007", 7, {command!r}, Path({code!r}), Path({trial_dir!r}), {{}})
    placement = service.place(spec)
    handle = await service.launch(spec, placement)
    while not [r for r in await service.read_metrics(handle)]:
        await asyncio.sleep(0.05)
    print(json.dumps({{"placement": placement.to_json(), "state": handle.state()}}), flush=True)

asyncio.run(main())
"""

SLOW_STEPS = """
import time, tunelab
tunelab.get_next_parameter()
for step in range(8):
    tunelab.report_intermediate_result(step)
    time.sleep(0.3)
tunelab.report_final_result(99)
"""


@pytest.mark.slow
def test_a_new_manager_process_reattaches_a_trial_whose_manager_died(ray_lab: RayLab) -> None:
    spec = ray_lab.spec(7, SLOW_STEPS)
    script = MANAGER_SCRIPT.format(
        address=ray_lab.cluster.address,
        worker_root=ray_lab.worker_root,
        exp=ray_lab.experiment_id,
        command=spec.command,
        code=str(ray_lab.code_dir),
        trial_dir=str(spec.trial_dir),
    )
    # The old manager launches the trial, reads a metric and exits without closing anything.
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    saved = json.loads(done.stdout.strip().splitlines()[-1])

    async def body() -> tuple[Any, list[dict[str, Any]]]:
        service = ray_lab.service()
        await service.start()
        try:
            placement = Placement.from_json(saved["placement"])
            handle = await service.reattach(spec, placement, saved["state"])
            assert handle is not None
            return await finish(service, handle)
        finally:
            await service.close()

    exit_info, records = run(body())
    assert exit_info.exit_code == 0
    assert [r["seq"] for r in records] == list(range(9))
    assert records[-1]["value"] == 99
    assert (spec.trial_dir / "trial.stdout").exists()


SLEEPER = """
import os, time, tunelab
tunelab.get_next_parameter()
tunelab.report_intermediate_result({"default": 0, "pid": os.getpid()})
time.sleep(300)
"""


def test_cleanup_ends_the_trials_and_leaves_no_actor_or_folder(ray_lab: RayLab) -> None:
    import ray

    async def body() -> tuple[int, list[str], str]:
        service = ray_lab.service()
        await service.start()
        try:
            spec = ray_lab.spec(8, SLEEPER)
            handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
            records: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60
            while not records and time.monotonic() < deadline:
                records = await service.read_metrics(handle)
                await asyncio.sleep(0.05)
            pid = records[0]["value"]["pid"]
            trial_dir = handle.info["trialDir"]  # type: ignore[attr-defined]
            await service.cleanup(ray_lab.experiment_id)
            actors = ray.util.list_named_actors(all_namespaces=True)
            return pid, [a["name"] for a in actors], trial_dir
        finally:
            await service.close()

    pid, actors, trial_dir = run(body())
    assert RayTrainingService.actor_name(ray_lab.experiment_id) not in actors
    assert not _running(pid)
    assert not Path(trial_dir).exists()


def test_cleanup_of_the_whole_platform_ends_every_experiment_of_the_namespace(
    ray_lab: RayLab,
) -> None:
    import ray

    namespace = f"tunelab-test-{os.getpid()}"  # apart from what other tests run meanwhile
    other = RayLab(ray_lab.root / "other", ray_lab.cluster, ray_lab.experiment_id + "-b")
    other.worker_root = ray_lab.worker_root

    async def body() -> list[dict[str, Any]]:
        service = ray_lab.service(namespace=namespace)
        await service.start()
        try:
            for lab, sequence in ((ray_lab, 13), (other, 14)):
                spec = lab.spec(sequence, SLEEPER)
                spec.experiment_id = lab.experiment_id
                handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
                while not await service.read_metrics(handle):
                    await asyncio.sleep(0.05)
            await service.cleanup(None)
            listed: list[dict[str, Any]] = ray.util.list_named_actors(all_namespaces=True)
            return listed
        finally:
            await service.close()

    listed = run(body())
    assert not [entry for entry in listed if entry["namespace"] == namespace]
    assert not Path(ray_lab.worker_root).exists()


def test_close_keeps_running_trials_and_leaves_no_actor_of_finished_ones(
    ray_lab: RayLab,
) -> None:
    import ray

    other = RayLab(ray_lab.root / "other", ray_lab.cluster, ray_lab.experiment_id + "-b")

    async def body() -> None:
        keeper = ray_lab.service()  # holds the connection open for the checks
        await keeper.start()
        try:
            busy, idle = ray_lab.service(), other.service()
            await busy.start()
            await idle.start()
            long = ray_lab.spec(9, SLEEPER)
            running = await busy.launch(long, busy.place(long))  # type: ignore[arg-type]
            short = other.spec(10, FINAL_ENV)
            done = await idle.launch(short, idle.place(short))  # type: ignore[arg-type]
            assert (await idle.wait(done)).exit_code == 0
            state = running.state()
            await busy.close()  # the manager stops watching: the trial goes on
            await idle.close()

            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
            assert RayTrainingService.actor_name(other.experiment_id) not in names
            assert RayTrainingService.actor_name(ray_lab.experiment_id) in names

            again = await keeper.reattach(long, running.placement, state)
            assert again is not None
            records = []
            while not records:
                records = await keeper.read_metrics(again)
                await asyncio.sleep(0.05)
            assert _running(records[0]["value"]["pid"])
            await keeper.cancel(again)
            assert (await keeper.wait(again)).signal is not None
        finally:
            await keeper.close()

    try:
        run(body())
    finally:
        run(other.service().cleanup(other.experiment_id))
    # Nothing left once the last trial was collected and its service closed.
    run(_assert_no_actor(ray_lab, ray_lab.experiment_id))


async def _assert_no_actor(ray_lab: RayLab, experiment_id: str) -> None:
    import ray

    service = ray_lab.service()
    await service.start()
    try:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        assert RayTrainingService.actor_name(experiment_id) not in names
    finally:
        await service.close()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_without_an_address_the_service_runs_its_own_local_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    # Else Ray 2.5x writes ~/.ray/auth_token, which changes how later `ray start`s behave.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")

    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "trial.py").write_text(textwrap.dedent(FINAL_ENV), encoding="utf-8")
    spec = TrialSpec(
        "raylocal",
        "l001",
        1,
        f"{sys.executable} trial.py",
        code_dir,
        tmp_path / "trials" / "l001",
        {},
    )

    async def body() -> tuple[Any, list[dict[str, Any]]]:
        service = RayTrainingService(trial_cpus=0.5, worker_root=str(tmp_path / "worker"))
        await service.start()
        try:
            handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
            return await finish(service, handle)
        finally:
            await service.close()

    exit_info, records = run(body(), timeout=180)
    assert exit_info.exit_code == 0 and records[-1]["value"]["default"] == 1
    assert not ray.is_initialized()  # close() stopped the cluster it started


E2E_TRIAL = """
import tunelab
p = tunelab.get_next_parameter()
for step in range(2):
    tunelab.report_intermediate_result(p["x"] * step)
tunelab.report_final_result(p["x"])
"""


@pytest.mark.slow
def test_an_experiment_from_a_config_file_runs_its_trials_on_the_cluster(
    lab: Lab,
    ray_cluster: RayCluster,  # noqa: F811 - the fixture imported above
) -> None:
    config = lab.write(
        {"x": {"_type": "choice", "_value": [1, 2, 3]}},
        E2E_TRIAL,
        tuner={"name": "GridSearch"},
        maxTrialNumber=3,
        trainingService={
            "platform": "ray",
            "address": ray_cluster.address,
            "trialCpuNumber": 0.25,
            "trialMemorySize": "64mb",
        },
    )
    result, experiment_id = lab.run(config, timeout=240)
    assert result.code == 0, result.stderr
    trials = lab.trials(experiment_id)
    assert sorted(t["status"] for t in trials) == ["SUCCEEDED"] * 3, trials
    assert sorted(t["parameters"]["x"] for t in trials) == [1, 2, 3]
    for trial_dir in (lab.home / experiment_id / "trials").iterdir():
        lines = (trial_dir / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["type"] for line in lines] == ["INTERMEDIATE"] * 2 + ["FINAL"]
        assert (trial_dir / "trial.stdout").exists()


# -- without a cluster ----------------------------------------------------------------------


def test_the_config_builder_reads_the_ray_section() -> None:
    config = {
        "trialCommand": "python trial.py",
        "trialCodeDirectory": ".",
        "trainingService": {
            "platform": "ray",
            "address": "127.0.0.1:6379",
            "trialCpuNumber": 0.5,
            "trialMemorySize": "512mb",
            "trialGpuNumber": 1,
            "runtimeEnv": {"env_vars": {"A": "1"}},
        },
    }
    service = create_service(config)
    assert isinstance(service, RayTrainingService)
    assert service._address == "127.0.0.1:6379"
    assert service._trial_cpus == 0.5 and service._trial_memory == 512 << 20
    assert service._gpu_number == 1 and service._runtime_env == {"env_vars": {"A": "1"}}


def test_a_ray_config_without_ray_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'tunelab\[ray\]'"):
        create_service({"trainingService": {"platform": "ray"}})


def test_bad_ray_sections_are_refused_with_the_field_and_a_fix() -> None:
    with pytest.raises(ConfigError, match=r"trialMemorySize: must be a size with a unit"):
        create_service({"trainingService": {"platform": "ray", "trialMemorySize": "lots"}})
    with pytest.raises(ConfigError, match="set trialCodeDirectory instead"):
        create_service(
            {"trainingService": {"platform": "ray", "runtimeEnv": {"working_dir": "/x"}}}
        )


@pytest.mark.parametrize(
    ("text", "size"),
    [("2gb", 2 << 30), ("512mb", 512 << 20), ("1.5g", 3 << 29), ("64KiB", 64 << 10), ("10b", 10)],
)
def test_memory_sizes(text: str, size: int) -> None:
    assert parse_memory_size(text) == size


def test_importing_tunelab_services_does_not_import_ray() -> None:
    code = "import sys, tunelab.services; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_where_no_cluster_listens_is_refused_at_once(lab: Lab, scheme: str) -> None:
    """Ray itself would retry for minutes, with nothing said: a create that hung, and a
    manager nothing could stop."""
    import socket

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"{scheme}127.0.0.1:{port}"
    config = lab.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}},
        "print(1)\n",
        maxTrialNumber=1,
        trainingService={"platform": "ray", "address": address, "trialCpuNumber": 1},
    )

    started = time.monotonic()
    result = lab.cli("create", "--config", str(config))

    assert time.monotonic() - started < 60
    assert result.code == 2, result.stderr
    assert result.stderr.strip() == (
        "tunelab: invalid config: trainingService.address: no Ray cluster answers there "
        f"(Connection refused) (got '{address}'); start the cluster (ray start --head) or "
        "correct the address, host:port of its head node"
    )
    assert not lab.home.exists() or not any(lab.home.iterdir())
