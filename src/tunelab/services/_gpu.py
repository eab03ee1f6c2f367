"""GPU placement: which GPUs a trial may use, or why it must wait.

The rules are NNI's (trialGpuNumber, gpuIndices, maxTrialNumberPerGpu, useActiveGpu), with its
off-by-one fixed: asking for all the GPUs a machine has is allowed. GPUs are found through a
*probe* (a callable returning :class:`GpuInfo` records) so that the logic is tested without a
GPU; the default probe asks nvidia-ml-py when it is installed and finds none otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tunelab.errors import ConfigError, Issue

__all__ = ["GpuInfo", "GpuProbe", "GpuScheduler", "nvml_probe"]


@dataclass(frozen=True)
class GpuInfo:
    """One GPU: its index and how many processes not started by this experiment use it."""

    index: int
    foreign_processes: int = 0


GpuProbe = Callable[[], Sequence[GpuInfo]]


def nvml_probe() -> list[GpuInfo]:
    """The GPUs that NVIDIA's management library sees; none without the library or a GPU."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # the library raises its own error types when no driver is present
        return []
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            found.append(GpuInfo(index, len(processes)))
        return found
    finally:
        pynvml.nvmlShutdown()


class GpuScheduler:
    """Hands out GPUs to trials.

    Args:
        probe: finds the GPUs and their foreign processes.
        gpu_indices: the GPUs trials may use (None: all).
        max_trials_per_gpu: how many of this experiment's trials may share one GPU.
        use_active_gpu: whether a GPU that runs someone else's process may be used.
    """

    def __init__(
        self,
        probe: GpuProbe,
        gpu_indices: Sequence[int] | None = None,
        max_trials_per_gpu: int = 1,
        use_active_gpu: bool | None = None,
    ) -> None:
        self._probe = probe
        self._allowed = None if gpu_indices is None else list(gpu_indices)
        self._per_gpu = max_trials_per_gpu
        self._use_active = bool(use_active_gpu)
        self._in_use: dict[int, int] = {}

    def _usable(self) -> list[GpuInfo]:
        gpus = list(self._probe())
        if self._allowed is not None:
            gpus = [gpu for gpu in gpus if gpu.index in self._allowed]
        return gpus

    def check_feasible(self, gpu_number: int | None) -> None:
        if not gpu_number:
            return
        gpus = self._usable()
        if len(gpus) < gpu_number:
            where = "trialGpuNumber"
            if self._allowed is not None:
                seen = "gpuIndices " + ",".join(map(str, self._allowed))
            else:
                seen = f"this machine has {len(gpus)} GPU{'s' if len(gpus) != 1 else ''}"
            raise ConfigError(
                Issue(
                    where,
                    f"asks for {gpu_number} GPU(s) per trial but {seen} usable",
                    gpu_number,
                    "lower trialGpuNumber, or leave it unset to run without GPU scheduling",
                )
            )

    def acquire(self, gpu_number: int) -> list[int] | str:
        """GPU indices for a trial needing ``gpu_number`` GPUs, or the reason it must wait."""
        gpus = self._usable()
        free, busy_foreign = [], 0
        for gpu in gpus:
            if self._in_use.get(gpu.index, 0) >= self._per_gpu:
                continue
            if gpu.foreign_processes and not self._use_active:
                busy_foreign += 1
                continue
            free.append(gpu.index)
        if len(free) < gpu_number:
            reason = f"waiting: needs {gpu_number} free GPU(s), {len(free)} of {len(gpus)} free"
            if busy_foreign:
                reason += f"; {busy_foreign} busy with other processes (useActiveGpu is false)"
            return reason
        # Fill the least-loaded GPUs first so that shared GPUs even out.
        chosen = sorted(free, key=lambda index: (self._in_use.get(index, 0), index))
        chosen = chosen[:gpu_number]
        for index in chosen:
            self._in_use[index] = self._in_use.get(index, 0) + 1
        return sorted(chosen)

    def hold(self, indices: Sequence[int]) -> None:
        """Count GPUs as used by a trial again (a trial re-attached after a restart)."""
        for index in indices:
            self._in_use[index] = self._in_use.get(index, 0) + 1

    def release(self, indices: Sequence[int]) -> None:
        for index in indices:
            left = self._in_use.get(index, 0) - 1
            if left > 0:
                self._in_use[index] = left
            else:
                self._in_use.pop(index, None)
