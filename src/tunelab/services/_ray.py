"""The ray training service: trials as Ray tasks on a Ray cluster (``platform: ray``).

How a trial runs. Each experiment has one *experiment actor* in the cluster: detached, named
``tunelab-<experiment id>`` in the ``tunelab`` namespace, holding no CPU, never restarted. It
is created with the experiment's runtime environment: the trial code directory as
``working_dir`` (uploaded once per experiment, when its first trial starts, minus what the
code directory's ``.nniignore`` and ``.gitignore`` exclude, in .gitignore syntax; Ray also
honours ``.gitignore`` and ``.rayignore`` files in subfolders) and tunelab's trial side
(``tunelab.trial`` and the ``nni`` shim, standard library only) as ``py_modules``, plus the
config's ``runtimeEnv``. The actor submits one Ray task per trial, with the trial's resources
(``num_cpus`` = trialCpuNumber, ``num_gpus`` = trialGpuNumber, ``memory`` = trialMemorySize)
and ``max_retries=0``: Ray never reruns a trial, the engine decides. The tasks inherit the
actor's runtime environment, and Ray reuses its worker processes between tasks, so a trial
costs milliseconds on top of its own start-up and nothing is uploaded per trial.

The task (:func:`tunelab.services._ray_supervisor.run_trial`) runs the trial command with the
local service's kind of supervisor, in the shipped working directory, with the trial's folder
on the worker (``TUNELAB_TRIAL_DIR``) under ``$TUNELAB_RAY_TRIAL_ROOT`` or the worker's
temporary folder: ``<root>/<experiment id>/<trial id>``. It sends what the trial appends to
its metrics file and logs to the experiment actor, and the manager fetches it from there into
the trial's folder on the manager's machine (``metrics.jsonl``, ``trial.stdout``,
``trial.stderr``), so no port on the manager's machine needs to be reachable from the
cluster. Other files the trial writes stay on the worker, in its trial folder, until the
experiment is deleted (:meth:`RayTrainingService.cleanup`).

Because the experiment actor owns the tasks, trials go on running when the manager dies; a
new manager re-attaches them by the actor's name. The actor keeps each trial's exit and
unread output until a manager has collected them, then forgets the trial; ``close`` kills the
actor once it holds nothing, and ``cleanup`` kills it whatever it holds. A manager that finds
the actor still alive (trials of an earlier manager still running) launches new trials
through it, so they run the code that actor was created with.

Where a trial waits. ``place`` answers from the cluster's free resources per node (asked at
most once a second), corrected for the trials this service placed or saw end since, and says
why a trial must wait ("waiting: no Ray node has 1 free GPU (cluster: 0 of 1 free)"). Other
users of the cluster can still take resources in between; such a trial then waits in Ray's
own queue, shown as running.

GPUs. By default Ray's resource accounting places GPU trials (``num_gpus``) and sets
``CUDA_VISIBLE_DEVICES``. With an injected GPU probe (tests, ``TUNELAB_FAKE_GPUS``) the
service chooses GPU indices itself with the local service's :class:`GpuScheduler` and sets
``CUDA_VISIBLE_DEVICES`` from them, asking Ray for no GPU: that mode describes one GPU machine.

Where Ray runs. With an ``address`` the service connects to that cluster. Without one, it
starts a local single-node cluster inside the manager process (``ray.init(address="local")``)
and stops it in ``close``: such trials end with their manager, and a restarted manager runs
them again. One process talks to one Ray cluster: services in one process share the
connection, and the last one to close ends it if tunelab opened it.

Ray is an optional extra (``pip install 'tunelab[ray]'``): it is imported when a service is
started, never when tunelab is.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError, Issue
from tunelab.services import _ray_supervisor
from tunelab.services._base import (
    STDERR_FILE,
    STDOUT_FILE,
    Placement,
    TrainingService,
    TrialExit,
    TrialHandle,
    TrialSpec,
)
from tunelab.services._factory import fake_gpus, register_platform
from tunelab.services._gpu import GpuProbe, GpuScheduler
from tunelab.trial import METRICS_FILE, read_metrics, write_parameters

__all__ = ["RayTrainingService", "parse_memory_size"]

logger = logging.getLogger("tunelab.services.ray")

NAMESPACE = "tunelab"
IGNORE_FILES = (".gitignore", ".nniignore")
_LOCAL_FILES = {"metrics": METRICS_FILE, "stdout": STDOUT_FILE, "stderr": STDERR_FILE}
_POLL_BYTES = 4 << 20
# How long the cluster's view of free resources may lag behind what tasks hold (about 0.3 s
# measured on a local cluster).
_RESOURCE_LAG = 0.5
_SNAPSHOT_SECONDS = 1.0
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory_size(text: str | int | float) -> int:
    """Bytes in a size such as ``"2gb"``, ``"512mb"`` or ``"1.5g"`` (units of 1024).

    Raises:
        ValueError: not a size with a unit.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text).lower())
    if match is None or (not match.group(2) and not match.group(3)):
        raise ValueError(f"not a memory size with a unit: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


# -- the connection, shared by the services of one process ----------------------------------


@dataclass
class _Connection:
    users: int = 0
    owned: bool = False
    address: str | None = None


_CONNECTION = _Connection()
_CONNECTION_LOCK = threading.Lock()


class _QuietSigterm(logging.Filter):
    """Drops Ray's warning that it set no SIGTERM handler: tunelab connects from a worker
    thread on purpose, so that the manager's own SIGTERM handling stays in force."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


_CONNECT_SECONDS = 120.0
_PROBE_SECONDS = 5.0


def _check_reachable(address: str) -> None:
    """Refuse at once an address where nothing listens (Ray itself retries for minutes):
    a plain TCP connection to the host and port of ``host:port`` or ``ray://host:port``."""
    import socket

    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)/?", address.strip())
    if match is None:
        return  # "auto", or a form Ray resolves itself
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=_PROBE_SECONDS):
            return
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            Issue(
                "trainingService.address",
                f"no Ray cluster answers there ({reason})",
                address,
                "start the cluster (ray start --head) or correct the address, host:port of "
                "its head node",
            )
        ) from None


