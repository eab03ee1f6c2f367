"""One conformance suite for every training service (DESIGN.md rule 8).

Each service is given to the tests as a :class:`ServiceKit`: how to build the service (with an
injected GPU probe), where the trial code lives, and the command that runs a trial there.
Only the kit differs between services; the tests are the same. A service joins the suite by
adding a kit to ``KITS`` below (with its own fixtures: real sshd servers on loopback for
remote, a real local Ray cluster for ray).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import textwrap
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.services.ray_cluster import ray_cluster  # noqa: F401 - the ray kit's cluster
from tests.services.sshd import SshLab, ssh_lab  # noqa: F401 - the remote kit's fixture
from tunelab.services import (
    GpuInfo,
    LocalTrainingService,
    RemoteTrainingService,
    TrainingService,
    TrialSpec,
)

T = TypeVar("T")

# One trial script does every job the suite needs, chosen by its parameters.
TRIAL_SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    import tunelab

    p = tunelab.get_next_parameter()
    mode = p.get("mode", "ok")
    print("stdout of", tunelab.get_trial_id(), flush=True)
    print("stderr of", tunelab.get_trial_id(), file=sys.stderr, flush=True)
    if mode == "env":
        keys = [k for k in os.environ if k.startswith(("TUNELAB_", "NNI_"))]
        keys.append("CUDA_VISIBLE_DEVICES")
        seen = {k: os.environ.get(k) for k in keys}
        seen["cwd"] = os.getcwd()
        with open(os.path.join(os.environ["TUNELAB_TRIAL_DIR"], "env.json"), "w") as f:
            json.dump(seen, f)
    for step in range(p.get("steps", 3)):
        tunelab.report_intermediate_result(step / 10)
        time.sleep(p.get("step_sleep", 0))
    if mode == "child":
        child = subprocess.Popen(["sleep", "300"])
        with open(os.path.join(os.environ["TUNELAB_TRIAL_DIR"], "child.pid"), "w") as f:
            f.write(str(child.pid))
    if mode in ("sleep", "child"):
        time.sleep(p.get("seconds", 300))
    if mode == "fail":
        sys.exit(3)
    tunelab.report_final_result({"default": 0.5 + p.get("x", 0), "extra": "kept"})
    """
)


@dataclass
class ServiceKit:
    """How one training service is built and used by the suite."""

    platform: str
    make: Callable[..., TrainingService]
    code_dir: Path
    python: str
    root: Path
    experiment_id: str = "conform"
    started: list[TrainingService] = field(default_factory=list)

    def spec(self, sequence: int, parameters: dict[str, Any], **extra: Any) -> TrialSpec:
        trial_id = f"t{sequence:04d}"
        return TrialSpec(
            experiment_id=self.experiment_id,
            trial_id=trial_id,
            sequence=sequence,
            command=f"{shlex.quote(self.python)} trial.py",
            code_dir=self.code_dir,
            trial_dir=self.root / "trials" / trial_id,
            parameters=parameters,
            **extra,
        )

    async def service(self, gpus: list[GpuInfo] | None = None, **options: Any) -> TrainingService:
        """A started service; the kit closes it when the test's coroutine ends."""
        service = self.make(gpus=gpus, **options)
        await service.start()
        self.started.append(service)
        return service

    def run(self, body: Callable[[], Coroutine[Any, Any, T]], timeout: float = 120) -> T:
        """Run a test's coroutine on a fresh event loop with an outer time limit, then close
        the services it started on that same loop."""

        async def main() -> T:
            try:
                return await asyncio.wait_for(body(), timeout)
            finally:
                for service in self.started:
                    await service.close()
                self.started.clear()

        return asyncio.run(main())


def _local_kit(tmp_path: Path) -> ServiceKit:
    code_dir = tmp_path / "code dir"
    code_dir.mkdir()
    (code_dir / "trial.py").write_text(TRIAL_SCRIPT, encoding="utf-8")

    def make(gpus: list[GpuInfo] | None = None, **options: Any) -> TrainingService:
        probe = (lambda: gpus) if gpus is not None else (lambda: [])
        return LocalTrainingService(gpu_probe=probe, kill_grace=1.0, **options)

    return ServiceKit("local", make, code_dir, sys.executable, tmp_path)


