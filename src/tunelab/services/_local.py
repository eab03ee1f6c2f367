"""The local training service: trials as processes on this machine.

Each trial runs under a tiny supervisor, a bash wrapper that records its own pid, runs the
trial command with bash (as NNI does) and writes the command's exit code to the trial folder,
so that the exit code survives a manager that died meanwhile. The wrapper leads a new session
and process group, so a manager killed with SIGKILL leaves its trials running; the next
manager re-attaches them by the wrapper's pid and start time (:meth:`reattach`) and learns how
they ended from the exit-code file. A bash wrapper rather than a Python one keeps the cost per
trial to about a millisecond on top of the trial's own start-up.

A trial's processes are its wrapper's process group, the wrapper's descendants, and every
process whose environment names the trial's folder (``TUNELAB_TRIAL_DIR``): the last finds
children that left the group and outlived their parent. Cancelling a trial sends SIGTERM to
all of them and waits, up to the grace period, until every one has gone (the trial may be
cleaning up; the wrapper waits for it and records its exit code), then kills what is left.
When a trial ends on its own, whatever it left running is killed.

stdout and stderr go straight to ``trial.stdout`` and ``trial.stderr`` in the trial folder;
metrics are read from the trial's ``metrics.jsonl`` (see :mod:`tunelab.trial`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import psutil

from tunelab.compat import nni_path
from tunelab.services._base import (
    STDERR_FILE,
    STDOUT_FILE,
    Placement,
    TrainingService,
    TrialExit,
    TrialHandle,
    TrialSpec,
)
from tunelab.services._gpu import GpuProbe, GpuScheduler, nvml_probe
from tunelab.trial import ENV_TRIAL_DIR, METRICS_FILE, read_metrics, trial_env, write_parameters

__all__ = ["LocalTrainingService", "kill_tree"]

PID_FILE = ".pid"
EXIT_CODE_FILE = ".exitcode"

# $1 is the trial command, run by bash as NNI runs it; or, for a command that is only words
# (see _plain_argv), "--argv" followed by those words, which the wrapper runs itself: one bash
# start-up less per trial. The exit code is written with a shell builtin (no extra process).
# SIGTERM, sent to the whole group on cancel, is trapped so that the wrapper outlives the trial
# while the trial cleans up and then records its exit code; a trapped signal is reset to its
# default in the trial, unlike an ignored one.
_WRAPPER = (
    "trap : TERM\n"
    'printf "%s\\n" "$$" > "$TUNELAB_TRIAL_DIR/' + PID_FILE + '"\n'
    'if [ "$1" = --argv ]; then shift; "$@"; else /bin/bash -c "$1"; fi\n'
    "code=$?\n"
    'printf "%s\\n" "$code" > "$TUNELAB_TRIAL_DIR/' + EXIT_CODE_FILE + '"\n'
    'exit "$code"\n'
)
_POLL_SECONDS = 0.2
# Characters that leave a command plain words for bash: no expansion, redirection, globbing,
# operators or escapes, so that shlex splits it exactly as bash would.
_PLAIN_COMMAND = re.compile(r"""[\w\s./:,+%@^=\-'"]*""")
# A first word that bash itself acts on (a builtin such as exit or exec, which would act on the
# wrapper, or a reserved word such as time, which only bash parses) keeps the command in bash.
_SHELL_WORDS_TEXT = (
    ". : [ alias bg bind break builtin caller cd command compgen complete compopt continue "
    "declare dirs disown echo enable eval exec exit export false fc fg getopts hash help "
    "history jobs kill let local logout mapfile popd printf pushd pwd read readarray readonly "
    "return set shift shopt source suspend test times trap true type typeset ulimit umask "
    "unalias unset wait if then else elif fi case esac for select while until do done in "
    "function time { } ! [[ ]] coproc"
)
_SHELL_WORDS = frozenset(_SHELL_WORDS_TEXT.split())


def _plain_argv(command: str) -> list[str] | None:
    """The words of a command that bash would only split into words (``python3 "train v2.py"
    --tag "a b"``), or None when the command needs bash (``$HOME``, ``cd x && y``, ``*.py``,
    ``A=1 python3 ...``)."""
    if not _PLAIN_COMMAND.fullmatch(command):
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not words or "=" in words[0] or words[0] in _SHELL_WORDS:
        return None
    return words


class _LocalHandle(TrialHandle):
    def __init__(self, spec: TrialSpec, placement: Placement) -> None:
        super().__init__(spec, placement)
        self.process: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.create_time: float | None = None
        self.metrics_offset = 0
        self.released = False

    def state(self) -> dict[str, Any]:
        return {"pid": self.pid, "createTime": self.create_time}


def kill_tree(
    pid: int, sig: int, trial_dir: Path | None = None, since: float | None = None
) -> list[psutil.Process]:
    """Send ``sig`` to a process, its process group and all its descendants.

    With ``trial_dir``, the process at ``pid`` counts only if it is the trial's (started at
    ``since``, or naming ``trial_dir`` in its environment): a pid outlives its process, and the
    one a re-attached trial was known by may belong to another process by now. Every process
    started at ``since`` or later whose environment names that trial folder is signalled too,
    so that children that left the group and outlived their parent are reached. Returns the
    processes signalled (without the group's other members).
    """
    found: dict[int, psutil.Process] = {}
    try:
        leader: psutil.Process | None = psutil.Process(pid)
    except psutil.Error:
        leader = None
    if leader is not None and (trial_dir is None or _is_trial(leader, trial_dir, since)):
        found[pid] = leader
        with contextlib.suppress(psutil.Error):
            found.update((child.pid, child) for child in leader.children(recursive=True))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
    elif trial_dir is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
    if trial_dir is not None:
        found.update((p.pid, p) for p in _carrying(trial_dir, since) if p.pid not in found)
    for process in found.values():
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)
    return list(found.values())


