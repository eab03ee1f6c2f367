"""What the ray training service runs inside the Ray cluster.

Two parts, both started by :mod:`tunelab.services._ray`:

* :func:`run_trial` is the body of the Ray *task* that runs one trial on a worker, with the
  trial's resources. It writes ``parameters.json``, starts the trial command under the same
  kind of bash supervisor as the local service (pid file, exit-code file, the trial leading
  its own session), and every fraction of a second sends what the trial appended to its
  ``metrics.jsonl``, ``trial.stdout`` and ``trial.stderr`` to the experiment actor. The answer
  says whether the trial was cancelled; a cancelled trial's whole process tree gets SIGTERM,
  then SIGKILL after the grace period. The task returns the exit code.
* :class:`ExperimentActor` is one detached, named actor per experiment (no CPU of its own).
  It submits the trial tasks, so it owns them: they keep running when the manager that asked
  for them dies, and a new manager finds them again through the actor's name. It holds what
  the tasks sent until the manager has written it to the trial's folder, and each trial's exit
  until the manager has collected it. When a task dies without returning (its worker
  crashed or was killed), the actor reads what the trial wrote after the task's last report
  from the files on that node, so that no metric is lost.

Everything that crosses a process boundary here (task arguments, actor-method arguments and
answers) is JSON-able: strings, numbers, lists and dicts, with file content as base64 text.

This module imports the standard library only, and ``ray`` and the trial side
(:mod:`tunelab.trial`) inside functions: the service has Ray pickle it by value, so a worker
needs Ray (it has it) and the trial side, which comes with the runtime environment, and no
tunelab install.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

__all__ = [
    "ExperimentActor",
    "read_rest",
    "remove_experiment_folders",
    "run_trial",
    "worker_trial_root",
]

PID_FILE = ".pid"
EXIT_CODE_FILE = ".exitcode"
STREAMS = {"metrics": "metrics.jsonl", "stdout": "trial.stdout", "stderr": "trial.stderr"}
CHUNK_BYTES = 1 << 20
ROOT_ENV = "TUNELAB_RAY_TRIAL_ROOT"

# $1 is the trial command. Besides what the local wrapper does, a watchdog ends the trial's
# process group when the Ray worker that started the wrapper ($PPID) is gone, so that a worker
# killed by Ray (a forced cancel, a local cluster that stopped with its manager) leaves no
# trial running unwatched. The watchdog ignores the SIGTERM it sends its own group.
WRAPPER = (
    'printf "%s\\n" "$$" > "$TUNELAB_TRIAL_DIR/' + PID_FILE + '"\n'
    "supervisor=$PPID\n"
    "( trap '' TERM\n"
    '  while kill -0 "$supervisor" 2>/dev/null; do sleep 1; done\n'
    "  kill -TERM 0; sleep 5; kill -KILL 0 ) </dev/null >/dev/null 2>&1 &\n"
    "watchdog=$!\n"
    '/bin/bash -c "$1"\n'
    "code=$?\n"
    'kill -KILL "$watchdog" 2>/dev/null\n'
    'printf "%s\\n" "$code" > "$TUNELAB_TRIAL_DIR/' + EXIT_CODE_FILE + '"\n'
    'exit "$code"\n'
)


def worker_trial_root(root: str | None) -> str:
    """The folder on a worker node that holds the trial folders (``<root>/<exp>/<trial>``)."""
    if root:
        return root
    return os.environ.get(ROOT_ENV) or os.path.join(tempfile.gettempdir(), "tunelab-ray")


# -- the trial task -------------------------------------------------------------------------


def run_trial(args: dict[str, Any]) -> dict[str, Any]:
    """Run one trial to its end on this worker; the body of the trial's Ray task.

    ``args`` (JSON values): experimentId, trialId, launchId, sequence, command, parameters,
    parameterSource, env, cuda (CUDA_VISIBLE_DEVICES to set, or None to keep Ray's),
    workerRoot, grace, actorName, namespace, metricsSeed (base64: the metric lines of the
    trial's earlier attempts, so that ``seq`` goes on counting).

    Returns ``{"exitCode": int | None, "signal": int | None, "message": str | None}``.
    """
    import ray

    from tunelab.compat import nni_path
    from tunelab.trial import trial_env, write_parameters

    folder = os.path.join(
        worker_trial_root(args.get("workerRoot")), args["experimentId"], args["trialId"]
    )
    os.makedirs(folder, exist_ok=True)
    for stale in (PID_FILE, EXIT_CODE_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, stale))
    seed = base64.b64decode(args.get("metricsSeed") or "")
    with open(os.path.join(folder, STREAMS["metrics"]), "wb") as file:
        file.write(seed)
    write_parameters(
        folder,
        args["parameters"],
        parameter_id=args["sequence"],
        parameter_source=args.get("parameterSource", "algorithm"),
    )

    env = dict(os.environ)
    env.update(
        trial_env(
            experiment_id=args["experimentId"],
            trial_id=args["trialId"],
            sequence_id=args["sequence"],
            trial_dir=folder,
            platform="ray",
            code_dir=os.getcwd(),
        )
    )
    env.update(args.get("env") or {})
    # The shipped trial side: `import nni` finds the shim, `import tunelab` its package.
    shipped = os.path.dirname(os.path.dirname(nni_path()))
    path = [nni_path(), shipped, env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    if args.get("cuda") is not None:
        env["CUDA_VISIBLE_DEVICES"] = args["cuda"]

    actor = ray.get_actor(args["actorName"], namespace=args["namespace"])
    try:
        with (
            open(os.path.join(folder, STREAMS["stdout"]), "wb") as stdout,
            open(os.path.join(folder, STREAMS["stderr"]), "wb") as stderr,
        ):
            process = subprocess.Popen(
                ["/bin/bash", "-c", WRAPPER, "tunelab-trial", args["command"]],
                cwd=os.getcwd(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
    except OSError as error:
        return {"exitCode": None, "signal": None, "message": f"could not start: {error}"}

    info = {
        "node": ray.get_runtime_context().get_node_id(),
        "host": os.uname().nodename,
        "pid": process.pid,
        "trialDir": folder,
        "tunelab": shipped,
    }
    offsets = {"metrics": len(seed), "stdout": 0, "stderr": 0}
    returncode = _supervise(process, folder, offsets, actor, args, info)
    # The trial has ended: whatever it left running in its group goes with it. (Its other
    # descendants can no longer be told apart: they now belong to init.)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return _exit_info(folder, returncode)


def _supervise(
    process: subprocess.Popen[bytes],
    folder: str,
    offsets: dict[str, int],
    actor: Any,
    args: dict[str, Any],
    info: dict[str, Any],
) -> int:
    import ray

    interval = 0.02
    kill_at: float | None = None
    first: dict[str, Any] | None = info
    while True:
        returncode = process.poll()
        chunks, more = _read_chunks(folder, offsets)
        try:
            answer = ray.get(
                actor.push.remote(args["trialId"], args["launchId"], chunks, first), timeout=60
            )
        except Exception:  # the experiment actor is gone: nobody can collect this trial
            answer = {"cancel": True}
        first = None
        if answer.get("cancel") and kill_at is None and returncode is None:
            _signal_tree(process.pid, signal.SIGTERM)
            kill_at = time.monotonic() + float(args.get("grace", 3.0))
        if kill_at is not None and returncode is None and time.monotonic() >= kill_at:
            _signal_tree(process.pid, signal.SIGKILL)
        if returncode is not None and not more:
            return returncode
        if not more:
            # Wake at once when the trial ends, else at the next report.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=interval)
            interval = min(interval * 2, 0.2)


def _read_chunks(folder: str, offsets: dict[str, int]) -> tuple[dict[str, Any], bool]:
    """What each stream's file gained since ``offsets`` (advanced), as [offset, base64]."""
    chunks: dict[str, Any] = {}
    more = False
    for stream, name in STREAMS.items():
        try:
            with open(os.path.join(folder, name), "rb") as file:
                file.seek(offsets[stream])
                data = file.read(CHUNK_BYTES + 1)
        except FileNotFoundError:
            continue
        if len(data) > CHUNK_BYTES:
            data, more = data[:CHUNK_BYTES], True
        if data:
            chunks[stream] = [offsets[stream], base64.b64encode(data).decode("ascii")]
            offsets[stream] += len(data)
    return chunks, more


def _exit_info(folder: str, returncode: int) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, EXIT_CODE_FILE)) as file:
            code: int | None = int(file.read().strip())
    except (OSError, ValueError):
        code = None
    if code is None:
        if returncode < 0:
            return {"exitCode": None, "signal": -returncode, "message": None}
        return {"exitCode": returncode, "signal": None, "message": None}
    if code > 128:
        # bash reports a command killed by signal N as 128 + N.
        return {"exitCode": code, "signal": code - 128, "message": None}
    return {"exitCode": code, "signal": None, "message": None}


