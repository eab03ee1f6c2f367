"""SSH for the remote training service: machines, logins, host keys, the keeper's channel.

Logins, in this order for each machine of ``machineList``:

1. ``password`` from the config: password authentication (NNI ignores the key then, and so
   does tunelab);
2. ``sshKeyFile``: that key, decrypted with ``sshPassphrase`` from the config or else from the
   environment; an encrypted key without a passphrase is left to the SSH agent, which may hold
   it;
3. neither: a password from the environment if one is set, else the SSH agent
   (``SSH_AUTH_SOCK``) and the default keys in ``~/.ssh``, as ``ssh`` would.

Secrets the manager was not given (a resumed experiment: the store never holds them) come
from the environment: ``TUNELAB_SSH_PASSWORD`` and ``TUNELAB_SSH_PASSPHRASE`` for every
machine, or ``TUNELAB_SSH_PASSWORD_<HOST>_<PORT>`` / ``..._<HOST>`` (and the same for
``PASSPHRASE``) for one machine, where ``<HOST>`` is the host name in capitals with every
character other than a letter or digit written ``_`` (``127.0.0.1`` port 2222 is
``TUNELAB_SSH_PASSWORD_127_0_0_1_2222``). The most specific name wins. Secrets are never
logged, never put in a handle's state and never in a message: a machine's ``repr`` leaves
them out.

Host keys, so that no prompt can block: a host listed in the manager's ``~/.ssh/known_hosts``
must show the key recorded there. Any other host is trusted on first use and its key is
remembered in ``$TUNELAB_HOME/known_hosts`` (default ``~/tunelab-experiments/known_hosts``);
from then on that key is required too. A mismatch is refused with a message naming the file
and the line to remove if the host was really reinstalled. ``~/.ssh/config`` is not read: the
machine list says everything tunelab uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from tunelab.errors import ConfigError, Issue

__all__ = [
    "HostError",
    "HostKeyPolicy",
    "KeeperError",
    "KeeperLink",
    "RemoteMachine",
    "connect",
    "describe",
    "env_secret",
]

logger = logging.getLogger("tunelab.services.remote")

ENV_PASSWORD = "TUNELAB_SSH_PASSWORD"
ENV_PASSPHRASE = "TUNELAB_SSH_PASSPHRASE"


@dataclass
class RemoteMachine:
    """One entry of ``machineList`` (NNI's RemoteMachineConfig)."""

    host: str
    user: str
    port: int = 22
    password: str | None = field(default=None, repr=False)
    ssh_key_file: str | None = None
    ssh_passphrase: str | None = field(default=None, repr=False)
    use_active_gpu: bool = False
    max_trials_per_gpu: int = 1
    gpu_indices: list[int] | None = None
    python_path: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> RemoteMachine:
        """Build from a canonical ``machineList`` item (camelCase keys).

        Raises:
            ConfigError: a field is missing or malformed.
        """
        host, user = data.get("host"), data.get("user") or data.get("username")
        if not isinstance(host, str) or not host:
            raise ConfigError(Issue(f"{where}.host", "is required", host, "give the host name"))
        if not isinstance(user, str) or not user:
            raise ConfigError(
                Issue(f"{where}.user", "is required", user, "give the login user on the host")
            )
        port = data.get("port", 22)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(Issue(f"{where}.port", "must be between 1 and 65535", port))
        indices = data.get("gpuIndices")
        if isinstance(indices, str):
            indices = [int(part) for part in indices.split(",") if part.strip()]
        elif isinstance(indices, int):
            indices = [indices]
        return cls(
            host=host,
            user=user,
            port=port,
            password=data.get("password") or None,
            ssh_key_file=data.get("sshKeyFile") or None,
            ssh_passphrase=data.get("sshPassphrase") or None,
            use_active_gpu=bool(data.get("useActiveGpu") or False),
            max_trials_per_gpu=int(data.get("maxTrialNumberPerGpu") or 1),
            gpu_indices=None if indices is None else [int(i) for i in indices],
            python_path=data.get("pythonPath") or None,
        )


def env_secret(kind: str, machine: RemoteMachine) -> str | None:
    """A password (``kind="PASSWORD"``) or passphrase from the environment for ``machine``."""
    host = re.sub(r"[^A-Za-z0-9]", "_", machine.host).upper()
    base = f"TUNELAB_SSH_{kind}"
    for name in (f"{base}_{host}_{machine.port}", f"{base}_{host}", base):
        value = os.environ.get(name)
        if value:
            return value
    return None


class HostError(Exception):
    """A host problem that trying again will not fix (bad password or key, changed host key,
    no Python on the host). The message is safe to show: it holds no secret."""


# -- host keys ----------------------------------------------------------------------------


class HostKeyPolicy:
    """Trust what ``~/.ssh/known_hosts`` says, else trust on first use and remember.

    Args:
        remembered: tunelab's own known-hosts file (written to).
        user_known_hosts: the manager user's OpenSSH file (only read).
    """

    def __init__(self, remembered: Path, user_known_hosts: Path | None) -> None:
        self.remembered = remembered
        self.user_known_hosts = user_known_hosts

    def _files(self) -> list[Path]:
        files = [self.remembered]
        if self.user_known_hosts is not None:
            files.insert(0, self.user_known_hosts)
        return [path for path in files if path.is_file() and os.access(path, os.R_OK)]

    def check(self, machine: RemoteMachine) -> _HostKeyCheck:
        return _HostKeyCheck(self, machine)

    def remember(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        name = host if port == 22 else f"[{host}]:{port}"
        algorithm, data = key.export_public_key().decode().split()[:2]
        self.remembered.parent.mkdir(parents=True, exist_ok=True)
        with open(self.remembered, "a", encoding="utf-8") as file:
            file.write(f"{name} {algorithm} {data}\n")
        logger.info(
            "Host %s:%d: trusting its %s key %s on first use (remembered in %s)",
            host,
            port,
            algorithm,
            key.get_fingerprint(),
            self.remembered,
        )


class _HostKeyCheck:
    """The host-key decision for one connection attempt."""

    def __init__(self, policy: HostKeyPolicy, machine: RemoteMachine) -> None:
        self.policy = policy
        self.machine = machine
        self.listed_in: Path | None = None

    def match(
        self, host: str, addr: str, port: int | None
    ) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
        trusted: list[asyncssh.SSHKey] = []
        cas: list[asyncssh.SSHKey] = []
        revoked: list[asyncssh.SSHKey] = []
        for path in self.policy._files():
            try:
                known = asyncssh.read_known_hosts(str(path))
            except (OSError, ValueError) as error:
                logger.warning("Known-hosts file %s cannot be read: %s", path, error)
                continue
            found = asyncssh.match_known_hosts(known, host, addr, port)
            keys, ca_keys, revoked_keys = found[0], found[1], found[2]
            if (keys or ca_keys) and self.listed_in is None:
                self.listed_in = path
            trusted.extend(keys)
            cas.extend(ca_keys)
            revoked.extend(revoked_keys)
        return trusted, cas, revoked

    def first_use(self, key: asyncssh.SSHKey) -> bool:
        if self.listed_in is not None:
            return False  # listed with other keys: a changed host key is refused
        self.policy.remember(self.machine.host, self.machine.port, key)
        return True


class _Client(asyncssh.SSHClient):
    def __init__(self, check: _HostKeyCheck) -> None:
        self._check = check

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        return self._check.first_use(key)


# -- connecting ---------------------------------------------------------------------------


async def _login_options(
    machine: RemoteMachine, keys: dict[str, asyncssh.SSHKey]
) -> dict[str, Any]:
    """asyncssh's authentication options for ``machine`` (see the module docstring).

    ``keys`` keeps the keys already decrypted (by key file), so that reconnecting does not
    pay for the passphrase's key derivation again."""
    password = machine.password
    if password:
        return {"password": password, "client_keys": None}
    if machine.ssh_key_file:
        path = Path(machine.ssh_key_file).expanduser()
        if not path.is_file():
            raise HostError(
                f"host {machine.address}: the sshKeyFile {path} does not exist; give the path "
                "of the private key that logs in as " + machine.user
            )
        if str(path) in keys:
            return {"client_keys": [keys[str(path)]], "agent_path": None}
        passphrase = machine.ssh_passphrase or env_secret("PASSPHRASE", machine)
        loop = asyncio.get_running_loop()
        try:
            key = await loop.run_in_executor(
                None, asyncssh.read_private_key, str(path), passphrase
            )
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as error:
            # A wrong passphrase is a KeyEncryptionError: as lasting as a bad key.
            if passphrase is None and "assphrase" in str(error):
                if os.environ.get("SSH_AUTH_SOCK"):
                    return {"client_keys": ()}  # the SSH agent may hold the decrypted key
                raise HostError(
                    f"host {machine.address}: the key {path} is encrypted and no passphrase "
                    f"was given; set sshPassphrase in the config or {ENV_PASSPHRASE} in the "
                    "environment, or add the key to an SSH agent"
                ) from None
            raise HostError(
                f"host {machine.address}: the key {path} cannot be used: {error}"
            ) from None
        keys[str(path)] = key
        return {"client_keys": [key], "agent_path": None}
    password = env_secret("PASSWORD", machine)
    if password:
        return {"password": password, "client_keys": None}
    return {"client_keys": ()}  # the SSH agent and the default keys


async def connect(
    machine: RemoteMachine,
    policy: HostKeyPolicy,
    timeout: float,
    keepalive: float,
    keys: dict[str, asyncssh.SSHKey] | None = None,
) -> asyncssh.SSHClientConnection:
    """Open an authenticated connection to ``machine`` (``keys``: see :func:`_login_options`).

    Raises:
        HostError: authentication or the host key failed (trying again will not help).
        OSError, asyncssh.Error, asyncio.TimeoutError: the host cannot be reached now.
    """
    options = await _login_options(machine, {} if keys is None else keys)
    check = policy.check(machine)
    try:
        return await asyncssh.connect(
            machine.host,
            machine.port,
            username=machine.user,
            known_hosts=check.match,
            client_factory=lambda: _Client(check),
            config=None,
            connect_timeout=timeout,
            login_timeout=timeout,
            keepalive_interval=keepalive,
            keepalive_count_max=3,
            **options,
        )
    except asyncssh.HostKeyNotVerifiable:
        where = check.listed_in or policy.remembered
        raise HostError(
            f"host {machine.address}: its host key differs from the one recorded in {where}; "
            f"if the host was reinstalled, remove its line from that file"
        ) from None
    except asyncssh.PermissionDenied:
        how = "password" if "password" in options else "key or SSH agent"
        raise HostError(
            f"host {machine.address}: permission denied for user {machine.user} ({how} "
            "login); check the machine's user and credentials"
        ) from None


def describe(error: BaseException) -> str:
    """A short reason for a failed or lost connection, for "host X unreachable (...)"."""
    if isinstance(error, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(error, asyncio.TimeoutError):
        return "timed out"
    if isinstance(error, asyncssh.DisconnectError):
        return error.reason or type(error).__name__
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


# -- the keeper's channel ------------------------------------------------------------------


class KeeperError(Exception):
    """The keeper answered a request with an error (its message)."""


class KeeperLink:
    """Requests to, and events from, the trial keeper on one host.

    Args:
        process: the keeper, started over the SSH connection.
        on_event: called on the event loop for every event the keeper sends.
        label: the machine, for log lines.
    """

    def __init__(
        self,
        process: asyncssh.SSHClientProcess[str],
        on_event: Callable[[dict[str, Any]], None],
        label: str,
    ) -> None:
        self._process = process
        self._on_event = on_event
        self._label = label
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._read_stderr())]

    async def request(self, op: str, timeout: float = 60.0, **arguments: Any) -> Any:
        """Send a request and return its result.

        Raises:
            KeeperError: the keeper could not do it.
            ConnectionError: the connection ended before the answer came.
        """
        if self.closed.is_set():
            raise ConnectionError("the connection to the host was lost")
        number = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        try:
            self._process.stdin.write(json.dumps({"id": number, "op": op, **arguments}) + "\n")
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(number, None)

    async def _read(self) -> None:
        try:
            while True:
                line = await self._process.stdout.readline()
                if not line:
                    break
                message = json.loads(line)
                if "id" in message:
                    future = self._pending.get(message["id"])
                    if future is not None and not future.done():
                        if message.get("ok"):
                            future.set_result(message.get("result"))
                        else:
                            future.set_exception(KeeperError(str(message.get("error"))))
                elif message.get("event") == "ready":
                    if not self.ready.done():
                        self.ready.set_result(message)
                else:
                    self._on_event(message)
        except (asyncssh.Error, OSError, ValueError) as error:
            logger.debug("Host %s: keeper channel ended: %s", self._label, error)
        finally:
            self._end()

    async def _read_stderr(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            async for line in self._process.stderr:
                if line.strip():
                    logger.warning("Host %s keeper: %s", self._label, line.rstrip())

    def _end(self) -> None:
        self.closed.set()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the trial keeper ended before it was ready"))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the connection to the host was lost"))

    async def close(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            self._process.stdin.write_eof()
        self._process.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._end()


async def gather_all(items: Sequence[Awaitable[Any]]) -> list[Any]:
    """``asyncio.gather`` that returns exceptions in place of results."""
    return list(await asyncio.gather(*items, return_exceptions=True))
