"""The local training service: trials as processes on this machine.

Each trial runs under a tiny supervisor, a bash wrapper that records its own pid, runs the
trial command with bash (as NNI does) and writes the command's exit code to the trial folder,
so that the exit code survives a manager that died meanwhile. The wrapper leads a new process
group; cancelling a trial ends that group and every descendant found by walking the process
tree, so children that left the group end too. A bash wrapper rather than a Python one keeps
the cost per trial to about a millisecond on top of the trial's own start-up.

stdout and stderr go straight to ``trial.stdout`` and ``trial.stderr`` in the trial folder;
metrics are read from the trial's ``metrics.jsonl`` (see :mod:`tunelab.trial`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil

from tunelab.compat import nni_path
from tunelab.services._base import Placement, TrainingService, TrialExit, TrialHandle, TrialSpec
from tunelab.services._gpu import GpuProbe, GpuScheduler, nvml_probe
from tunelab.trial import METRICS_FILE, PARAMETERS_FILE, read_metrics

__all__ = ["LocalTrainingService"]

PID_FILE = ".pid"
EXIT_CODE_FILE = ".exitcode"
STDOUT_FILE = "trial.stdout"
STDERR_FILE = "trial.stderr"

# $1 is the trial command. The exit code is written with a shell builtin (no extra process).
_WRAPPER = (
    'printf "%s\\n" "$$" > "$TUNELAB_TRIAL_DIR/' + PID_FILE + '"\n'
    '/bin/bash -c "$1"\n'
    "code=$?\n"
    'printf "%s\\n" "$code" > "$TUNELAB_TRIAL_DIR/' + EXIT_CODE_FILE + '"\n'
    'exit "$code"\n'
)


class _LocalHandle(TrialHandle):
    def __init__(self, spec: TrialSpec, placement: Placement) -> None:
        super().__init__(spec, placement)
        self.process: asyncio.subprocess.Process | None = None
        self.metrics_offset = 0


def trial_environment(spec: TrialSpec, platform: str) -> dict[str, str]:
    """The variables a trial process sees, tunelab's and NNI's names alike."""
    trial_dir = str(spec.trial_dir)
    env = {
        "TUNELAB_PLATFORM": platform,
        "TUNELAB_EXPERIMENT_ID": spec.experiment_id,
        "TUNELAB_TRIAL_ID": spec.trial_id,
        "TUNELAB_SEQUENCE_ID": str(spec.sequence),
        "TUNELAB_TRIAL_DIR": trial_dir,
        "NNI_PLATFORM": platform,
        "NNI_EXP_ID": spec.experiment_id,
        "NNI_TRIAL_JOB_ID": spec.trial_id,
        "NNI_TRIAL_SEQ_ID": str(spec.sequence),
        "NNI_SYS_DIR": trial_dir,
        "NNI_OUTPUT_DIR": trial_dir,
        "NNI_CODE_DIR": str(spec.code_dir),
    }
    env.update(spec.env)
    return env


def write_parameters(spec: TrialSpec) -> None:
    """Write the trial's parameters file atomically, before its process starts."""
    record = {
        "parameter_id": spec.sequence,
        "parameter_source": spec.parameter_source,
        "parameters": spec.parameters,
    }
    path = spec.trial_dir / PARAMETERS_FILE
    tmp = path.with_name(PARAMETERS_FILE + ".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def kill_tree(pid: int, sig: int) -> None:
    """Send ``sig`` to a process, its process group and all its descendants."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        children = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.send_signal(sig)


class LocalTrainingService(TrainingService):
    """Runs trials as subprocesses of the manager.

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
        write_parameters(spec)

        env = dict(self._base_env)
        env.update(trial_environment(spec, self.platform))
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
                    spec.command,
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
        return handle

    async def wait(self, handle: TrialHandle) -> TrialExit:
        assert isinstance(handle, _LocalHandle) and handle.process is not None
        returncode = await handle.process.wait()
        # The trial has ended: whatever it left running in its group goes with it.
        kill_tree(handle.process.pid, signal.SIGKILL)
        self._release(handle)
        return exit_from_files(handle.spec.trial_dir, returncode)

    def read_metrics(self, handle: TrialHandle) -> list[dict[str, Any]]:
        assert isinstance(handle, _LocalHandle)
        path = handle.spec.trial_dir / METRICS_FILE
        if not path.exists():
            return []
        records, handle.metrics_offset = read_metrics(path, handle.metrics_offset)
        return records

    async def cancel(self, handle: TrialHandle) -> None:
        assert isinstance(handle, _LocalHandle)
        process = handle.process
        if process is None or process.returncode is not None:
            return
        kill_tree(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), self._kill_grace)
        except asyncio.TimeoutError:
            kill_tree(process.pid, signal.SIGKILL)

    def _release(self, handle: TrialHandle) -> None:
        if handle.placement.gpu_indices:
            self._gpus.release(handle.placement.gpu_indices)
            handle.placement.gpu_indices = []


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
