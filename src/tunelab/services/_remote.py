"""The remote training service: trials on SSH hosts (NNI's ``platform: remote``).

What happens on each machine of ``machineList`` (all machines in parallel):

* ``start`` scans the trial code directory on this machine first and refuses one that is too
  big to upload (see :mod:`tunelab.services._remote_upload`), then connects, logs in and finds
  Python 3 (``pythonPath`` first on PATH when given). Once the experiment id is known (given
  to the constructor, else taken from the first trial's spec: the contract's ``start`` takes
  no id), it creates ``~/tunelab-experiments/<experiment id>/`` in the login user's home
  (``remote_root`` changes the first part; a relative root is under each user's own home, so
  two machines that log in as different users never share a folder), uploads the code to
  ``code/`` there with the trial side (``lib/``) and the trial keeper (``tools/``) as one tar
  stream, once per experiment, and starts the keeper; until then ``place`` answers
  "waiting: uploading the code to host ...".
* A trial runs in ``<experiment>/code`` under the keeper's supervisor, with its folder
  ``<experiment>/trials/<trial id>/`` (``TUNELAB_TRIAL_DIR``, parameters.json written there
  atomically before the start, logs, metrics, pid and exit-code files). It leads its own
  session, so it outlives the SSH connection and the manager.
* Metrics come back over the SSH connection: the keeper watches each trial's metrics.jsonl on
  the host and pushes the bytes it appends; they go into ``metrics.jsonl`` in the trial's local
  folder, which ``read_metrics`` parses with :func:`tunelab.trial.read_metrics`. No port on
  the manager's machine needs to be reachable from the host. When a trial ends, its
  ``trial.stdout`` and ``trial.stderr`` come with the keeper's exit event (bigger ones over
  SFTP), so a trial costs one request and one event.
* A file added to or changed in the code directory after the upload is sent before the next
  trial starts (only what changed), so a trial runs the code as it is when it is launched, as
  on the local service; unchanged code is never sent twice.

A lost connection is retried with a back-off; meanwhile ``place`` answers why trials wait
("waiting: host 127.0.0.1:2223 unreachable (Connection refused), retrying in 10 s"), each loss
and each recovery is logged once, and trials that were running on that host keep waiting for
it for ``lost_timeout`` seconds before ``wait`` reports them ended with that reason. Login
problems that another try cannot fix (a wrong password, a changed host key, no Python) fail
``start``. Logins, secrets from the environment and the host-key policy are described in
:mod:`tunelab.services._remote_ssh`.

GPUs: each machine has its own scheduler (``gpuIndices``, ``maxTrialNumberPerGpu``,
``useActiveGpu``), fed by the keeper, which asks ``nvidia-smi`` every few seconds when trials
need GPUs; tests inject a probe per machine. Without GPU scheduling, trials go to the machine
running the fewest of them; ``trialConcurrency`` is the only limit. ``reuseMode`` is accepted
and changes nothing: every trial already runs under a keeper that stays for the experiment.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shlex
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import asyncssh

from tunelab.errors import ConfigError, Issue
from tunelab.services._base import Placement, TrainingService, TrialExit, TrialHandle, TrialSpec
from tunelab.services._factory import fake_gpus, register_platform
from tunelab.services._gpu import GpuInfo, GpuProbe, GpuScheduler
from tunelab.services._remote_ssh import (
    HostError,
    HostKeyPolicy,
    KeeperError,
    KeeperLink,
    RemoteMachine,
    connect,
    describe,
)
from tunelab.services._remote_upload import (
    CodeManifest,
    Entry,
    scan_code_dir,
    support_files,
    write_tar,
)
from tunelab.trial import METRICS_FILE, ParameterRecord, read_metrics, trial_env

__all__ = ["RemoteMachine", "RemoteTrainingService"]

logger = logging.getLogger("tunelab.services.remote")

LOG_FILES = ("trial.stdout", "trial.stderr")
MIN_PYTHON = (3, 8)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_CHUNK = 1 << 20
_STABLE_SECONDS = 10.0

# Run by the host's Python: make the experiment's folders, say where things are.
_BOOTSTRAP = """
import json, os, sys
a = json.loads(sys.argv[1])
home = os.path.expanduser("~")
exp = marker = None
if a["exp"]:
    exp = os.path.join(home, a["root"], a["exp"])
    for sub in ("trials", "code", "lib", "tools"):
        os.makedirs(os.path.join(exp, sub), exist_ok=True)
    try:
        with open(os.path.join(exp, ".upload")) as f:
            marker = f.read().strip()
    except OSError:
        pass
print(json.dumps({"python": sys.executable, "version": list(sys.version_info[:3]),
                  "home": home, "exp": exp, "marker": marker}))
"""


def _sh(script: str) -> str:
    """A command line that runs ``script`` with /bin/sh, whatever the user's login shell."""
    return "/bin/sh -c " + shlex.quote(script)


def _path_prefix(machine: RemoteMachine) -> str:
    if not machine.python_path:
        return ""
    return f'PATH={shlex.quote(machine.python_path)}:"$PATH"; export PATH; '