def _is_trial(process: psutil.Process, trial_dir: Path, since: float | None) -> bool:
    try:
        if since is not None:
            return abs(process.create_time() - since) < 1.0
        return process.environ().get(ENV_TRIAL_DIR) == str(trial_dir)
    except psutil.Error:
        return False


def _carrying(trial_dir: Path, since: float | None) -> list[psutil.Process]:
    """This user's live processes whose environment names ``trial_dir`` as the trial folder."""
    wanted, me = str(trial_dir), os.getuid()
    earliest = -math.inf if since is None else since - 1.0
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if process.create_time() < earliest or process.uids().real != me:
                continue
            if process.environ().get(ENV_TRIAL_DIR) == wanted and _running(process):
                found.append(process)
    return found


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _group_alive(pgid: int) -> bool:
    """Whether a process group still has a member that runs. Zombies do not count: a
    supervisor whose manager died is nobody's child, and where the init process does not reap
    orphans (a container without an init) it stays a zombie, a member of its group, for ever."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def _another_trials(pid: int, trial_dir: Path) -> bool:
    """Whether the process ``pid`` is a trial of another trial folder (its environment says
    so); False when it is this trial's, is no trial, is gone, or cannot be read."""
    try:
        folder = psutil.Process(pid).environ().get(ENV_TRIAL_DIR)
    except (psutil.Error, OSError):
        return False
    return folder is not None and Path(folder) != trial_dir


def _wrapper_from_pid_file(trial_dir: Path) -> int | None:
    try:
        pid = int((trial_dir / PID_FILE).read_text().strip())
        command = psutil.Process(pid).cmdline()
    except (OSError, ValueError, psutil.Error):
        return None
    return pid if "tunelab-trial" in command else None


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _wrapper_arguments(command: str) -> list[str]:
    words = _plain_argv(command)
    return [command] if words is None else ["--argv", *words]