def _ray_kit(tmp_path: Path, request: pytest.FixtureRequest) -> ServiceKit:
    """Trials on the session's local Ray cluster (tests/services/ray_cluster.py).

    GPU placement goes through the injected probe when a test gives GPUs (tunelab's GPU
    scheduler, Ray asked for no GPU); tests/services/test_ray_service.py checks placement by
    Ray's own GPU accounting. Trials ask for a quarter of a CPU, so that the cluster's 3 CPUs
    hold the suite's 4 side-by-side trials even while another xdist worker runs Ray tests."""
    from tunelab.services._ray import RayTrainingService

    cluster = request.getfixturevalue("ray_cluster")
    code_dir = tmp_path / "code dir"
    code_dir.mkdir()
    (code_dir / "trial.py").write_text(TRIAL_SCRIPT, encoding="utf-8")
    worker_root = str(tmp_path / "worker")

    def make(gpus: list[GpuInfo] | None = None, **options: Any) -> TrainingService:
        return RayTrainingService(
            address=cluster.address,
            trial_cpus=0.25,
            gpu_probe=(lambda: gpus) if gpus is not None else None,
            kill_grace=1.0,
            worker_root=worker_root,
            **options,
        )

    kit = ServiceKit("ray", make, code_dir, sys.executable, tmp_path)

    def leave_nothing() -> None:
        # A test that failed half-way may leave the experiment's actor and trials behind.
        asyncio.run(make().cleanup(kit.experiment_id))

    request.addfinalizer(leave_nothing)
    return kit


def _hybrid_kit(tmp_path: Path) -> ServiceKit:
    """Two local services behind the hybrid service; the GPUs belong to the first one, so
    GPU trials all go there and the others spread over both. Trials see the platform of the
    service that runs them (local)."""
    from tunelab.services._hybrid import HybridTrainingService

    local = _local_kit(tmp_path)

    def make(gpus: list[GpuInfo] | None = None, **options: Any) -> TrainingService:
        return HybridTrainingService([local.make(gpus, **options), local.make([], **options)])

    return ServiceKit("local", make, local.code_dir, sys.executable, tmp_path)


def _remote_kit(tmp_path: Path, request: pytest.FixtureRequest) -> ServiceKit:
    """Two SSH "machines" on loopback, each its own sshd and login user (tl-alpha by key,
    tl-beta by password; tests/services/sshd.py). Injected GPUs are the first machine's; the
    second has none, so that trials asking for GPUs see as many as the test gave."""
    lab: SshLab = request.getfixturevalue("ssh_lab")
    code_dir = tmp_path / "code dir"
    code_dir.mkdir()
    (code_dir / "trial.py").write_text(TRIAL_SCRIPT, encoding="utf-8")
    root = lab.remote_root(request)

    def make(
        gpus: list[GpuInfo] | None = None, use_active_gpu: bool | None = None, **options: Any
    ) -> TrainingService:
        active = bool(use_active_gpu)
        alpha = lab.machine(lab.alpha, "key", use_active_gpu=active)
        beta = lab.machine(lab.beta, "password", use_active_gpu=active)
        return RemoteTrainingService(
            [alpha, beta],
            code_dir=code_dir,
            experiment_id="conform",
            remote_root=root,
            gpu_probes={alpha.address: lambda: gpus or [], beta.address: lambda: []},
            known_hosts=tmp_path / "known_hosts",
            user_known_hosts=None,
            kill_grace=1.0,
            **options,
        )

    return ServiceKit("remote", make, code_dir, "python3", tmp_path)


KITS: dict[str, Callable[[Path, pytest.FixtureRequest], ServiceKit]] = {
    "local": lambda tmp_path, request: _local_kit(tmp_path),
    "hybrid": lambda tmp_path, request: _hybrid_kit(tmp_path),
    "ray": _ray_kit,
    "remote": _remote_kit,
}


@pytest.fixture(params=sorted(KITS))
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceKit]:
    yield KITS[request.param](tmp_path, request)