class _RemoteHandle(TrialHandle):
    def __init__(self, spec: TrialSpec, placement: Placement, host: _Host) -> None:
        super().__init__(spec, placement)
        self.host = host
        self.remote_dir = ""
        self.pid: int | None = None
        self.start_time: str | None = None
        self.received = 0  # bytes of the remote metrics file mirrored locally
        self.metrics_offset = 0
        self.done = asyncio.Event()
        self.exit: TrialExit | None = None
        self.released = False
        self.cancel_pending = False

    @property
    def mirror(self) -> Path:
        return self.spec.trial_dir / METRICS_FILE

    def state(self) -> dict[str, Any]:
        machine = self.host.machine
        return {
            "host": self.host.name,
            "address": machine.host,
            "port": machine.port,
            "user": machine.user,
            "pid": self.pid,
            "startTime": self.start_time,
            "trialDir": self.remote_dir,
        }


class _Host:
    """One machine and what the service knows of it right now."""

    def __init__(self, machine: RemoteMachine, name: str, probe: GpuProbe | None) -> None:
        self.machine = machine
        self.name = name
        self.status: Literal["new", "connecting", "up", "down"] = "new"
        self.error: str | None = None
        self.refused = False  # the host answered, but refused (login, host key, no Python)
        self.retry_at = 0.0
        self.down_since: float | None = None
        self.ever_up = False
        self.conn: asyncssh.SSHClientConnection | None = None
        self.pending_conn: asyncssh.SSHClientConnection | None = None  # from the login check
        self.stage = "connecting to"
        self.link: KeeperLink | None = None
        self.sftp: asyncssh.SFTPClient | None = None
        self.python = ""
        self.exp_dir = ""
        self.uploaded: dict[str, Entry] | None = None
        self.sync_lock = asyncio.Lock()
        self.handles: dict[str, _RemoteHandle] = {}
        self.abandoned: list[_RemoteHandle] = []
        self.running = 0
        self.last_used = 0.0
        self.injected = probe
        self.gpu_cache: list[GpuInfo] | None = None
        self.gpus = GpuScheduler(
            self.probe, machine.gpu_indices, machine.max_trials_per_gpu, machine.use_active_gpu
        )
        self.task: asyncio.Task[None] | None = None
        self.first_attempt: asyncio.Future[BaseException | None] | None = None
        self.wake = asyncio.Event()

    def probe(self) -> list[GpuInfo]:
        if self.injected is not None:
            return list(self.injected())
        return list(self.gpu_cache or [])

    def gpus_known(self) -> bool:
        return self.injected is not None or self.gpu_cache is not None

    def usable_gpus(self) -> list[GpuInfo]:
        allowed = self.machine.gpu_indices
        return [gpu for gpu in self.probe() if allowed is None or gpu.index in allowed]

    def reason(self) -> str:
        """Why this host cannot take a trial now (it is not up)."""
        if self.status in ("new", "connecting") and not self.ever_up and self.error is None:
            return f"{self.stage} host {self.name}"
        wait = self.retry_at - time.monotonic()
        when = f"retrying in {math.ceil(wait)} s" if wait > 0.5 else "retrying now"
        if self.refused:
            return f"host {self.name}: {self.error}; {when}"
        return f"host {self.name} unreachable ({self.error}), {when}"