def _signal_tree(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` and every descendant of ``pid``.

    Descendants are found through /proc (standard library only), so that children which left
    the group go too.
    """
    descendants = _descendants(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for child in descendants:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, sig)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        # The name field may hold spaces and parentheses: the parent pid follows the last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def read_rest(folder: str, offsets: dict[str, int]) -> dict[str, Any]:
    """Everything each stream's file holds after ``offsets``, as [offset, base64]."""
    start = dict(offsets)
    gathered: dict[str, bytearray] = {stream: bytearray() for stream in STREAMS}
    while True:
        chunks, more = _read_chunks(folder, offsets)
        for stream, (_, text) in chunks.items():
            gathered[stream].extend(base64.b64decode(text))
        if not more:
            break
    return {
        stream: [start[stream], base64.b64encode(bytes(data)).decode("ascii")]
        for stream, data in gathered.items()
        if data
    }


def remove_experiment_folders(root: str | None, experiment_id: str | None) -> str:
    """Remove an experiment's trial folders from this node (every experiment's with None);
    returns the folder removed."""
    base = worker_trial_root(root)
    folder = base if experiment_id is None else os.path.join(base, experiment_id)
    shutil.rmtree(folder, ignore_errors=True)
    return folder


# -- the experiment actor -------------------------------------------------------------------


class _Trial:
    # TODO: the buffers grow while no manager collects them (a manager down for long, a trial
    # that prints a lot); cap them and leave the rest in the worker's files, fetched later.
    def __init__(self, launch_id: str) -> None:
        self.launch_id = launch_id
        self.ref: Any = None
        self.buffers: dict[str, list[Any]] = {s: [0, bytearray()] for s in STREAMS}
        self.info: dict[str, Any] | None = None
        self.exit: dict[str, Any] | None = None
        self.cancelled = False
        self.ended = asyncio.Event()
        self.watcher: asyncio.Future[None] | None = None


class ExperimentActor:
    """Owns an experiment's trial tasks and relays their output (an async Ray actor).

    The service creates it detached, named ``tunelab-<experiment id>``, with the
    experiment's runtime environment (the trial tasks inherit it), no CPU, and no restarts.
    """

    def __init__(self, experiment_id: str) -> None:
        import ray

        self._experiment_id = experiment_id
        self._trials: dict[str, _Trial] = {}
        self._task = ray.remote(run_trial)

    async def launch(
        self, trial_id: str, launch_id: str, options: dict[str, Any], args: dict[str, Any]
    ) -> None:
        """Submit the trial's task; Ray never retries it (a rerun is the engine's call)."""
        old = self._trials.get(trial_id)
        if old is not None and not old.ended.is_set():
            old.cancelled = True
        trial = self._trials[trial_id] = _Trial(launch_id)
        resources = {k: v for k, v in options.items() if v is not None}
        trial.ref = self._task.options(
            max_retries=0, retry_exceptions=False, name=f"tunelab trial {trial_id}", **resources
        ).remote(args)
        trial.watcher = asyncio.ensure_future(self._watch(trial))

    async def _watch(self, trial: _Trial) -> None:
        import ray

        try:
            trial.exit = await trial.ref
        except ray.exceptions.TaskCancelledError:
            trial.exit = _message("cancelled before it started")
        except ray.exceptions.RayError as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            trial.exit = _message(f"the Ray task of the trial failed: {first_line}")
            await self._salvage(trial)
        trial.ended.set()

    async def _salvage(self, trial: _Trial) -> None:
        """Fetch what a trial wrote after its task last reported, when the task died (its
        worker crashed or was killed): the files are still on the node."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if trial.info is None:
            return
        offsets = {stream: base + len(data) for stream, (base, data) in trial.buffers.items()}
        reader = ray.remote(read_rest).options(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(trial.info["node"], soft=False),
        )
        try:
            chunks = await asyncio.wait_for(reader.remote(trial.info["trialDir"], offsets), 30)
        except (ray.exceptions.RayError, asyncio.TimeoutError):
            return
        for stream, (_, text) in chunks.items():
            trial.buffers[stream][1].extend(base64.b64decode(text))

    def _get(self, trial_id: str, launch_id: str) -> _Trial | None:
        trial = self._trials.get(trial_id)
        return trial if trial is not None and trial.launch_id == launch_id else None

    async def push(
        self,
        trial_id: str,
        launch_id: str,
        chunks: dict[str, Any],
        info: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Take what a trial task read from its files; answer whether to cancel the trial."""
        trial = self._get(trial_id, launch_id)
        if trial is None:
            return {"cancel": True}  # a task of an attempt nobody waits for any more
        if info is not None:
            trial.info = info
        for stream, (offset, text) in chunks.items():
            buffer = trial.buffers[stream]
            raw = base64.b64decode(text)
            if not buffer[1] and offset > buffer[0]:
                buffer[0] = offset  # a stream that starts further on (earlier attempts' lines)
            end = buffer[0] + len(buffer[1])
            if offset < end:
                raw = raw[end - offset :]
            buffer[1].extend(raw)
        return {"cancel": trial.cancelled}

    async def poll(
        self, trial_id: str, launch_id: str, offsets: dict[str, int], limit: int
    ) -> dict[str, Any] | None:
        """What the manager has not written yet, from ``offsets`` (which also acknowledge
        everything before them); None for a trial this actor does not know."""
        trial = self._get(trial_id, launch_id)
        if trial is None:
            return None
        chunks: dict[str, Any] = {}
        more = False
        for stream, buffer in trial.buffers.items():
            base, data = buffer
            start = max(int(offsets.get(stream, 0)), base)
            del data[: start - base]
            buffer[0] = start
            piece = bytes(data[:limit])
            more = more or len(data) > limit
            chunks[stream] = [start, base64.b64encode(piece).decode("ascii")]
        return {
            "chunks": chunks,
            "more": more,
            "info": trial.info,
            "exit": trial.exit if trial.ended.is_set() else None,
        }

    async def wait(self, trial_id: str, launch_id: str) -> dict[str, Any] | None:
        """The trial's exit, once its task has returned."""
        trial = self._get(trial_id, launch_id)
        if trial is None:
            return None
        await trial.ended.wait()
        return trial.exit

    async def cancel(self, trial_id: str, launch_id: str, grace: float) -> None:
        """End the trial: its task kills the process tree at its next report; a task not
        started yet is dropped from Ray's queue; a task that does not answer is killed."""
        import ray

        trial = self._get(trial_id, launch_id)
        if trial is None or trial.ended.is_set():
            return
        trial.cancelled = True
        if trial.info is None:
            with contextlib.suppress(Exception):
                ray.cancel(trial.ref)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(trial.ended.wait(), grace + 5)
            return
        with contextlib.suppress(Exception):
            ray.cancel(trial.ref, force=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(trial.ended.wait(), 10)

    async def forget(self, trial_id: str, launch_id: str) -> None:
        """Drop a trial whose results the manager has collected."""
        if self._get(trial_id, launch_id) is not None:
            del self._trials[trial_id]

    async def status(self, trial_id: str) -> dict[str, Any] | None:
        trial = self._trials.get(trial_id)
        if trial is None:
            return None
        return {"launchId": trial.launch_id, "ended": trial.ended.is_set(), "info": trial.info}

    async def pending(self) -> list[str]:
        """The trials whose results nobody has collected yet (running or ended)."""
        return sorted(self._trials)

    async def stop_all(self, grace: float) -> None:
        """Cancel every running trial and wait until they have ended."""
        running = [(tid, t.launch_id) for tid, t in self._trials.items() if not t.ended.is_set()]
        await asyncio.gather(*(self.cancel(tid, launch, grace) for tid, launch in running))


def _message(text: str) -> dict[str, Any]:
    return {"exitCode": None, "signal": None, "message": text}
