"""The contract between the engine and a training service.

A training service starts trial processes somewhere (this machine, SSH hosts, a Ray cluster),
reports how each one ended, gives the engine the metrics each trial wrote, and ends whole
process trees on request. It decides nothing else: which trial runs, when, how often and what
its state is are the engine's decisions (DESIGN.md rule 1).

Who calls what, and when (all on the manager's event loop; a method that does blocking I/O
must be ``async`` or run it in an executor):

1. ``check_feasible(gpu_number)`` at creation, before ``start``: it raises
   :class:`~tunelab.errors.ConfigError` for a request that can never be met (GPUs asked for
   where there are none), so that a trial never waits for ever.
2. ``start()`` once, before any trial (connect, upload the code); ``close()`` once at the
   end, after every trial has ended or been handed back (a manager that stops leaves nothing
   behind; a manager that is killed leaves its trials running, to be re-attached).
3. For a trial the engine wants to run: ``place(spec)`` returns a :class:`Placement` (the
   resources are then held for that trial) or a string, the reason it must wait, shown to
   the user (``"waiting: no free GPU (2 of 2 in use)"``, ``"host b unreachable, retrying in
   10 s"``). The engine asks again when a trial ends and at its regular ticks.
4. ``launch(spec, placement)`` writes the trial's parameters where the trial reads them, then
   starts the trial under its supervisor and returns a handle. It raises ``OSError`` if the
   trial could not be started; the engine marks that trial FAILED with the message.
   ``handle.state()`` is a JSON-able dict that the engine stores at once: it is what
   ``reattach`` needs to find the trial again after a manager restart.
5. ``wait(handle)`` returns a :class:`TrialExit` once the trial's process has ended, and only
   then; the service frees the placement before it returns, and by then the trial's
   ``trial.stdout``, ``trial.stderr`` and ``metrics.jsonl`` are in ``spec.trial_dir`` on the
   manager's machine (a remote service copies them back).
6. ``read_metrics(handle)`` returns the metric records written since the previous call, in
   file order (never the same record twice within one handle's life; across restarts the
   engine drops repeats by their ``seq``).
7. ``cancel(handle)`` ends the trial's whole process tree (a polite signal, then a kill after a
   grace period); ``wait`` then returns as usual.
8. ``reattach(spec, placement, state)`` after a manager restart, for each trial the store says
   was running: returns a handle if the trial still runs or has ended with its exit code
   recorded (``wait`` then returns at once), holding its placement again; returns None when
   nothing of it is left, and the engine runs it again. ``read_metrics`` on a re-attached
   handle starts from the beginning of the metrics file.
9. ``cleanup(experiment_id)`` when an experiment is deleted: removes what the service left
   elsewhere (remote folders). The local folders are the engine's to remove. ``None`` (``tunelab
   platform clean``) removes what every tunelab experiment left on the platform.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The trial's output files in ``spec.trial_dir`` (rule 5): every service leaves them there.
STDOUT_FILE = "trial.stdout"
STDERR_FILE = "trial.stderr"

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
    """Resources held for one trial: where it runs, and the GPU indices it may use (None: no
    GPU scheduling; [] : no GPU visible)."""

    gpu_indices: list[int] | None = None
    host: str = "local"

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "gpuIndices": self.gpu_indices}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Placement:
        data = data or {}
        indices = data.get("gpuIndices")
        return cls(
            gpu_indices=None if indices is None else [int(i) for i in indices],
            host=str(data.get("host", "local")),
        )


@dataclass
class TrialExit:
    """How a trial's process ended: an exit code, or the signal that killed it."""

    exit_code: int | None
    signal: int | None = None
    message: str | None = None

    def describe(self) -> str:
        if self.message:
            return self.message
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

    def state(self) -> dict[str, Any]:
        """What ``reattach`` needs to find this trial again (JSON values only)."""
        return {}


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
    async def read_metrics(self, handle: TrialHandle) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def cancel(self, handle: TrialHandle) -> None: ...

    async def reattach(
        self, spec: TrialSpec, placement: Placement, state: dict[str, Any]
    ) -> TrialHandle | None:
        """Find a trial started by an earlier manager; None when nothing of it is left."""
        return None

    def note(self, handle: TrialHandle) -> str | None:
        """Why a running trial cannot be followed now (its host is unreachable, say), for a
        person to read beside its state; None while all is well."""
        return None

    async def cleanup(self, experiment_id: str | None) -> None:  # noqa: B027 - optional hook
        """Remove what this service left outside the experiment's folder."""