class RemoteTrainingService(TrainingService):
    """Runs trials on SSH hosts; see the module docstring.

    Args:
        machines: the hosts (``machineList``).
        code_dir: the trial code directory (``trialCodeDirectory``); when None, the first
            trial's ``spec.code_dir``.
        experiment_id: names the folder on each host; ``start(experiment_id)`` or the first
            trial's spec gives it otherwise.
        remote_root: the folder that holds the experiments on each host, relative to the login
            user's home unless absolute.
        gpu_number: ``trialGpuNumber``; when above 0 the hosts' GPUs are polled.
        gpu_probes: GPUs by machine name (``host:port``), replacing nvidia-smi (tests).
        known_hosts: where host keys trusted on first use are remembered.
        user_known_hosts: the OpenSSH known-hosts file that is honoured (None: none).
        kill_grace: seconds between the polite signal and the kill when cancelling.
        connect_timeout: seconds to connect and log in.
        keepalive: seconds between SSH keep-alives (three missed ones end the connection).
        retry_delays: seconds between reconnection attempts, the last one repeated.
        lost_timeout: how long trials on a lost host wait for it before they are given up.
        poll: how often the keeper looks at its trials, in seconds.
        gpu_poll: how often the keeper asks nvidia-smi, in seconds.
    """

    platform = "remote"

    def __init__(
        self,
        machines: Sequence[RemoteMachine],
        *,
        code_dir: Path | None = None,
        experiment_id: str | None = None,
        remote_root: str = "tunelab-experiments",
        gpu_number: int | None = None,
        gpu_probes: Mapping[str, GpuProbe] | None = None,
        known_hosts: Path | None = None,
        user_known_hosts: Path | None = Path("~/.ssh/known_hosts"),
        kill_grace: float = 3.0,
        connect_timeout: float = 15.0,
        keepalive: float = 15.0,
        retry_delays: Sequence[float] = (1.0, 2.0, 5.0, 10.0),
        lost_timeout: float = 600.0,
        poll: float = 0.1,
        gpu_poll: float = 5.0,
    ) -> None:
        if not machines:
            raise ConfigError(
                Issue("trainingService.machineList", "needs at least one machine", [])
            )
        addresses = [m.address for m in machines]
        probes = dict(gpu_probes or {})
        self._hosts: list[_Host] = []
        for machine in machines:
            name = machine.address
            if addresses.count(name) > 1:
                name = f"{machine.user}@{name}"
            self._hosts.append(_Host(machine, name, probes.get(name)))
        self._code_dir = code_dir
        self._experiment_id: str | None = None
        self._root = remote_root[2:] if remote_root.startswith("~/") else remote_root
        self._wants_gpus = bool(gpu_number)
        self._gpu_check: int | None = None
        home = Path(os.environ.get("TUNELAB_HOME") or "~/tunelab-experiments").expanduser()
        self._policy = HostKeyPolicy(
            known_hosts or home / "known_hosts",
            user_known_hosts.expanduser() if user_known_hosts is not None else None,
        )
        self._kill_grace = kill_grace
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._retry_delays = list(retry_delays) or [10.0]
        self._lost_timeout = lost_timeout
        self._poll = poll
        self._gpu_poll = gpu_poll
        self._manifest: CodeManifest | None = None
        self._keys: dict[str, asyncssh.SSHKey] = {}  # decrypted once, held in memory only
        self._support = support_files()
        self._bundles: dict[str, Path] = {}
        self._bundle_lock = asyncio.Lock()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        if experiment_id is not None:
            self._experiment_id = self._checked_id(experiment_id)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the code directory, log in to every machine, and prepare the experiment.

        Without an experiment id yet (the engine's specs bring it), only the logins are
        checked here; the folders, the upload and the keepers follow the first trial's spec.

        Raises:
            ConfigError: the code directory is too big to upload, or a machine refused the
                login or lacks Python 3 (each one named). Machines that cannot be reached now
                are not waited for: they are retried, and ``place`` says so.
        """
        _quiet_asyncssh()
        if self._code_dir is not None:
            self._manifest = await self._scan(self._code_dir)
        if self._experiment_id is not None:
            await self._connect_all()
        else:
            await self._check_logins()

    async def _check_logins(self) -> None:
        async def check(host: _Host) -> None:
            conn = await connect(
                host.machine, self._policy, self._connect_timeout, self._keepalive, self._keys
            )
            try:
                await self._bootstrap(host, conn)
            except BaseException:
                conn.close()
                raise
            host.pending_conn = conn

        results = await asyncio.gather(*(check(h) for h in self._hosts), return_exceptions=True)
        issues = []
        for index, (host, result) in enumerate(zip(self._hosts, results, strict=True)):
            if isinstance(result, HostError):
                issues.append(Issue(f"trainingService.machineList[{index}]", str(result)))
            elif isinstance(result, BaseException):
                self._host_down(host, describe(result), 0.0)  # logged once, retried when bound
        if issues:
            await self.close()
            raise ConfigError(issues)

    async def _connect_all(self) -> None:
        self._begin()
        results = [await host.first_attempt for host in self._hosts if host.first_attempt]
        issues = [
            Issue(f"trainingService.machineList[{index}]", str(error))
            for index, error in enumerate(results)
            if isinstance(error, HostError)
        ]
        if issues:
            await self.close()
            raise ConfigError(issues)
        if self._gpu_check:
            self.check_feasible(self._gpu_check)

    def _begin(self) -> None:
        """Start connecting to the machines (once)."""
        loop = asyncio.get_running_loop()
        for host in self._hosts:
            if host.task is None:
                host.first_attempt = loop.create_future()
                host.status = "connecting"
                host.task = loop.create_task(self._run_host(host))

    async def close(self) -> None:
        self._closing = True
        for host in self._hosts:
            host.wake.set()
            if host.task is not None:
                host.task.cancel()
        await asyncio.gather(
            *(h.task for h in self._hosts if h.task is not None), return_exceptions=True
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for host in self._hosts:
            await self._disconnect(host)
            if host.pending_conn is not None:
                host.pending_conn.close()
                host.pending_conn = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._bundles.clear()

    @staticmethod
    def _checked_id(experiment_id: str) -> str:
        if not _SAFE_ID.match(experiment_id):
            raise ValueError(
                f"experiment id {experiment_id!r} cannot name a folder on the hosts: use "
                "letters, digits, '.', '_' and '-' only"
            )
        return experiment_id

    def _bind(self, spec: TrialSpec) -> None:
        """Take the experiment id and code directory from the first trial when ``start`` was
        not given them, and start connecting."""
        if self._experiment_id is None:
            self._experiment_id = self._checked_id(spec.experiment_id)
        if self._code_dir is None:
            self._code_dir = spec.code_dir
        self._begin()

    # -- connections -----------------------------------------------------------------------

    async def _run_host(self, host: _Host) -> None:
        """Keep ``host`` connected: connect, watch the connection, reconnect with a back-off."""
        attempt = 0
        while not self._closing:
            error: BaseException | None = None
            try:
                await self._connect_host(host)
            except asyncio.CancelledError:
                raise
            except HostError as failure:
                error, reason = failure, str(failure)
            except (OSError, asyncssh.Error, asyncio.TimeoutError, KeeperError) as failure:
                error, reason = failure, describe(failure)
            host.refused = isinstance(error, HostError)

            host.stage = "connecting to"
            if host.first_attempt is not None and not host.first_attempt.done():
                host.first_attempt.set_result(error)
            if error is None:
                up_since = time.monotonic()
                self._host_up(host)
                assert host.link is not None
                await host.link.closed.wait()
                if self._closing:
                    return
                # A connection that ends at once (a keeper that cannot run) is not retried in
                # a tight loop: only one that lasted a while is retried straight away.
                delay = 0.0
                if time.monotonic() - up_since >= _STABLE_SECONDS:
                    attempt = 0
                else:
                    delay = self._retry_delays[min(attempt, len(self._retry_delays) - 1)]
                    attempt += 1
                host.refused = False
                self._host_down(host, "connection lost", delay)
                await self._disconnect(host)
                if delay:
                    await self._back_off(host, delay)
                continue
            delay = self._retry_delays[min(attempt, len(self._retry_delays) - 1)]
            attempt += 1
            self._host_down(host, reason, delay)
            await self._back_off(host, delay)
            host.status = "connecting"

    async def _connect_host(self, host: _Host) -> None:
        machine = host.machine
        conn, host.pending_conn = host.pending_conn, None
        if conn is None or conn.is_closed():
            conn = await connect(
                machine, self._policy, self._connect_timeout, self._keepalive, self._keys
            )
        try:
            host.stage = "preparing"
            info = await self._bootstrap(host, conn)
            host.conn = conn
            host.python, host.exp_dir = info["python"], info["exp"]
            host.stage = "uploading the code to"
            await self._upload(host, conn, info.get("marker"))
            host.link = await self._start_keeper(host, conn)
            if self._wants_gpus and host.injected is None:
                await self._poll_gpus(host)
            await self._rewatch(host)
        except BaseException:
            await self._disconnect(host)
            conn.close()
            raise

    async def _bootstrap(self, host: _Host, conn: asyncssh.SSHClientConnection) -> Any:
        machine = host.machine
        arguments = json.dumps({"root": self._root, "exp": self._experiment_id})
        script = (
            _path_prefix(machine)
            + 'for py in python3 python; do if command -v "$py" >/dev/null 2>&1; then '
            + f'exec "$py" -c {shlex.quote(_BOOTSTRAP)} {shlex.quote(arguments)}; fi; done; '
            + "exit 127"
        )
        result = await conn.run(_sh(script), check=False, timeout=self._connect_timeout * 2)
        if result.exit_status == 127:
            raise HostError(
                f"host {host.name}: no python3 (or python) on PATH; install Python 3 there or "
                "set pythonPath to the folder that holds it"
            )
        if result.exit_status != 0:
            raise HostError(
                f"host {host.name}: preparing the experiment folder failed: "
                f"{str(result.stderr).strip()[-500:]}"
            )
        info = json.loads(str(result.stdout).strip().splitlines()[-1])
        if tuple(info["version"]) < MIN_PYTHON:
            version = ".".join(map(str, info["version"]))
            raise HostError(
                f"host {host.name}: {info['python']} is Python {version}; the trial side needs "
                "Python 3.8 or newer: set pythonPath to the folder of a newer python3"
            )
        return info

    async def _start_keeper(self, host: _Host, conn: asyncssh.SSHClientConnection) -> KeeperLink:
        lib = f"{host.exp_dir}/lib"
        options = json.dumps({"lib": [f"{lib}/tunelab/compat", lib], "poll": self._poll})
        script = (
            f"cd {shlex.quote(host.exp_dir)} && {_path_prefix(host.machine)}exec "
            f"{shlex.quote(host.python)} -u tools/tunelab_keeper.py {shlex.quote(options)}"
        )
        process = await conn.create_process(_sh(script), encoding="utf-8")
        link = KeeperLink(process, lambda message: self._on_event(host, message), host.name)
        await asyncio.wait_for(asyncio.shield(link.ready), self._connect_timeout)
        return link

    async def _poll_gpus(self, host: _Host) -> None:
        if host.link is None:
            return
        found = await host.link.request("gpus")
        host.gpu_cache = [GpuInfo(int(g["index"]), int(g["foreign"])) for g in found]
        await host.link.request("gpu_poll", interval=self._gpu_poll)

    async def _rewatch(self, host: _Host) -> None:
        """After a reconnection: find the host's trials again, carry out cancels asked for
        meanwhile, and end the trials that were given up on."""
        assert host.link is not None
        for handle in list(host.handles.values()):
            if handle.done.is_set() or handle.pid is None:
                continue
            found = await host.link.request(
                "watch",
                key=handle.spec.trial_id,
                dir=handle.remote_dir,
                pid=handle.pid,
                start=handle.start_time,
                offset=handle.received,
            )
            if not found["found"]:
                self._finish(
                    handle,
                    TrialExit(
                        None,
                        message=f"the trial ended while host {host.name} was unreachable, "
                        "without an exit code",
                    ),
                )
            elif handle.cancel_pending:
                self._spawn(self._kill(handle))
        for handle in host.abandoned:
            self._spawn(self._kill(handle))
        host.abandoned.clear()

    def _host_up(self, host: _Host) -> None:
        if host.down_since is not None and host.ever_up:
            logger.info(
                "Host %s connection restored after %.0f s",
                host.name,
                time.monotonic() - host.down_since,
            )
        elif host.down_since is not None:
            logger.info(
                "Host %s connected after %.0f s of retries (%s, folder %s)",
                host.name,
                time.monotonic() - host.down_since,
                host.python,
                host.exp_dir,
            )
        else:
            logger.info("Host %s connected (%s, folder %s)", host.name, host.python, host.exp_dir)
        host.status, host.error, host.down_since, host.ever_up = "up", None, None, True

    def _host_down(self, host: _Host, reason: str, retry_in: float) -> None:
        reason = reason.removeprefix(f"host {host.machine.address}: ")
        now = time.monotonic()
        first = host.status == "up" or host.down_since is None
        host.status, host.error, host.retry_at = "down", reason, now + retry_in
        if host.down_since is None:
            host.down_since = now
        if first and host.refused:
            logger.warning("Host %s: %s; retrying", host.name, reason)
        elif first and not host.ever_up:
            logger.warning("Host %s unreachable (%s); retrying", host.name, reason)
        elif first and reason == "connection lost":
            logger.warning("Host %s connection lost; retrying", host.name)
        elif first:
            logger.warning("Host %s connection lost (%s); retrying", host.name, reason)
        else:
            logger.debug("Host %s still unreachable (%s)", host.name, reason)

    async def _back_off(self, host: _Host, delay: float) -> None:
        end = time.monotonic() + delay
        while not self._closing:
            now = time.monotonic()
            if host.down_since is not None and now - host.down_since >= self._lost_timeout:
                self._abandon(host)
            if now >= end:
                return
            limit = end - now
            if host.handles and host.down_since is not None:
                limit = min(limit, max(0.01, host.down_since + self._lost_timeout - now))
            host.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(host.wake.wait(), limit)

    def note(self, handle: TrialHandle) -> str | None:
        assert isinstance(handle, _RemoteHandle)
        host = handle.host
        if host.status == "up" or host.down_since is None or handle.done.is_set():
            return None
        left = max(0, math.ceil(host.down_since + self._lost_timeout - time.monotonic()))
        return (
            f"host {host.name} unreachable ({host.error}) for "
            f"{time.monotonic() - host.down_since:.0f} s; the trial goes on if it comes back "
            f"within {left} s, and is given up then"
        )

    def _abandon(self, host: _Host) -> None:
        """Give up the trials of a host that stayed unreachable for ``lost_timeout``."""
        handles = [h for h in host.handles.values() if not h.done.is_set()]
        if not handles:
            return
        logger.warning(
            "Host %s unreachable for %.0f s: giving up its %d running trial(s)",
            host.name,
            self._lost_timeout,
            len(handles),
        )
        for handle in handles:
            self._finish(
                handle,
                TrialExit(
                    None,
                    message=f"host {host.name} unreachable for {self._lost_timeout:.0f} s "
                    f"({host.error}); the trial's end is unknown",
                ),
            )
            host.abandoned.append(handle)

    async def _disconnect(self, host: _Host) -> None:
        link, conn, sftp = host.link, host.conn, host.sftp
        host.link = host.conn = host.sftp = None
        if sftp is not None:
            sftp.exit()
        if link is not None:
            await link.close()
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- code upload -----------------------------------------------------------------------

    async def _scan(self, code_dir: Path) -> CodeManifest:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, scan_code_dir, code_dir)

    def _support_digest(self) -> bytes:
        digest = hashlib.sha256()
        for name, data in sorted(self._support.items()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return digest.digest()

    async def _upload(
        self, host: _Host, conn: asyncssh.SSHClientConnection, marker: str | None
    ) -> None:
        """Send the code and the trial side unless the host has this very upload already."""
        if self._manifest is None and self._code_dir is not None:
            self._manifest = await self._scan(self._code_dir)
        manifest = self._manifest
        digest = (
            manifest.digest(self._support_digest())
            if manifest is not None
            else CodeManifest(Path("."), {}).digest(self._support_digest())
        )
        async with host.sync_lock:
            if marker == digest:
                host.uploaded = dict(manifest.entries) if manifest else {}
                return
            started = time.monotonic()
            bundle = await self._bundle(manifest, digest)
            await self._send_tar(host, conn, bundle, digest)
            host.uploaded = dict(manifest.entries) if manifest else {}
        if manifest is not None:
            logger.info(
                "Host %s: uploaded %d code files (%.1f MB) in %.1f s",
                host.name,
                manifest.file_count,
                manifest.total_bytes / 1e6,
                time.monotonic() - started,
            )

    async def _bundle(self, manifest: CodeManifest | None, digest: str) -> Path:
        """The tar of a whole upload, built once for every host."""
        async with self._bundle_lock:
            if digest in self._bundles:
                return self._bundles[digest]
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="tunelab-upload-")
            path = Path(self._tmp.name) / f"{digest}.tar"
            entries = list(manifest.entries.values()) if manifest else []
            empty = manifest or CodeManifest(Path("."), {})

            def build() -> None:
                with open(path, "wb") as out:
                    write_tar(out, empty, entries, self._support)

            await asyncio.get_running_loop().run_in_executor(None, build)
            self._bundles[digest] = path
            return path

    async def _send_tar(
        self,
        host: _Host,
        conn: asyncssh.SSHClientConnection,
        source: Path | IO[bytes],
        digest: str,
    ) -> None:
        exp = shlex.quote(host.exp_dir)
        script = (
            f"cd {exp} && tar -xf - && printf '%s' {shlex.quote(digest)} > .upload.tmp "
            "&& mv -f .upload.tmp .upload"
        )
        process = await conn.create_process(_sh(script), encoding=None)
        loop = asyncio.get_running_loop()
        reader = source.open("rb") if isinstance(source, Path) else source
        try:
            while True:
                chunk = await loop.run_in_executor(None, reader.read, _CHUNK)
                if not chunk:
                    break
                process.stdin.write(chunk)
                await process.stdin.drain()
            process.stdin.write_eof()
            result = await process.wait(check=False)
        finally:
            if reader is not source:
                reader.close()
        if result.exit_status != 0:
            stderr = result.stderr if isinstance(result.stderr, bytes) else b""
            raise OSError(
                f"host {host.name}: unpacking the upload failed: "
                f"{stderr.decode(errors='replace').strip()[-500:]}"
            )

    async def _sync_code(self, host: _Host) -> None:
        """Send what changed in the code directory since the host's upload."""
        if self._code_dir is None or host.conn is None:
            return
        manifest = await self._scan(self._code_dir)
        async with host.sync_lock:
            changed = manifest.changed_since(host.uploaded)
            if not changed:
                return
            digest = manifest.digest(self._support_digest())
            loop = asyncio.get_running_loop()

            with tempfile.SpooledTemporaryFile(max_size=16 << 20) as data:
                await loop.run_in_executor(None, write_tar, data, manifest, changed)
                data.seek(0)
                await self._send_tar(host, host.conn, data, digest)
            host.uploaded = dict(manifest.entries)
        self._manifest = manifest
        logger.info("Host %s: sent %d changed code file(s)", host.name, len(changed))

    # -- GPUs and placement ----------------------------------------------------------------

    def check_feasible(self, gpu_number: int | None) -> None:
        if not gpu_number:
            return
        self._wants_gpus = True
        self._gpu_check = gpu_number
        counts: dict[str, int | None] = {}
        for host in self._hosts:
            if host.gpus_known():
                counts[host.name] = len(host.usable_gpus())
            elif host.machine.gpu_indices is not None:
                counts[host.name] = len(host.machine.gpu_indices)  # at most this many
            else:
                counts[host.name] = None
        if any(count is None for count in counts.values()):
            return  # checked again once the hosts have told their GPUs
        if max(count or 0 for count in counts.values()) < gpu_number:
            seen = ", ".join(f"{name}: {count}" for name, count in counts.items())
            raise ConfigError(
                Issue(
                    "trialGpuNumber",
                    f"asks for {gpu_number} GPU(s) per trial but no machine has that many "
                    f"usable ({seen})",
                    gpu_number,
                    "lower trialGpuNumber, widen gpuIndices, or add a machine with more GPUs",
                )
            )

    def place(self, spec: TrialSpec) -> Placement | str:
        self._bind(spec)
        up = [host for host in self._hosts if host.status == "up"]
        waiting = [host.reason() for host in self._hosts if host.status != "up"]
        if spec.gpu_number:
            if not self._wants_gpus:
                self._wants_gpus = True
                for host in up:
                    if host.injected is None:
                        self._spawn(self._poll_gpus(host))
            refusals = []
            for host in sorted(up, key=lambda h: (h.running, h.last_used)):
                chosen = host.gpus.acquire(spec.gpu_number)
                if isinstance(chosen, list):
                    return self._hold(host, Placement(gpu_indices=chosen, host=host.name))
                refusals.append(self._gpu_refusal(host, chosen))
            return "waiting: " + "; ".join(refusals + waiting)
        if not up:
            return "waiting: " + "; ".join(waiting)
        host = min(up, key=lambda h: (h.running, h.last_used))
        indices: list[int] | None = [] if spec.gpu_number == 0 else None
        return self._hold(host, Placement(gpu_indices=indices, host=host.name))

    def _hold(self, host: _Host, placement: Placement) -> Placement:
        host.running += 1
        host.last_used = time.monotonic()
        return placement

    @staticmethod
    def _gpu_refusal(host: _Host, reason: str) -> str:
        if not host.gpus_known():
            return f"host {host.name}: GPU information not received yet"
        text = reason.removeprefix("waiting: ")
        busy = [gpu for gpu in host.usable_gpus() if gpu.foreign_processes]
        if busy and not host.machine.use_active_gpu:
            names = ", ".join(
                f"GPU {gpu.index} ({gpu.foreign_processes} other process"
                f"{'es' if gpu.foreign_processes != 1 else ''})"
                for gpu in busy
            )
            text += f"; busy: {names}"
        return f"host {host.name}: {text}"

    def _host_named(self, name: str) -> _Host | None:
        return next((host for host in self._hosts if host.name == name), None)

    # -- trials ----------------------------------------------------------------------------

    async def launch(self, spec: TrialSpec, placement: Placement) -> TrialHandle:
        host = self._host_named(placement.host)
        if host is None:
            raise OSError(f"no machine named {placement.host!r} in machineList")
        handle = _RemoteHandle(spec, placement, host)
        try:
            if host.status != "up" or host.link is None:
                raise OSError(host.reason())
            try:
                await self._sync_code(host)
            except ConfigError as error:
                raise OSError(str(error)) from None
            handle.remote_dir = f"{host.exp_dir}/trials/{spec.trial_id}"
            spec.trial_dir.mkdir(parents=True, exist_ok=True)
            handle.mirror.write_bytes(b"")  # the host's file is the truth: mirrored from 0
            env = trial_env(
                experiment_id=spec.experiment_id,
                trial_id=spec.trial_id,
                sequence_id=spec.sequence,
                trial_dir=handle.remote_dir,
                platform=self.platform,
                code_dir=f"{host.exp_dir}/code",
            )
            env.update(spec.env)
            if placement.gpu_indices is not None:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, placement.gpu_indices))
            record: ParameterRecord = {
                "parameter_id": spec.sequence,
                "parameter_source": spec.parameter_source,  # type: ignore[typeddict-item]
                "parameters": spec.parameters,
            }
            host.handles[spec.trial_id] = handle
            result = await host.link.request(
                "launch",
                key=spec.trial_id,
                dir=handle.remote_dir,
                cwd=f"{host.exp_dir}/code",
                command=spec.command,
                env=env,
                parameters=record,
            )
        except (KeeperError, ConnectionError, asyncio.TimeoutError, asyncssh.Error) as error:
            self._forget(handle)
            raise OSError(f"host {host.name}: {describe(error)}") from None
        except BaseException:
            self._forget(handle)
            raise
        handle.pid, handle.start_time = int(result["pid"]), result.get("start")
        return handle

    def _forget(self, handle: _RemoteHandle) -> None:
        if handle.host.handles.get(handle.spec.trial_id) is handle:
            del handle.host.handles[handle.spec.trial_id]
        self._release(handle)

    async def reattach(
        self, spec: TrialSpec, placement: Placement, state: dict[str, Any]
    ) -> TrialHandle | None:
        host = self._host_named(str(state.get("host") or placement.host))
        pid, remote_dir = state.get("pid"), state.get("trialDir")
        if host is None or not isinstance(pid, int) or not isinstance(remote_dir, str):
            return None
        self._bind(spec)
        if host.first_attempt is not None:
            await host.first_attempt
        handle = _RemoteHandle(spec, placement, host)
        handle.pid, handle.remote_dir = pid, remote_dir
        start = state.get("startTime")
        handle.start_time = str(start) if start is not None else None
        host.handles[spec.trial_id] = handle
        host.running += 1
        if placement.gpu_indices:
            host.gpus.hold(placement.gpu_indices)
        if host.status != "up" or host.link is None:
            return handle  # found again, or not, once the host is back
        try:
            found = await host.link.request(
                "watch", key=spec.trial_id, dir=remote_dir, pid=pid, start=start, offset=0
            )
        except (KeeperError, ConnectionError, asyncio.TimeoutError):
            return handle
        if not found["found"]:
            self._forget(handle)
            return None
        return handle

    async def wait(self, handle: TrialHandle) -> TrialExit:
        assert isinstance(handle, _RemoteHandle)
        await handle.done.wait()
        assert handle.exit is not None
        return handle.exit

    async def read_metrics(self, handle: TrialHandle) -> list[dict[str, Any]]:
        assert isinstance(handle, _RemoteHandle)
        records, handle.metrics_offset = read_metrics(handle.mirror, handle.metrics_offset)
        return records

    async def cancel(self, handle: TrialHandle) -> None:
        assert isinstance(handle, _RemoteHandle)
        if handle.done.is_set() or handle.pid is None:
            return
        if handle.host.status != "up" or handle.host.link is None:
            handle.cancel_pending = True  # carried out when the host is back
            return
        await self._kill(handle)

    async def _kill(self, handle: _RemoteHandle) -> None:
        link = handle.host.link
        if link is None:
            handle.cancel_pending = True
            return
        try:
            await link.request(
                "kill",
                timeout=self._kill_grace + 30,
                pid=handle.pid,
                start=handle.start_time,
                grace=self._kill_grace,
            )
            handle.cancel_pending = False
        except (KeeperError, ConnectionError, asyncio.TimeoutError) as error:
            handle.cancel_pending = True
            logger.warning(
                "Trial %s on host %s: cancel not done yet (%s); tried again on reconnection",
                handle.spec.trial_id,
                handle.host.name,
                describe(error),
            )

    # -- events from the keepers -----------------------------------------------------------

    def _on_event(self, host: _Host, message: dict[str, Any]) -> None:
        kind = message.get("event")
        if kind == "gpus":
            host.gpu_cache = [GpuInfo(int(g["index"]), int(g["foreign"])) for g in message["gpus"]]
            return
        handle = host.handles.get(str(message.get("key")))
        if handle is None:
            return
        if kind == "metrics":
            data = str(message["data"]).encode("latin-1")
            offset = int(message["offset"])
            path = handle.mirror
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "r+b" if path.exists() else "wb") as file:
                file.seek(offset)
                file.write(data)
            handle.received = max(handle.received, offset + len(data))
        elif kind == "exit":
            self._spawn(self._ended(handle, message))

    async def _ended(self, handle: _RemoteHandle, message: dict[str, Any]) -> None:
        """A trial's supervisor has ended: bring its logs home, then let ``wait`` return."""
        files = message.get("files") or {}
        handle.spec.trial_dir.mkdir(parents=True, exist_ok=True)
        for name in LOG_FILES:
            local = handle.spec.trial_dir / name
            text = files.get(name)
            if text is not None:
                local.write_bytes(str(text).encode("latin-1"))
                continue
            try:
                await self._fetch(handle.host, f"{handle.remote_dir}/{name}", local)
            except (OSError, asyncssh.Error) as error:
                logger.warning(
                    "Trial %s: %s could not be copied from host %s: %s",
                    handle.spec.trial_id,
                    name,
                    handle.host.name,
                    describe(error),
                )
        self._finish(handle, _trial_exit(message.get("code"), message.get("returncode")))

    async def _fetch(self, host: _Host, remote: str, local: Path) -> None:
        if host.conn is None:
            raise OSError("not connected")
        if host.sftp is None:
            host.sftp = await host.conn.start_sftp_client()
        await host.sftp.get(remote, str(local))

    def _finish(self, handle: _RemoteHandle, exit_info: TrialExit) -> None:
        if handle.done.is_set():
            return
        handle.exit = exit_info
        self._forget(handle)
        handle.done.set()

    def _release(self, handle: _RemoteHandle) -> None:
        if handle.released:
            return
        handle.released = True
        handle.host.running -= 1
        if handle.placement.gpu_indices:
            handle.host.gpus.release(handle.placement.gpu_indices)

    # -- cleanup ---------------------------------------------------------------------------

    async def cleanup(self, experiment_id: str | None) -> None:
        """Remove ``<remote root>/<experiment id>`` on every machine; with None (``platform
        clean``), the remote root itself, with every experiment in it.

        Raises:
            OSError: a machine could not be reached or the folder not removed (all machines
                are tried first; the message names each one that failed).
            ValueError: the id or the root cannot name a folder of tunelab's own.
        """
        _quiet_asyncssh()
        if experiment_id is not None:
            self._checked_id(experiment_id)
        elif self._root.strip("/.") in ("", "~") or ".." in self._root.split("/"):
            raise ValueError(f"remote root {self._root!r} is not a folder tunelab may remove")
        results = await asyncio.gather(
            *(self._cleanup_host(host, experiment_id) for host in self._hosts),
            return_exceptions=True,
        )
        failures = [
            f"host {host.name}: {describe(result)}"
            for host, result in zip(self._hosts, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if failures:
            raise OSError("remote folders not removed: " + "; ".join(failures))

    async def _cleanup_host(self, host: _Host, experiment_id: str | None) -> None:
        conn, own = host.conn, False
        if conn is None:
            conn = await connect(
                host.machine, self._policy, self._connect_timeout, self._keepalive, self._keys
            )
            own = True
        try:
            target = shlex.quote(self._root)
            if experiment_id is not None:
                target += "/" + shlex.quote(experiment_id)
            script = f"rm -rf -- {target}"
            if not self._root.startswith("/"):
                script = "cd && " + script  # a relative root is under the login user's home
            result = await conn.run(_sh(script), check=False, timeout=120)
            if result.exit_status != 0:
                raise OSError(str(result.stderr).strip()[-300:] or f"exit {result.exit_status}")
            if experiment_id is None:
                logger.info("Host %s: removed %s", host.name, self._root)
            else:
                logger.info(
                    "Experiment %s: removed its folder on host %s", experiment_id, host.name
                )
        finally:
            if own:
                conn.close()
                await conn.wait_closed()


def _trial_exit(code: Any, returncode: Any) -> TrialExit:
    """How a trial ended, from the supervisor's exit-code file and its own exit status."""
    if isinstance(code, int):
        if code > 128:
            return TrialExit(code, signal=code - 128)  # bash: killed by signal N is 128 + N
        return TrialExit(code)
    if isinstance(returncode, int) and returncode < 0:
        return TrialExit(None, signal=-returncode)
    return TrialExit(returncode if isinstance(returncode, int) else None)


def _quiet_asyncssh() -> None:
    """asyncssh logs every channel at INFO; keep its WARNINGs unless the user set a level."""
    library = logging.getLogger("asyncssh")
    if library.level == logging.NOTSET:
        library.setLevel(logging.WARNING)


def build_remote(section: dict[str, Any], config: dict[str, Any]) -> RemoteTrainingService:
    """The ``platform: remote`` builder for :func:`tunelab.services.create_service`."""
    items = section.get("machineList") or []
    if not isinstance(items, list) or not items:
        raise ConfigError(
            Issue(
                "trainingService.machineList",
                "needs at least one machine",
                items,
                "list the SSH hosts as {host, port, user, sshKeyFile or password}",
            )
        )
    machines = [
        RemoteMachine.from_json(item, f"trainingService.machineList[{index}]")
        for index, item in enumerate(items)
    ]
    fake = fake_gpus()
    probes: dict[str, GpuProbe] | None = None
    if fake is not None:
        probes = {m.address: (lambda: fake) for m in machines}
    code_dir = section.get("trialCodeDirectory") or config.get("trialCodeDirectory")
    return RemoteTrainingService(
        machines,
        code_dir=Path(code_dir) if code_dir else None,
        gpu_number=section.get("trialGpuNumber", config.get("trialGpuNumber")),
        gpu_probes=probes,
    )


register_platform("remote", build_remote)
