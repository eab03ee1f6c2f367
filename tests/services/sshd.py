"""Real OpenSSH servers on loopback for the remote training service's tests.

``ssh_lab`` (session scope) starts two ``sshd`` processes on free ports of 127.0.0.1, each with
its own config, host key and log in a temporary folder, and two login users, ``tl-alpha`` and
``tl-beta``, created with useradd when missing. Each user has a home of its own, so a service
that wrongly uses paths of this machine's user fails. Logins offered:

* ``tl-alpha``: a plain key, and a key protected by a passphrase;
* ``tl-beta``: a password, and a key held only by an ``ssh-agent`` the lab starts.

Creating users, writing into their homes and running sshd need root (CI and the development
machines run the suite as root); without it the tests that use the lab are skipped, saying
why. Several pytest-xdist workers share the users: each worker's servers read their own
authorized-keys file (``~/.ssh/authorized_keys.<tag>``), the password is one shared secret in a
root-only file, and the users are set up under a file lock. Every process the lab started is
stopped at the end of the session, and its files are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import psutil
import pytest

from tunelab.services import RemoteMachine

SSHD = "/usr/sbin/sshd"
USERS = ("tl-alpha", "tl-beta")
_STATE = Path("/root/.cache/tunelab-tests")
_LOCK = Path(tempfile.gettempdir()) / "tunelab-test-users.lock"


@dataclass
class SshServer:
    """One sshd on 127.0.0.1."""

    port: int
    user: str
    workdir: Path
    host_key: Path
    tag: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"sshd-{self.port}.log"

    def start(self) -> None:
        """Start (or restart) the server on its port and wait until it accepts connections."""
        config = self.workdir / f"sshd-{self.port}.conf"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.workdir / f'sshd-{self.port}.pid'}",
                    f"AuthorizedKeysFile .ssh/authorized_keys.{self.tag}",
                    "AllowUsers " + " ".join(USERS),
                    "PermitRootLogin no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes yes",
                    "MaxStartups 50:30:100",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30  # the machine may be busy with other suites
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd on port {self.port} failed: {self.log.read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd on port {self.port} did not start: {self.log.read_text()}")

    def start_on_a_free_port(self) -> None:
        """Start, taking another port if someone took this one since it was picked."""
        for attempt in range(5):
            try:
                self.start()
                return
            except RuntimeError:
                self.stop()
                if attempt == 4 or "Address already in use" not in self.log.read_text():
                    raise
                self.port = _free_port()

    def stop(self) -> None:
        """Stop the server and every session it serves (a host that went away)."""
        if self.process is None:
            return
        try:
            sessions = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            sessions = []
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        for child in sessions:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(sessions, timeout=5)
        self.process = None

    def drop_connections(self) -> None:
        """End every open SSH connection to this server, leaving it listening (a network
        failure as the client sees it)."""
        if self.process is None:
            return
        # Each connection has a privileged sshd and an unprivileged one holding the socket.
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.name().startswith("sshd"):
                    child.kill()


@dataclass
class SshLab:
    """The users, keys and servers of a test session."""

    workdir: Path
    tag: str
    password: str
    passphrase: str
    plain_key: Path
    protected_key: Path
    agent_socket: str
    alpha: SshServer
    beta: SshServer
    agent: subprocess.Popen[bytes] | None = None
    extra: list[SshServer] = field(default_factory=list)

    def home(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir)

    def machine(self, server: SshServer, login: str = "key", **fields: Any) -> RemoteMachine:
        """A machine entry for ``server``'s user, logging in with ``login``: ``key``,
        ``passphrase``, ``password`` or ``agent`` (the key lives only in the lab's agent)."""
        machine = RemoteMachine(host="127.0.0.1", port=server.port, user=server.user, **fields)
        if login == "key":
            machine.ssh_key_file = str(self.plain_key)
        elif login == "passphrase":
            machine.ssh_key_file = str(self.protected_key)
            machine.ssh_passphrase = self.passphrase
        elif login == "password":
            machine.password = self.password
        elif login != "agent":
            raise ValueError(login)
        return machine

    def new_server(self, user: str = "tl-alpha", start: bool = True) -> SshServer:
        """One more server (for tests that stop and restart one), stopped at session end."""
        server = SshServer(_free_port(), user, self.workdir, self.alpha.host_key, self.tag)
        self.extra.append(server)
        if start:
            server.start_on_a_free_port()
        return server

    def remote_root(self, request: pytest.FixtureRequest) -> str:
        """A fresh remote root (relative to each user's home) for one test, removed after it
        with every process still running from it."""
        root = f"tunelab-tests/{uuid.uuid4().hex[:12]}"
        request.addfinalizer(lambda: self.remove_root(root))
        return root

    def remove_root(self, root: str) -> None:
        kill_processes_under(root)
        for user in USERS:
            shutil.rmtree(self.home(user) / root, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.home(user) / root).parent.rmdir()  # the shared parent, once empty

    def close(self) -> None:
        for server in [self.alpha, self.beta, *self.extra]:
            server.stop()
        if self.agent is not None:
            self.agent.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.agent.wait(5)
        for user in USERS:
            with contextlib.suppress(OSError):
                (self.home(user) / ".ssh" / f"authorized_keys.{self.tag}").unlink()
        shutil.rmtree(self.workdir, ignore_errors=True)


def kill_processes_under(marker: str) -> None:
    """Kill the test users' processes whose command line or TUNELAB_TRIAL_DIR mentions
    ``marker`` (one test's remote root): what a failed test may have left running."""
    found = []
    for process in psutil.process_iter(["username", "cmdline"]):
        try:
            if process.info["username"] not in USERS:
                continue
            text = " ".join(process.info["cmdline"] or [])
            if marker in text or marker in process.environ().get("TUNELAB_TRIAL_DIR", ""):
                found.append(process)
        except psutil.Error:
            continue
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(found, timeout=5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(*command: str, stdin: str | None = None) -> None:
    subprocess.run(command, check=True, input=stdin, text=True, capture_output=True)


def _setup_users() -> str:
    """Create the users when missing; return the shared password of tl-beta."""
    _STATE.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        secret_file = _STATE / "ssh-password"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(18))
            secret_file.chmod(0o600)
        password = secret_file.read_text().strip()
        for user in USERS:
            try:
                pwd.getpwnam(user)
            except KeyError:
                _run("useradd", "--create-home", "--shell", "/bin/bash", user)
        # sshd without PAM refuses a locked account ("!") even for key logins.
        _run("usermod", "-p", "*", "tl-alpha")
        _run("chpasswd", stdin=f"tl-beta:{password}\n")
        return password


def _authorize(user: str, tag: str, keys: list[asyncssh.SSHKey]) -> None:
    entry = pwd.getpwnam(user)
    ssh_dir = Path(entry.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(ssh_dir, entry.pw_uid, entry.pw_gid)
    path = ssh_dir / f"authorized_keys.{tag}"
    path.write_bytes(b"".join(key.export_public_key() for key in keys))
    path.chmod(0o600)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _start_agent(lab: SshLab, key: asyncssh.SSHKey) -> None:
    """Start an ssh-agent holding ``key`` only (``lab.agent`` is set first, so that
    ``lab.close`` stops it whatever happens next)."""
    socket_path = str(lab.workdir / "agent.sock")
    lab.agent = process = subprocess.Popen(
        ["ssh-agent", "-D", "-a", socket_path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    lab.agent_socket = socket_path

    async def add() -> None:
        # The socket's file appears when the agent binds it, a moment before it listens.
        deadline = time.monotonic() + 20
        while True:
            try:
                async with asyncssh.connect_agent(socket_path) as agent:
                    await agent.add_keys([key])
                return
            except (OSError, asyncssh.Error, ValueError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                await asyncio.sleep(0.05)

    asyncio.run(add())


def start_lab() -> SshLab:
    """Set up users, keys, two servers and an SSH agent (skips the test without root)."""
    if os.geteuid() != 0:
        pytest.skip("the sshd tests need root: they create the users tl-alpha and tl-beta")
    if not os.path.exists(SSHD) or shutil.which("ssh-agent") is None:
        pytest.skip("openssh-server is not installed: run scripts/install-system-deps.sh")
    password = _setup_users()
    workdir = Path(tempfile.mkdtemp(prefix="tunelab-sshd-"))
    try:
        return _start_lab_in(workdir, password)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _start_lab_in(workdir: Path, password: str) -> SshLab:
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    plain = asyncssh.generate_private_key("ssh-ed25519")
    protected = asyncssh.generate_private_key("ssh-ed25519")
    in_agent = asyncssh.generate_private_key("ssh-ed25519")
    passphrase = secrets.token_urlsafe(12)
    plain_path, protected_path = workdir / "id_plain", workdir / "id_protected"
    plain.write_private_key(str(plain_path))
    # 16 key-derivation rounds, as ssh-keygen writes them.
    protected.write_private_key(
        str(protected_path), passphrase=passphrase, rounds=16, ignore_few_rounds=True
    )
    for path in (plain_path, protected_path):
        path.chmod(0o600)
    _authorize("tl-alpha", tag, [plain, protected])
    _authorize("tl-beta", tag, [in_agent])

    host_key = workdir / "host_key"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
    alpha = SshServer(_free_port(), "tl-alpha", workdir, host_key, tag)
    beta = SshServer(_free_port(), "tl-beta", workdir, host_key, tag)
    lab = SshLab(workdir, tag, password, passphrase, plain_path, protected_path, "", alpha, beta)
    try:
        alpha.start_on_a_free_port()
        beta.start_on_a_free_port()
        _start_agent(lab, in_agent)
    except BaseException:
        lab.close()
        raise
    return lab


# One lab per test process, shared by every test module that asks for it.
_LAB: list[SshLab] = []
_USERS_OF_LAB: list[int] = []


@pytest.fixture(scope="session")
def ssh_lab() -> Iterator[SshLab]:
    if not _LAB:
        _LAB.append(start_lab())
    _USERS_OF_LAB.append(1)
    yield _LAB[0]
    _USERS_OF_LAB.pop()
    if not _USERS_OF_LAB:
        _LAB.pop().close()


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


__all__ = ["SshLab", "SshServer", "kill_processes_under", "ssh_lab", "start_lab", "wait_for"]
