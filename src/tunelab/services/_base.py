"""The contract between the engine and a training service.

A training service starts trial processes somewhere (this machine, SSH hosts, a Ray cluster),
reports how each one ended, gives the engine the metrics each trial wrote, and ends whole
process trees on request. It decides nothing else: which trial runs, when, how often and what
its state is are the engine's decisions (DESIGN.md rule 1).

Who calls what, and when:

1. ``start()`` once, before anything else; ``close()`` once at the end, after every trial has
   ended. ``check_feasible(gpu_number)`` at creation, before ``start``: it raises
   :class:`~tunelab.errors.ConfigError` for a request that can never be met (GPUs asked for
   where there are none), so that a trial never waits for ever.
2. For a trial the engine wants to run: ``place(spec)`` returns a :class:`Placement` (the
   resources are then held for that trial) or a string, the reason it must wait (shown to the
   user, for instance ``"waiting: no free GPU (2 of 2 in use)"``). The engine asks again when
   a trial ends.
3. ``launch(spec, placement)`` writes the trial's parameters where the trial reads them, then
   starts the trial's process and returns a handle. It raises ``OSError`` if the process could
   not be started; the engine marks that trial FAILED with the message.
4. ``wait(handle)`` returns a :class:`TrialExit` once the trial's process has ended, and only
   then; the service frees the placement before it returns. ``read_metrics(handle)`` returns
   the metric records written since the previous call (never the same record twice within
   one manager's life; across restarts the engine drops repeats by line number).
5. ``cancel(handle)`` ends the trial's whole process tree (a polite signal, then a kill after a
   grace period); ``wait`` then returns as usual.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Placement", "TrainingService", "TrialExit", "TrialHandle", "TrialSpec"]


@dataclass
class TrialSpec:
    """Everything a service needs to run one trial."""

    experiment_id: str
    trial_id: str
    sequence: int
    command: str
    code_dir: Path
    trial_dir: Path
    parameters: dict[str, Any]
    parameter_source: str = "algorithm"
    gpu_number: int | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Placement:
    """Resources held for one trial: the GPU indices it may use (None: no GPU scheduling)."""

    gpu_indices: list[int] | None = None
    host: str = "local"

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "gpuIndices": self.gpu_indices}


@dataclass
class TrialExit:
    """How a trial's process ended: an exit code, or the signal that killed it."""

    exit_code: int | None
    signal: int | None = None

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        if self.exit_code is None:
            return "process vanished without an exit code"
        return f"exit code {self.exit_code}"


class TrialHandle:
    """A running trial, as the service that started it knows it."""

    def __init__(self, spec: TrialSpec, placement: Placement) -> None:
        self.spec = spec
        self.placement = placement


class TrainingService(abc.ABC):
    """Base class of training services; see the module docstring for the contract."""

    platform: str = ""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare the service (connect, upload code)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``start`` acquired."""

    def check_feasible(self, gpu_number: int | None) -> None:  # noqa: B027 - optional hook
        """Raise ConfigError if a trial asking for ``gpu_number`` GPUs could never run."""

    @abc.abstractmethod
    def place(self, spec: TrialSpec) -> Placement | str: ...

    @abc.abstractmethod
    async def launch(self, spec: TrialSpec, placement: Placement) -> TrialHandle: ...

    @abc.abstractmethod
    async def wait(self, handle: TrialHandle) -> TrialExit: ...

    @abc.abstractmethod
    def read_metrics(self, handle: TrialHandle) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def cancel(self, handle: TrialHandle) -> None: ...
