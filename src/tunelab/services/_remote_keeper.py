"""The trial keeper: the remote training service's helper on an SSH host.

This file is uploaded to every host with the trial code (DESIGN.md rule 6) and run there with
the host's own Python 3 (3.8 or newer), so it uses the standard library only and imports
nothing from tunelab. The manager starts one keeper per host and experiment over its SSH
connection and talks to it through the keeper's stdin and stdout, one JSON object a line:

* requests ``{"id": n, "op": "launch" | "watch" | "kill" | "gpus" | "gpu_poll", ...}``, each
  answered by ``{"id": n, "ok": true, "result": ...}`` or ``{"id": n, "ok": false, "error":
  "..."}``;
* events the keeper sends by itself: ``{"event": "ready"}`` once, ``{"event": "metrics", "key":
  trial, "offset": int, "data": str}`` with the bytes a trial appended to its
  ``metrics.jsonl`` (latin-1 text, so any byte goes through JSON unchanged), ``{"event":
  "exit", "key": trial, "code": int | null, "returncode": int | null, "files": {...}}`` when a
  trial's supervisor has ended, and ``{"event": "gpus", "gpus": [...]}`` when asked to poll.

Each trial runs under the same bash supervisor as on the local service: it records its pid and
the command's exit code in the trial folder and leads a new session, so trials outlive the
keeper, the SSH connection and the manager. A keeper of a later manager finds them again by
pid and process start time (``watch``). Metrics are read here, where the file is, and pushed
to the manager as they are written: no port on the manager's machine needs to be reachable
from the host, and one trial costs one request and one event.

The keeper ends when its stdin closes (the manager disconnected); the trials go on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable, Tuple  # noqa: UP035 - the host's Python may be 3.8

PID_FILE = ".pid"
EXIT_CODE_FILE = ".exitcode"
METRICS_FILE = "metrics.jsonl"
PARAMETERS_FILE = "parameters.json"
LOG_FILES = ("trial.stdout", "trial.stderr")

# Logs up to this size travel inside the exit event; bigger ones the manager fetches by SFTP.
INLINE_LIMIT = 256 * 1024

# $1 is the trial command; the same supervisor as the local service's.
WRAPPER = (
    'printf "%s\\n" "$$" > "$TUNELAB_TRIAL_DIR/' + PID_FILE + '"\n'
    '/bin/bash -c "$1"\n'
    "code=$?\n"
    'printf "%s\\n" "$code" > "$TUNELAB_TRIAL_DIR/' + EXIT_CODE_FILE + '"\n'
    'exit "$code"\n'
)

# ppid, pgid, sid, state, start time (typing.Tuple: the host's Python may be 3.8)
_Row = Tuple[int, int, int, str, str]  # noqa: UP006


def process_table() -> dict[int, _Row]:
    """Every process this user can see: pid -> (ppid, pgid, sid, state, start time)."""
    table: dict[int, _Row] = {}
    if os.path.isdir("/proc/self"):
        for name in os.listdir("/proc"):
            if name.isdigit():
                row = _proc_row(int(name))
                if row is not None:
                    table[int(name)] = row
        return table
    try:
        text = subprocess.run(
            ["ps", "-A", "-o", "pid=", "-o", "ppid=", "-o", "pgid=", "-o", "stat="],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    except OSError:
        return table
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            pid, ppid, pgid = int(parts[0]), int(parts[1]), int(parts[2])
            table[pid] = (ppid, pgid, -1, parts[3][:1], "")
    return table


def _proc_row(pid: int) -> _Row | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            raw = file.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    fields = raw[raw.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return int(fields[1]), int(fields[2]), int(fields[3]), fields[0], fields[19]


def start_time(pid: int) -> str | None:
    """The process's start time as the system counts it, to tell a reused pid apart."""
    row = _proc_row(pid)
    if row is not None:
        return row[4]
    try:
        text = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return None
    return text or None