class _PidfdWatcher(asyncio.AbstractChildWatcher):
    """Learns that a trial process ended through its pidfd, on the loop that started it.

    Python 3.10 and 3.11 start (and wait for) a thread for every subprocess asyncio creates,
    which costs the manager's loop about 2 ms per trial; Python 3.12 does what this does by
    itself. Unlike asyncio's own PidfdChildWatcher, which is bound to one loop, this one
    serves whichever loop is running, so it is set once per process and never taken back.
    """

    def __init__(self) -> None:
        self._pidfds: dict[int, tuple[asyncio.AbstractEventLoop, int]] = {}

    def add_child_handler(  # type: ignore[override]  # typeshed's TypeVarTuple form
        self, pid: int, callback: Any, *args: Any
    ) -> None:
        self.remove_child_handler(pid)
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)  # works on a child that has already ended, too
        self._pidfds[pid] = (loop, pidfd)
        loop.add_reader(pidfd, self._ended, pid, callback, args)

    def _ended(self, pid: int, callback: Any, args: tuple[Any, ...]) -> None:
        self.remove_child_handler(pid)
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = 255  # reaped elsewhere; asyncio's watchers report the same
        callback(pid, code, *args)

    def remove_child_handler(self, pid: int) -> bool:
        entry = self._pidfds.pop(pid, None)
        if entry is None:
            return False
        loop, pidfd = entry
        if not loop.is_closed():
            loop.remove_reader(pidfd)
        os.close(pidfd)
        return True

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        pass  # each handler uses the loop running when it was added

    def is_active(self) -> bool:
        return True

    def close(self) -> None:
        for pid in list(self._pidfds):
            self.remove_child_handler(pid)

    def __enter__(self) -> _PidfdWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @classmethod
    def install(cls) -> None:
        """Set it as this process's child watcher, once, where it helps and works."""
        policy = asyncio.get_event_loop_policy()
        if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
            return
        if isinstance(getattr(policy, "_watcher", None), cls):
            return
        try:
            os.close(os.pidfd_open(os.getpid()))
        except OSError:
            return  # the kernel has no pidfds (before Linux 5.3): keep asyncio's own
        policy.set_child_watcher(cls())


