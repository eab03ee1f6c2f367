"""Hybrid: several training services in one experiment (``trainingService: [..., ...]``).

Each trial goes to the service that can take it and runs the fewest of this experiment's
trials at that moment, so trials spread over the services by free capacity; a service that
cannot take a trial (no free GPU, host unreachable, cluster full) is skipped with its reason,
and when none can, the trial waits with every service's reason. The hybrid service keeps no
state of its own beyond which service runs which trial: a handle's state records the service's
position in the list, so a restarted manager re-attaches each trial through the service that
started it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tunelab.services._base import Placement, TrainingService, TrialExit, TrialHandle, TrialSpec
from tunelab.services._factory import register_hybrid

__all__ = ["HybridTrainingService"]


class _HybridHandle(TrialHandle):
    def __init__(self, inner: TrialHandle, index: int) -> None:
        super().__init__(inner.spec, inner.placement)
        self.inner = inner
        self.index = index

    def state(self) -> dict[str, Any]:
        return {"service": self.index, "state": self.inner.state()}


class HybridTrainingService(TrainingService):
    """Spreads trials over several training services; see the module docstring."""

    platform = "hybrid"

    def __init__(self, services: list[TrainingService]) -> None:
        self.services = services
        self._running = [0] * len(services)
        self._placed: dict[str, int] = {}

    async def start(self) -> None:
        await asyncio.gather(*(service.start() for service in self.services))

    async def close(self) -> None:
        await asyncio.gather(*(service.close() for service in self.services))

    def check_feasible(self, gpu_number: int | None) -> None:
        # Feasible if any one service can ever run such a trial.
        errors = []
        for service in self.services:
            try:
                service.check_feasible(gpu_number)
                return
            except Exception as error:  # each service raises its own ConfigError
                errors.append(error)
        if errors:
            raise errors[0]

    def place(self, spec: TrialSpec) -> Placement | str:
        order = sorted(range(len(self.services)), key=lambda i: (self._running[i], i))
        reasons = []
        for index in order:
            service = self.services[index]
            placement = service.place(spec)
            if isinstance(placement, Placement):
                self._placed[spec.trial_id] = index
                return placement
            reasons.append(f"{service.platform}: {placement}")
        return "waiting: " + "; ".join(reason.replace("waiting: ", "") for reason in reasons)

    async def launch(self, spec: TrialSpec, placement: Placement) -> TrialHandle:
        index = self._placed.pop(spec.trial_id)
        service = self.services[index]
        inner = await service.launch(spec, placement)
        self._running[index] += 1
        return _HybridHandle(inner, index)

    def note(self, handle: TrialHandle) -> str | None:
        assert isinstance(handle, _HybridHandle)
        return self.services[handle.index].note(handle.inner)

    async def wait(self, handle: TrialHandle) -> TrialExit:
        assert isinstance(handle, _HybridHandle)
        try:
            return await self.services[handle.index].wait(handle.inner)
        finally:
            self._running[handle.index] -= 1

    async def read_metrics(self, handle: TrialHandle) -> list[dict[str, Any]]:
        assert isinstance(handle, _HybridHandle)
        return await self.services[handle.index].read_metrics(handle.inner)

    async def cancel(self, handle: TrialHandle) -> None:
        assert isinstance(handle, _HybridHandle)
        await self.services[handle.index].cancel(handle.inner)

    async def reattach(
        self, spec: TrialSpec, placement: Placement, state: dict[str, Any]
    ) -> TrialHandle | None:
        index = state.get("service")
        if not isinstance(index, int) or not 0 <= index < len(self.services):
            return None
        inner = await self.services[index].reattach(spec, placement, state.get("state") or {})
        if inner is None:
            return None
        self._running[index] += 1
        return _HybridHandle(inner, index)

    async def cleanup(self, experiment_id: str | None) -> None:
        await asyncio.gather(*(service.cleanup(experiment_id) for service in self.services))


register_hybrid(lambda services, config: HybridTrainingService(services))