def same_process(pid: int, started: str | None) -> bool:
    """Whether ``pid`` is still the live (not zombie) process that started at ``started``."""
    row = _proc_row(pid)
    if row is not None:
        return row[3] != "Z" and (not started or row[4] == started)
    if os.path.isdir("/proc/self"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not started or start_time(pid) == started


def family(leader: int) -> dict[int, str]:
    """The trial's processes: its session and group, and every descendant of the leader (so a
    child that started a session of its own is found while its parent lives)."""
    table = process_table()
    found = {pid for pid, row in table.items() if leader in (row[1], row[2])}
    if leader in table:
        found.add(leader)
    children: dict[int, list[int]] = {}
    for pid, row in table.items():
        children.setdefault(row[0], []).append(pid)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return {pid: table[pid][4] for pid in found if pid in table}


def _signal_all(members: dict[int, str], leader: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)
    for pid, started in members.items():
        if same_process(pid, started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gpu_info(own_sessions: set[int]) -> list[dict[str, int]]:
    """The host's GPUs from nvidia-smi, each with its count of processes not run by these
    trials; none when nvidia-smi is missing or fails."""
    try:
        gpus = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        apps = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_gpu_info(gpus, apps, own_sessions)


def parse_gpu_info(gpus: str, apps: str, own_sessions: set[int]) -> list[dict[str, int]]:
    """Turn nvidia-smi's CSV answers into ``[{"index": i, "foreign": n}]``."""
    by_uuid: dict[str, dict[str, int]] = {}
    found: list[dict[str, int]] = []
    for line in gpus.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) >= 2 and parts[0].isdigit():
            entry = {"index": int(parts[0]), "foreign": 0}
            by_uuid[parts[1]] = entry
            found.append(entry)
    for line in apps.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 2 or parts[0] not in by_uuid or not parts[1].isdigit():
            continue
        try:
            session = os.getsid(int(parts[1]))
        except OSError:
            session = -1  # another user's process, or one that just ended: not ours
        if session not in own_sessions:
            by_uuid[parts[0]]["foreign"] += 1
    return found


class Trial:
    """One trial the keeper watches."""

    def __init__(
        self,
        key: str,
        folder: str,
        pid: int,
        started: str | None,
        process: subprocess.Popen[bytes] | None,
        offset: int,
    ) -> None:
        self.key = key
        self.folder = folder
        self.pid = pid
        self.started = started
        self.process = process
        self.offset = offset

    def ended(self) -> bool:
        if self.process is not None:
            return self.process.poll() is not None
        return not same_process(self.pid, self.started)


class Keeper:
    """Serves the manager's requests on stdin and watches the trials."""

    def __init__(self, lib_paths: list[str], poll: float, out: IO[str]) -> None:
        self.lib_paths = lib_paths
        self.poll = poll
        self.out = out
        self.out_lock = threading.Lock()
        self.trials: dict[str, Trial] = {}
        self.trials_lock = threading.Lock()
        self.gpu_interval: float | None = None
        self.next_gpu_poll = 0.0

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self.out_lock:
            self.out.write(line)
            self.out.flush()

    def serve(self, lines: IO[str]) -> None:
        threading.Thread(target=self.watch_loop, daemon=True).start()
        self.send({"event": "ready", "pid": os.getpid(), "python": list(sys.version_info[:3])})
        for line in lines:
            if not line.strip():
                continue
            request = json.loads(line)
            handler: Callable[[dict[str, Any]], Any] | None = getattr(
                self, "op_" + str(request.get("op")), None
            )
            if request.get("op") == "kill":
                threading.Thread(target=self.answer, args=(request, handler), daemon=True).start()
            else:
                self.answer(request, handler)

    def answer(
        self, request: dict[str, Any], handler: Callable[[dict[str, Any]], Any] | None
    ) -> None:
        try:
            if handler is None:
                raise ValueError(f"unknown request {request.get('op')!r}")
            reply = {"id": request.get("id"), "ok": True, "result": handler(request)}
        except Exception as error:
            reply = {"id": request.get("id"), "ok": False, "error": f"{error}"}
        self.send(reply)

    # -- requests --------------------------------------------------------------------------

    def op_launch(self, request: dict[str, Any]) -> dict[str, Any]:
        folder = request["dir"]
        os.makedirs(folder, exist_ok=True)
        for stale in (PID_FILE, EXIT_CODE_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, stale))
        _write_atomically(os.path.join(folder, PARAMETERS_FILE), request["parameters"])

        env = dict(os.environ)
        path = [*self.lib_paths, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(part for part in path if part)
        env.update(request["env"])
        # An ExitStack, not a parenthesized "with": the host's Python may be 3.8.
        with contextlib.ExitStack() as files:
            stdout = files.enter_context(open(os.path.join(folder, LOG_FILES[0]), "ab"))
            stderr = files.enter_context(open(os.path.join(folder, LOG_FILES[1]), "ab"))
            process = subprocess.Popen(
                ["/bin/bash", "-c", WRAPPER, "tunelab-trial", request["command"]],
                cwd=request["cwd"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        started = start_time(process.pid)
        with self.trials_lock:
            self.trials[request["key"]] = Trial(
                request["key"], folder, process.pid, started, process, 0
            )
        return {"pid": process.pid, "start": started}

    def op_watch(self, request: dict[str, Any]) -> dict[str, Any]:
        folder, pid, started = request["dir"], int(request["pid"]), request.get("start")
        running = same_process(pid, started)
        if not running and not os.path.exists(os.path.join(folder, EXIT_CODE_FILE)):
            return {"found": False}
        with self.trials_lock:
            known = self.trials.get(request["key"])
            if known is not None and known.pid == pid:
                known.offset = min(known.offset, int(request.get("offset", 0)))
            else:
                self.trials[request["key"]] = Trial(
                    request["key"], folder, pid, started, None, int(request.get("offset", 0))
                )
        return {"found": True, "running": running}

    def op_kill(self, request: dict[str, Any]) -> dict[str, Any]:
        leader, started = int(request["pid"]), request.get("start")
        grace = float(request.get("grace", 3.0))
        if not same_process(leader, started) and not _group_alive(leader):
            return {"signalled": False}
        members = family(leader)
        _signal_all(members, leader, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            alive = any(same_process(pid, when) for pid, when in members.items())
            if not alive and not _group_alive(leader):
                return {"signalled": True}
            time.sleep(0.05)
        members.update(family(leader))
        _signal_all(members, leader, signal.SIGKILL)
        return {"signalled": True}

    def op_gpus(self, request: dict[str, Any]) -> list[dict[str, int]]:
        with self.trials_lock:
            sessions = {trial.pid for trial in self.trials.values()}
        return gpu_info(sessions)

    def op_gpu_poll(self, request: dict[str, Any]) -> None:
        interval = request.get("interval")
        self.gpu_interval = float(interval) if interval else None
        self.next_gpu_poll = time.monotonic() + (self.gpu_interval or 0)

    # -- watching --------------------------------------------------------------------------

    def watch_loop(self) -> None:
        while True:
            with self.trials_lock:
                trials = list(self.trials.values())
            for trial in trials:
                try:
                    self.watch_one(trial)
                except Exception as error:  # one odd trial folder must not stop the others
                    sys.stderr.write(f"tunelab keeper: trial {trial.key}: {error}\n")
                    sys.stderr.flush()
            if self.gpu_interval and time.monotonic() >= self.next_gpu_poll:
                self.next_gpu_poll = time.monotonic() + self.gpu_interval
                self.send({"event": "gpus", "gpus": self.op_gpus({})})
            time.sleep(self.poll)

    def watch_one(self, trial: Trial) -> None:
        ended = trial.ended()
        self.forward_metrics(trial, whole=False)
        if not ended:
            return
        # The supervisor has ended: whatever it left running in its group goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(trial.pid, signal.SIGKILL)
        self.forward_metrics(trial, whole=True)
        code: int | None
        try:
            with open(os.path.join(trial.folder, EXIT_CODE_FILE)) as file:
                code = int(file.read().strip())
        except (OSError, ValueError):
            code = None
        returncode = trial.process.returncode if trial.process is not None else None
        with self.trials_lock:
            if self.trials.get(trial.key) is trial:
                del self.trials[trial.key]
        self.send(
            {
                "event": "exit",
                "key": trial.key,
                "code": code,
                "returncode": returncode,
                "files": {name: _inline(os.path.join(trial.folder, name)) for name in LOG_FILES},
            }
        )

    def forward_metrics(self, trial: Trial, whole: bool) -> None:
        path = os.path.join(trial.folder, METRICS_FILE)
        try:
            size = os.path.getsize(path)
        except OSError:
            return
        if size <= trial.offset:
            return
        with open(path, "rb") as file:
            file.seek(trial.offset)
            data = file.read(size - trial.offset)
        if not whole:
            data = data[: data.rfind(b"\n") + 1]  # a line being written waits for its end
        if data:
            self.send(
                {
                    "event": "metrics",
                    "key": trial.key,
                    "offset": trial.offset,
                    "data": data.decode("latin-1"),
                }
            )
            trial.offset += len(data)


def _inline(path: str) -> str | None:
    """A log file's bytes as latin-1 text, "" when missing, None when too big to inline."""
    try:
        if os.path.getsize(path) > INLINE_LIMIT:
            return None
        with open(path, "rb") as file:
            return file.read().decode("latin-1")
    except FileNotFoundError:
        return ""


def _write_atomically(path: str, record: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump(record, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    """``python3 tunelab_keeper.py '{"lib": [...], "poll": 0.1}'``"""
    options = json.loads(argv[1]) if len(argv) > 1 else {}
    keeper = Keeper(list(options.get("lib", [])), float(options.get("poll", 0.1)), sys.stdout)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        keeper.serve(sys.stdin)
    # The watcher thread may be writing; the trials are not ours to wait for.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