class LocalTrainingService(TrainingService):
    """Runs trials as processes on this machine.

    Args:
        gpu_indices, max_trials_per_gpu, use_active_gpu: the local GPU settings.
        gpu_probe: finds GPUs (tests inject one; the default asks nvidia-ml-py).
        kill_grace: seconds between the polite signal and the kill when cancelling.
    """

    platform = "local"

    def __init__(
        self,
        *,
        gpu_indices: list[int] | None = None,
        max_trials_per_gpu: int = 1,
        use_active_gpu: bool | None = None,
        gpu_probe: GpuProbe | None = None,
        kill_grace: float = 3.0,
    ) -> None:
        self._gpus = GpuScheduler(
            gpu_probe or nvml_probe, gpu_indices, max_trials_per_gpu, use_active_gpu
        )
        self._kill_grace = kill_grace
        self._base_env = dict(os.environ)
        path = [nni_path(), self._base_env.get("PYTHONPATH", "")]
        self._base_env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)

    async def start(self) -> None:
        _PidfdWatcher.install()

    def check_feasible(self, gpu_number: int | None) -> None:
        self._gpus.check_feasible(gpu_number)

    def place(self, spec: TrialSpec) -> Placement | str:
        if not spec.gpu_number:
            return Placement(gpu_indices=[] if spec.gpu_number == 0 else None)
        chosen = self._gpus.acquire(spec.gpu_number)
        if isinstance(chosen, str):
            return chosen
        return Placement(gpu_indices=chosen)

    async def launch(self, spec: TrialSpec, placement: Placement) -> TrialHandle:
        handle = _LocalHandle(spec, placement)
        spec.trial_dir.mkdir(parents=True, exist_ok=True)
        for stale in (EXIT_CODE_FILE, PID_FILE):
            (spec.trial_dir / stale).unlink(missing_ok=True)
        write_parameters(
            spec.trial_dir,
            spec.parameters,
            parameter_id=spec.sequence,
            parameter_source=spec.parameter_source,  # type: ignore[arg-type]
        )

        env = dict(self._base_env)
        env.update(
            trial_env(
                experiment_id=spec.experiment_id,
                trial_id=spec.trial_id,
                sequence_id=spec.sequence,
                trial_dir=spec.trial_dir,
                platform=self.platform,
                code_dir=spec.code_dir,
            )
        )
        env.update(spec.env)
        if placement.gpu_indices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, placement.gpu_indices))
        with (
            open(spec.trial_dir / STDOUT_FILE, "ab") as stdout,
            open(spec.trial_dir / STDERR_FILE, "ab") as stderr,
        ):
            try:
                handle.process = await asyncio.create_subprocess_exec(
                    "/bin/bash",
                    "-c",
                    _WRAPPER,
                    "tunelab-trial",
                    *_wrapper_arguments(spec.command),
                    cwd=spec.code_dir,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                )
            except OSError:
                self._release(handle)
                raise
        handle.pid = handle.process.pid
        # Reading a process's start time waits until its exec is done (about a millisecond):
        # off the loop, which has other trials to serve meanwhile.
        handle.create_time = await asyncio.get_running_loop().run_in_executor(
            None, _create_time, handle.pid
        )
        return handle

    async def reattach(
        self, spec: TrialSpec, placement: Placement, state: dict[str, Any]
    ) -> TrialHandle | None:
        pid, create_time = state.get("pid"), state.get("createTime")
        if not isinstance(pid, int):
            # The manager died between starting the trial and storing its handle: the
            # wrapper's pid file still tells, if the process there is a trial wrapper.
            pid, create_time = _wrapper_from_pid_file(spec.trial_dir), None
        if pid is None or _another_trials(pid, spec.trial_dir):
            # No process, or one of another trial's (a loaded copy of an experiment whose
            # original still runs holds the same ids): this trial's process is gone.
            return None
        handle = _LocalHandle(spec, placement)
        handle.pid = pid
        handle.create_time = float(create_time) if create_time is not None else None
        running = self._same_process(handle) or (
            _group_alive(pid) and (spec.trial_dir / PID_FILE).exists()
        )
        if not running and not (spec.trial_dir / EXIT_CODE_FILE).exists():
            return None
        if placement.gpu_indices:
            self._gpus.hold(placement.gpu_indices)
        return handle

    @staticmethod
    def _same_process(handle: _LocalHandle) -> bool:
        if handle.pid is None:
            return False
        try:
            process = psutil.Process(handle.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            return (
                handle.create_time is None or abs(process.create_time() - handle.create_time) < 1.0
            )
        except psutil.Error:
            return False

    async def wait(self, handle: TrialHandle) -> TrialExit:
        assert isinstance(handle, _LocalHandle) and handle.pid is not None
        if handle.process is not None:
            returncode: int | None = await handle.process.wait()
        else:
            # Re-attached: not our child, so poll. The supervisor writes the exit code as its
            # last act; without one (it was killed), the trial lasts while its group lives.
            exit_file = handle.spec.trial_dir / EXIT_CODE_FILE
            while not exit_file.exists() and (
                self._same_process(handle) or _group_alive(handle.pid)
            ):
                await asyncio.sleep(_POLL_SECONDS)
            returncode = None
        # The trial has ended: whatever it left running goes with it.
        await self._kill(handle, signal.SIGKILL)
        self._release(handle)
        return exit_from_files(handle.spec.trial_dir, returncode)

    async def read_metrics(self, handle: TrialHandle) -> list[dict[str, Any]]:
        assert isinstance(handle, _LocalHandle)
        path = handle.spec.trial_dir / METRICS_FILE
        records, handle.metrics_offset = read_metrics(path, handle.metrics_offset)
        return records

    async def cancel(self, handle: TrialHandle) -> None:
        assert isinstance(handle, _LocalHandle)
        if handle.pid is None or not (self._same_process(handle) or _group_alive(handle.pid)):
            return
        tree = await self._kill(handle, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._kill_grace
        while loop.time() < deadline:
            if not any(_running(p) for p in tree) and not _group_alive(handle.pid):
                return
            await asyncio.sleep(0.05)
        await self._kill(handle, signal.SIGKILL)

    async def _kill(self, handle: _LocalHandle, sig: int) -> list[psutil.Process]:
        """``kill_tree`` for a trial, off the event loop (it may scan every process)."""
        assert handle.pid is not None
        return await asyncio.get_running_loop().run_in_executor(
            None, kill_tree, handle.pid, sig, handle.spec.trial_dir, handle.create_time
        )

    def _release(self, handle: _LocalHandle) -> None:
        if handle.placement.gpu_indices and not handle.released:
            self._gpus.release(handle.placement.gpu_indices)
        handle.released = True


def exit_from_files(trial_dir: Path, returncode: int | None) -> TrialExit:
    """How a trial ended, from the wrapper's exit-code file and the wrapper's own code."""
    try:
        code: int | None = int((trial_dir / EXIT_CODE_FILE).read_text().strip())
    except (OSError, ValueError):
        code = None
    if code is None:
        if returncode is not None and returncode < 0:
            return TrialExit(None, signal=-returncode)
        return TrialExit(returncode)
    if code > 128:
        # bash reports a command killed by signal N as 128 + N.
        return TrialExit(code, signal=code - 128)
    return TrialExit(code)