def _connect(address: str | None) -> None:
    import ray

    ray_logger = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _QuietSigterm) for f in ray_logger.filters):
        ray_logger.addFilter(_QuietSigterm())

    # The worker side is pickled by value: workers need no tunelab install.
    ray.cloudpickle.register_pickle_by_value(_ray_supervisor)
    with _CONNECTION_LOCK:
        if ray.is_initialized():
            if _CONNECTION.owned and _CONNECTION.users > 0 and _CONNECTION.address != address:
                where = _CONNECTION.address or "that tunelab started"
                raise RuntimeError(
                    f"this process is connected to the Ray cluster {where}; one process can "
                    "talk to one Ray cluster only"
                )
            if _CONNECTION.owned or _CONNECTION.users > 0:
                _CONNECTION.users += 1
                return
            # Connected by someone else (a notebook, a script using tunelab): use it as is.
            _CONNECTION.users, _CONNECTION.owned, _CONNECTION.address = 1, False, address
            return
        options: dict[str, Any] = {
            "namespace": NAMESPACE,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        if address is None:
            ray.init(address="local", include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
        _CONNECTION.users, _CONNECTION.owned, _CONNECTION.address = 1, True, address


def _disconnect() -> None:
    import ray

    with _CONNECTION_LOCK:
        _CONNECTION.users = max(0, _CONNECTION.users - 1)
        if _CONNECTION.users == 0 and _CONNECTION.owned:
            if ray.is_initialized():
                ray.shutdown()
            _CONNECTION.owned = False


def _upload_runtime_env(runtime_env: dict[str, Any]) -> dict[str, Any]:
    """Upload the working directory and py_modules of a runtime environment to the cluster
    (Ray skips packages it already has), returning the environment with their URIs.

    Ray takes local folders only in a job's environment, given when the process connects; an
    actor's environment must name uploaded packages. Uploading here lets one connection serve
    several experiments, and ships the code when the first trial starts.
    """
    # TODO: these upload helpers are Ray's own internals (stable from 2.9 to now); should
    # Ray make them public or move them, this is the one place to follow it.
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    env = dict(runtime_env)
    scratch = tempfile.mkdtemp(prefix="tunelab-ray-upload-")
    try:
        for upload in (upload_py_modules_if_needed, upload_working_dir_if_needed):
            options: dict[str, Any] = {"scratch_dir": scratch, "logger": logger}
            if "include_gitignore" in inspect.signature(upload).parameters:
                options["include_gitignore"] = True
            env = upload(env, **options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    env.pop("excludes", None)  # applied by the upload
    return env


# -- what the manager keeps per trial -------------------------------------------------------


@dataclass
class _Hold:
    """Resources a trial of this service holds, for place()'s view of the cluster."""

    need: dict[str, float]
    placed: float
    released: float | None = None
    node: str | None = None


class _RayHandle(TrialHandle):
    def __init__(self, spec: TrialSpec, placement: Placement, actor_name: str, launch: str):
        super().__init__(spec, placement)
        self.actor_name = actor_name
        self.launch_id = launch
        self.remote = {"metrics": 0, "stdout": 0, "stderr": 0}
        self.log_base = {"stdout": 0, "stderr": 0}
        self.metrics_offset = 0
        self.lock = asyncio.Lock()
        self.finished = False
        self.released = False
        self.info: dict[str, Any] | None = None

    def state(self) -> dict[str, Any]:
        return {
            "actor": self.actor_name,
            "launchId": self.launch_id,
            "logBase": dict(self.log_base),
        }


@dataclass
class _Snapshot:
    taken: float = float("-inf")
    free: dict[str, dict[str, float]] = field(default_factory=dict)
    total: dict[str, dict[str, float]] = field(default_factory=dict)


class RayTrainingService(TrainingService):
    """Runs trials as Ray tasks; see the module docstring.

    Args:
        address: the Ray cluster (``host:port`` of its head, ``ray://...``, ``auto``); None
            starts a local cluster inside this process for the service's lifetime.
        trial_cpus: CPUs a trial asks Ray for (trialCpuNumber).
        trial_memory: bytes of memory a trial asks Ray for (trialMemorySize), or None.
        gpu_number: GPUs a trial asks for when its spec does not say (trialGpuNumber).
        runtime_env: more of Ray's runtime environment (``pip``, ``env_vars``, ``excludes``,
            ``py_modules``...); the working directory is always the trial code directory.
        gpu_probe: choose GPU indices with tunelab's scheduler over these GPUs instead of
            Ray's accounting (tests; one GPU machine).
        max_trials_per_gpu, use_active_gpu: the GPU rules when a probe is given.
        kill_grace: seconds between SIGTERM and SIGKILL when cancelling.
        worker_root: where trial folders go on the workers (default: see the module doc).
        namespace: the Ray namespace of the experiment actors (tests keep theirs apart).
    """

    platform = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        trial_cpus: float = 1.0,
        trial_memory: int | None = None,
        gpu_number: int | None = None,
        runtime_env: dict[str, Any] | None = None,
        gpu_probe: GpuProbe | None = None,
        max_trials_per_gpu: int = 1,
        use_active_gpu: bool | None = None,
        kill_grace: float = 3.0,
        worker_root: str | None = None,
        namespace: str = NAMESPACE,
    ) -> None:
        if runtime_env and "working_dir" in runtime_env:
            raise ConfigError(
                Issue(
                    "trainingService.runtimeEnv.working_dir",
                    "the working directory of ray trials is the trial code directory",
                    runtime_env["working_dir"],
                    "set trialCodeDirectory instead",
                )
            )
        self._address = address
        self._trial_cpus = float(trial_cpus)
        self._trial_memory = trial_memory
        self._gpu_number = gpu_number
        self._runtime_env = dict(runtime_env or {})
        self._gpus = (
            None
            if gpu_probe is None
            else GpuScheduler(gpu_probe, None, max_trials_per_gpu, use_active_gpu)
        )
        self._kill_grace = kill_grace
        self._worker_root = worker_root
        self._namespace = namespace
        self._connected = False
        self._feasible_pending: int | None = None
        self._actors: dict[str, Any] = {}
        self._actor_lock = asyncio.Lock()
        self._holds: dict[str, _Hold] = {}
        self._snapshot = _Snapshot()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._connected:
            return
        loop = asyncio.get_running_loop()
        if self._address is not None:
            await loop.run_in_executor(None, _check_reachable, self._address)
        try:
            await asyncio.wait_for(
                loop.run_in_executor(None, _connect, self._address), _CONNECT_SECONDS
            )
        except asyncio.TimeoutError:
            # Ray keeps trying in its thread; the manager that gets this error ends.
            where = self._address or "the local cluster tunelab starts"
            raise ConfigError(
                Issue(
                    "trainingService.address",
                    f"the Ray cluster did not accept a connection within {_CONNECT_SECONDS:g} s",
                    where,
                    "check that the cluster runs (ray status) and that its address is right",
                )
            ) from None
        self._connected = True
        where = self._address or "a local Ray cluster started by tunelab"
        logger.info("Ray training service connected to %s", where)
        if self._feasible_pending is not None:
            self._check_cluster_gpus(self._feasible_pending)

    async def close(self) -> None:
        if not self._connected:
            return
        import ray

        for experiment_id, actor in list(self._actors.items()):
            try:
                if self._address is None:
                    # The local cluster ends with this service: so do its trials.
                    await actor.stop_all.remote(self._kill_grace)
                    ray.kill(actor)
                elif not await actor.pending.remote():
                    ray.kill(actor)
            except ray.exceptions.RayError:
                logger.debug("Experiment %s: its Ray actor is already gone", experiment_id)
        self._actors.clear()
        await asyncio.get_running_loop().run_in_executor(None, _disconnect)
        self._connected = False

    def check_feasible(self, gpu_number: int | None) -> None:
        if self._gpus is not None:
            self._gpus.check_feasible(gpu_number)
        elif gpu_number and self._connected:
            self._check_cluster_gpus(gpu_number)
        elif gpu_number:
            self._feasible_pending = gpu_number  # checked once start() has connected

    def _check_cluster_gpus(self, gpu_number: int) -> None:
        self._refresh(force=True)
        largest = max((node.get("GPU", 0.0) for node in self._snapshot.total.values()), default=0)
        if largest < gpu_number:
            raise ConfigError(
                Issue(
                    "trialGpuNumber",
                    "no node of the Ray cluster has that many GPUs",
                    gpu_number,
                    f"the largest node has {_amount(largest)}; ask for fewer GPUs per trial "
                    "or add a GPU node to the cluster",
                )
            )

    # -- placement ------------------------------------------------------------------------

    def _need(self, spec: TrialSpec) -> dict[str, float]:
        gpus = self._trial_gpus(spec)
        need = {"CPU": self._trial_cpus}
        if gpus and self._gpus is None:
            need["GPU"] = float(gpus)
        if self._trial_memory:
            need["memory"] = float(self._trial_memory)
        return need

    def _trial_gpus(self, spec: TrialSpec) -> int | None:
        return spec.gpu_number if spec.gpu_number is not None else self._gpu_number

    def place(self, spec: TrialSpec) -> Placement | str:
        gpus = self._trial_gpus(spec)
        indices: list[int] | None = [] if gpus == 0 else None
        if self._gpus is not None and gpus:
            chosen = self._gpus.acquire(gpus)
            if isinstance(chosen, str):
                return chosen
            indices = chosen

        need = self._need(spec)
        reason = self._lacking(need)
        if reason is not None:
            if self._gpus is not None and indices:
                self._gpus.release(indices)
            return reason
        self._holds[spec.trial_id] = _Hold(need, time.monotonic())
        return Placement(gpu_indices=indices, host="ray")

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._snapshot.taken < _SNAPSHOT_SECONDS:
            return
        import ray

        try:
            from ray._private import state as ray_state

            total = ray_state.total_resources_per_node()
            free = ray_state.available_resources_per_node()
        except (ImportError, AttributeError):
            # TODO: per-node figures come from a developer API of Ray; without it, the whole
            # cluster is seen as one node, and a trial may wait in Ray's queue instead of ours.
            total = {"cluster": ray.cluster_resources()}
            free = {"cluster": ray.available_resources()}
        self._snapshot = _Snapshot(
            now,
            {node: {k: float(v) for k, v in free.get(node, {}).items()} for node in total},
            {
                node: {k: float(v) for k, v in resources.items()}
                for node, resources in total.items()
            },
        )
        # Released holds matter while a snapshot may still count them.
        horizon = now - _RESOURCE_LAG
        for trial_id, hold in list(self._holds.items()):
            if hold.released is not None and hold.released < horizon - _RESOURCE_LAG:
                del self._holds[trial_id]

    def _free_now(self) -> dict[str, dict[str, float]]:
        """Free resources per node: the cluster's last answer, corrected for what this
        service's trials took or gave back since (the answer lags up to _RESOURCE_LAG)."""
        self._refresh()
        free = {node: dict(resources) for node, resources in self._snapshot.free.items()}
        # What changed after `seen` may be missing from the answer. A trial placed since is
        # counted as holding its share (at worst one waits a tick too long); one that ended
        # since is counted as having given it back (at worst Ray queues the next one briefly).
        seen = self._snapshot.taken - _RESOURCE_LAG
        for hold in self._holds.values():
            if hold.released is None and hold.placed > seen:
                node = hold.node if hold.node in free else _first_fit(free, hold.need)
                if node is not None:
                    for key, amount in hold.need.items():
                        free[node][key] = free[node].get(key, 0.0) - amount
            elif (
                hold.released is not None
                and hold.released > seen
                and hold.placed <= self._snapshot.taken
                and hold.node in free
            ):
                for key, amount in hold.need.items():
                    free[hold.node][key] = free[hold.node].get(key, 0.0) + amount
        return free

    def _lacking(self, need: dict[str, float]) -> str | None:
        free = self._free_now()
        total = self._snapshot.total
        if not total:
            return "waiting: the Ray cluster has no live node"
        if _first_fit(free, need) is not None:
            return None
        for key, amount in need.items():
            if not any(node.get(key, 0.0) >= amount for node in total.values()):
                largest = max(node.get(key, 0.0) for node in total.values())
                return (
                    f"waiting: no Ray node has {_describe(key, amount)} "
                    f"(the largest has {_describe(key, largest)})"
                )
        for key, amount in need.items():
            if not any(node.get(key, 0.0) >= amount - 1e-9 for node in free.values()):
                free_sum = sum(max(0.0, node.get(key, 0.0)) for node in free.values())
                total_sum = sum(node.get(key, 0.0) for node in total.values())
                return (
                    f"waiting: no Ray node has {_describe(key, amount, free=True)} "
                    f"(cluster: {_amount(free_sum, key)} of {_amount(total_sum, key)} free)"
                )
        wanted = " and ".join(_describe(key, amount, free=True) for key, amount in need.items())
        return f"waiting: no Ray node has {wanted} at once"

    def _release(self, handle: _RayHandle) -> None:
        if handle.released:
            return
        handle.released = True
        hold = self._holds.get(handle.spec.trial_id)
        if hold is not None and hold.released is None:
            hold.released = time.monotonic()
        if self._gpus is not None and handle.placement.gpu_indices:
            self._gpus.release(handle.placement.gpu_indices)

    # -- the experiment actor -------------------------------------------------------------

    @staticmethod
    def actor_name(experiment_id: str) -> str:
        return f"tunelab-{experiment_id}"

    async def _actor(self, spec: TrialSpec) -> Any:
        async with self._actor_lock:
            actor = self._actors.get(spec.experiment_id)
            if actor is None:
                actor = await self._existing_actor(spec.experiment_id)
            if actor is None:
                loop = asyncio.get_running_loop()
                actor = await loop.run_in_executor(None, self._create_actor, spec)
                self._actors[spec.experiment_id] = actor
            return actor

    def _create_actor(self, spec: TrialSpec) -> Any:
        import ray

        # The code goes once per experiment, with the actor; the trial tasks it submits
        # inherit its runtime environment.
        runtime_env = _upload_runtime_env(self._runtime_env_for(spec.code_dir))
        logger.info(
            "Experiment %s: trial code %s shipped to the Ray cluster",
            spec.experiment_id,
            spec.code_dir,
        )
        remote_class = ray.remote(_ray_supervisor.ExperimentActor)
        return remote_class.options(
            name=self.actor_name(spec.experiment_id),
            namespace=self._namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_restarts=0,
            max_task_retries=0,
            runtime_env=runtime_env,
        ).remote(spec.experiment_id)

    def _runtime_env_for(self, code_dir: Path) -> dict[str, Any]:
        env = dict(self._runtime_env)
        env["working_dir"] = os.fspath(code_dir)
        env["excludes"] = [*ignore_patterns(code_dir), *env.get("excludes", [])]
        env["py_modules"] = [self._stage_trial_side(), *env.get("py_modules", [])]
        return env

    @staticmethod
    def _stage_trial_side() -> str:
        """A copy of the trial side (``tunelab/__init__.py``, ``tunelab/trial``,
        ``tunelab/compat``) to ship as a Python module; returns its ``tunelab`` folder.

        The copy's folder is named by its content, so every service of this tunelab version
        ships the same package, which Ray then uploads once."""
        package = Path(__file__).resolve().parent.parent
        sources = [
            package / "__init__.py",
            *sorted((package / "trial").rglob("*.py")),
            *sorted((package / "compat").rglob("*.py")),
        ]
        digest = hashlib.sha256()
        for source in sources:
            digest.update(os.fspath(source.relative_to(package)).encode() + b"\0")
            digest.update(source.read_bytes() + b"\0")
        root = Path(tempfile.gettempdir()) / f"tunelab-ray-ship-{os.getuid()}"
        target = root / digest.hexdigest()[:16] / "tunelab"
        if target.exists():
            return os.fspath(target)
        building = Path(tempfile.mkdtemp(prefix="building-", dir=_mkdir(root)))
        for source in sources:
            destination = building / "tunelab" / source.relative_to(package)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(building / "tunelab", target)
        except OSError:
            if not target.exists():
                raise
        shutil.rmtree(building, ignore_errors=True)
        return os.fspath(target)

    async def _existing_actor(self, experiment_id: str) -> Any | None:
        actor = self._actors.get(experiment_id)
        if actor is not None:
            return actor
        import ray

        def lookup() -> Any | None:
            try:
                return ray.get_actor(self.actor_name(experiment_id), namespace=self._namespace)
            except ValueError:
                return None

        actor = await asyncio.get_running_loop().run_in_executor(None, lookup)
        if actor is not None:
            self._actors[experiment_id] = actor
        return actor

    # -- trials ---------------------------------------------------------------------------

    async def launch(self, spec: TrialSpec, placement: Placement) -> TrialHandle:

        handle = _RayHandle(spec, placement, self.actor_name(spec.experiment_id), uuid.uuid4().hex)
        spec.trial_dir.mkdir(parents=True, exist_ok=True)
        write_parameters(
            spec.trial_dir,
            spec.parameters,
            parameter_id=spec.sequence,
            parameter_source=spec.parameter_source,  # type: ignore[arg-type]
        )
        # Earlier attempts' metric lines go with the trial, so that its seq goes on counting.
        seed = _complete_lines(spec.trial_dir / METRICS_FILE)
        handle.remote["metrics"] = len(seed)
        for stream in ("stdout", "stderr"):
            path = spec.trial_dir / _LOCAL_FILES[stream]
            path.touch()
            handle.log_base[stream] = _size(path)

        gpus = self._trial_gpus(spec)
        indices = placement.gpu_indices
        args = {
            "experimentId": spec.experiment_id,
            "trialId": spec.trial_id,
            "launchId": handle.launch_id,
            "sequence": spec.sequence,
            "command": spec.command,
            "parameters": spec.parameters,
            "parameterSource": spec.parameter_source,
            "env": dict(spec.env),
            "cuda": None if indices is None else ",".join(map(str, indices)),
            "workerRoot": self._worker_root,
            "grace": self._kill_grace,
            "actorName": handle.actor_name,
            "namespace": self._namespace,
            "metricsSeed": base64.b64encode(seed).decode("ascii"),
        }
        options = {
            "num_cpus": self._trial_cpus,
            "num_gpus": float(gpus) if gpus and self._gpus is None else 0.0,
            "memory": self._trial_memory,
        }
        # Only JSON goes to Ray (DESIGN.md rule 9): fail here, not in Ray's pickler.
        json.dumps([args, options])
        try:
            actor = await self._actor(spec)
            await actor.launch.remote(spec.trial_id, handle.launch_id, options, args)
        except Exception as error:  # Ray's errors, a runtime environment it refused, ...
            self._release(handle)
            raise OSError(f"Ray did not take the trial: {_first_line(error)}") from error
        return handle

    async def reattach(
        self, spec: TrialSpec, placement: Placement, state: dict[str, Any]
    ) -> TrialHandle | None:
        import ray

        launch_id = state.get("launchId")
        if not isinstance(launch_id, str):
            return None
        actor = await self._existing_actor(spec.experiment_id)
        if actor is None:
            return None
        try:
            status = await actor.status.remote(spec.trial_id)
        except ray.exceptions.RayError:
            return None
        if status is None or status["launchId"] != launch_id:
            return None

        handle = _RayHandle(spec, placement, self.actor_name(spec.experiment_id), launch_id)
        handle.info = status.get("info")
        spec.trial_dir.mkdir(parents=True, exist_ok=True)
        # Go on from what the earlier manager wrote; a line it cut short is fetched again.
        metrics = spec.trial_dir / METRICS_FILE
        complete = _complete_lines(metrics)
        if _size(metrics) != len(complete):
            metrics.write_bytes(complete)
        handle.remote["metrics"] = len(complete)
        base = state.get("logBase") or {}
        for stream in ("stdout", "stderr"):
            handle.log_base[stream] = int(base.get(stream, 0))
            local = _size(spec.trial_dir / _LOCAL_FILES[stream])
            handle.remote[stream] = max(0, local - handle.log_base[stream])

        if not status["ended"]:
            node = (handle.info or {}).get("node")
            self._holds[spec.trial_id] = _Hold(self._need(spec), float("-inf"), node=node)
        if self._gpus is not None and placement.gpu_indices:
            self._gpus.hold(placement.gpu_indices)
        return handle

    async def _sync(self, handle: _RayHandle) -> dict[str, Any] | None:
        """Fetch what the trial wrote since the last call into its folder here."""
        import ray

        actor = self._actors.get(handle.spec.experiment_id)
        if actor is None:
            return None
        async with handle.lock:
            try:
                answer: dict[str, Any] | None = await actor.poll.remote(
                    handle.spec.trial_id, handle.launch_id, dict(handle.remote), _POLL_BYTES
                )
            except ray.exceptions.RayError:
                return None
            if answer is None:
                return None
            for stream, (start, text) in answer["chunks"].items():
                data = base64.b64decode(text)
                if start > handle.remote[stream]:
                    logger.warning(
                        "Trial %s: %d bytes of its %s were lost on the way",
                        handle.spec.trial_id,
                        start - handle.remote[stream],
                        stream,
                    )
                elif start < handle.remote[stream]:
                    data = data[handle.remote[stream] - start :]
                    start = handle.remote[stream]
                if data:
                    with open(handle.spec.trial_dir / _LOCAL_FILES[stream], "ab") as file:
                        file.write(data)
                handle.remote[stream] = start + len(data)
            if answer.get("info") and handle.info is None:
                handle.info = answer["info"]
                hold = self._holds.get(handle.spec.trial_id)
                if hold is not None:
                    hold.node = handle.info.get("node") if handle.info else None
            return answer

    async def read_metrics(self, handle: TrialHandle) -> list[dict[str, Any]]:
        assert isinstance(handle, _RayHandle)
        if not handle.finished:
            await self._sync(handle)
        path = handle.spec.trial_dir / METRICS_FILE
        records, handle.metrics_offset = read_metrics(path, handle.metrics_offset)
        return records

    async def wait(self, handle: TrialHandle) -> TrialExit:
        assert isinstance(handle, _RayHandle)
        import ray

        actor = self._actors.get(handle.spec.experiment_id)
        exit_info: dict[str, Any] | None = None
        if actor is not None:
            try:
                exit_info = await actor.wait.remote(handle.spec.trial_id, handle.launch_id)
            except ray.exceptions.RayError as error:
                exit_info = {"message": f"the experiment's Ray actor died: {_first_line(error)}"}
        if exit_info is None:
            exit_info = {"message": "Ray has no trace of the trial any more"}
        while True:
            answer = await self._sync(handle)
            if answer is None or not answer["more"]:
                break
        handle.finished = True
        if actor is not None:
            with contextlib.suppress(ray.exceptions.RayError):
                await actor.forget.remote(handle.spec.trial_id, handle.launch_id)
        self._release(handle)
        return TrialExit(
            exit_info.get("exitCode"), exit_info.get("signal"), exit_info.get("message")
        )

    async def cancel(self, handle: TrialHandle) -> None:
        assert isinstance(handle, _RayHandle)
        import ray

        actor = self._actors.get(handle.spec.experiment_id)
        if actor is None or handle.finished:
            return
        try:
            await actor.cancel.remote(handle.spec.trial_id, handle.launch_id, self._kill_grace)
        except ray.exceptions.RayError:
            logger.warning("Trial %s: its Ray actor is gone", handle.spec.trial_id)

    async def cleanup(self, experiment_id: str | None) -> None:
        """Cancel what is left of the experiment in the cluster, kill its actor and remove its
        trial folders from every live node; with None, do so for every tunelab experiment
        (the experiment actors in this service's namespace, the whole trial root)."""
        import ray

        started_here = not self._connected
        if started_here:
            await self.start()
        try:
            if experiment_id is None:
                prefix = self.actor_name("")
                listed = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: ray.util.list_named_actors(all_namespaces=True)
                )
                experiments = [
                    entry["name"][len(prefix) :]
                    for entry in listed
                    if entry.get("namespace") == self._namespace
                    and entry["name"].startswith(prefix)
                ]
            else:
                experiments = [experiment_id]
            await asyncio.gather(*(self._end_experiment(e) for e in experiments))
            await self._remove_folders(experiment_id)
        finally:
            if started_here:
                await self.close()

    async def _end_experiment(self, experiment_id: str) -> None:
        import ray

        actor = await self._existing_actor(experiment_id)
        if actor is None:
            return
        with contextlib.suppress(ray.exceptions.RayError):
            await actor.stop_all.remote(self._kill_grace)
        ray.kill(actor)
        self._actors.pop(experiment_id, None)
        logger.info(
            "Experiment %s: its trials and actor are gone from the Ray cluster", experiment_id
        )

    async def _remove_folders(self, experiment_id: str | None) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remove = ray.remote(_ray_supervisor.remove_experiment_folders)
        refs = [
            remove.options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(self._worker_root, experiment_id)
            for node in ray.nodes()
            if node.get("Alive")
        ]
        for ref in refs:
            try:
                await ref
            except ray.exceptions.RayError as error:
                logger.warning(
                    "Experiment %s: a trial folder stays on a Ray node: %s",
                    experiment_id or "(all)",
                    _first_line(error),
                )


# -- helpers ------------------------------------------------------------------------------


def ignore_patterns(code_dir: Path) -> list[str]:
    """The exclusion patterns (.gitignore syntax) of a code directory's ignore files."""
    patterns: list[str] = []
    for name in IGNORE_FILES:
        try:
            text = (code_dir / name).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            continue
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                patterns.append(line.rstrip())
    return patterns


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _first_fit(free: dict[str, dict[str, float]], need: dict[str, float]) -> str | None:
    for node in sorted(free):
        if all(free[node].get(key, 0.0) >= amount - 1e-9 for key, amount in need.items()):
            return node
    return None


def _amount(value: float, key: str = "") -> str:
    if key == "memory":
        return f"{value / (1 << 30):.1f} GiB"
    return f"{value:g}"


def _describe(key: str, amount: float, free: bool = False) -> str:
    """``2 CPUs``, ``1 free GPU``, ``2.0 GiB of free memory``."""
    if key == "memory":
        return f"{_amount(amount, key)} of {'free ' if free else ''}memory"
    return f"{amount:g} {'free ' if free else ''}{key}" + ("s" if amount > 1 else "")


def _complete_lines(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return data[: data.rfind(b"\n") + 1]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _build(section: dict[str, Any], config: dict[str, Any]) -> TrainingService:
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            Issue(
                "trainingService.platform",
                "the ray training service needs Ray, which is not installed",
                "ray",
                "pip install 'tunelab[ray]'",
            )
        )
    memory = section.get("trialMemorySize")
    try:
        trial_memory = None if memory is None else parse_memory_size(memory)
    except ValueError:
        raise ConfigError(
            Issue(
                "trainingService.trialMemorySize",
                "must be a size with a unit",
                memory,
                'write it like "512mb" or "2gb"',
            )
        ) from None
    fake = fake_gpus()
    gpu_number = section.get("trialGpuNumber", config.get("trialGpuNumber"))
    return RayTrainingService(
        address=section.get("address"),
        trial_cpus=float(section.get("trialCpuNumber") or 1),
        trial_memory=trial_memory,
        gpu_number=gpu_number,
        runtime_env=section.get("runtimeEnv"),
        gpu_probe=(lambda: fake) if fake is not None else None,
    )


register_platform("ray", _build)
