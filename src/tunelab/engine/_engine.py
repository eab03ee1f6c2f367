"""The experiment loop: trial states, scheduling, budgets.

The engine owns the loop and every piece of bookkeeping (DESIGN.md rule 1): it asks the tuner
for parameters when a slot is free, asks the training service to place and start the trial,
collects metrics, decides each trial's final state, and moves the experiment through
RUNNING, NO_MORE_TRIAL and DONE. Each change is committed to the store before it is acted on
(rule 3). Tuner calls run in one worker thread, in order, so a slow model fit never stalls the
HTTP API that shares this event loop (rule 5).

Budgets (rule 10): ``maxTrialNumber`` counts distinct trials; ``maxExperimentDuration`` counts
the time the experiment was running. Once either is reached, no trial is started; the
experiment is NO_MORE_TRIAL while trials still run, and DONE once the last one has ended. A
tuner with nothing left to suggest leads to DONE the same way.

Waiting is scaled by ``TUNELAB_TIME_SCALE`` (default 1): with 0.01, a ``maxTrialDuration`` of
10m lasts 6 s. Tests use it so that durations and deadlines cost little wall time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tunelab.engine import _states as st
from tunelab.errors import NoMoreTrials
from tunelab.services import Placement, TrainingService, TrialExit, TrialHandle, TrialSpec
from tunelab.store import ExperimentStore, MetricRecord, TrialRecord, new_trial_id
from tunelab.tuners import Tuner

__all__ = ["Engine", "EngineSettings", "time_scale"]

logger = logging.getLogger("tunelab.engine")
T = TypeVar("T")

_METRIC_POLL_SECONDS = 0.5
_CLOCK_SAVE_SECONDS = 5.0


def time_scale() -> float:
    """The factor applied to every configured duration (``TUNELAB_TIME_SCALE``, default 1)."""
    try:
        scale = float(os.environ.get("TUNELAB_TIME_SCALE", "1"))
    except ValueError:
        return 1.0
    return scale if scale > 0 and math.isfinite(scale) else 1.0


def format_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass
class EngineSettings:
    """The parts of an experiment config that the engine acts on; some change while running."""

    trial_command: str
    code_dir: Path
    concurrency: int
    gpu_number: int | None = None
    max_trials: int | None = None
    max_duration: float | None = None
    max_trial_duration: float | None = None
    optimize_mode: str = "maximize"


@dataclass
class _Live:
    record: TrialRecord
    handle: TrialHandle | None = None
    waiting_reason: str | None = None
    deadline: float | None = None
    end_state: tuple[str, str] | None = None  # set when the engine itself ends the trial
    task: asyncio.Task[None] | None = None
    steps: int = 0
    final_seen: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Engine:
    """Runs one experiment to its end.

    Args:
        experiment_id: the experiment's id.
        exp_dir: the experiment's folder (trials go in ``trials/<trial id>/``).
        settings: what to run and the budgets.
        store: the experiment's store, open for writing.
        service: the training service.
        tuner: the tuner, with the search space already given to it.
    """

    def __init__(
        self,
        experiment_id: str,
        exp_dir: Path,
        settings: EngineSettings,
        store: ExperimentStore,
        service: TrainingService,
        tuner: Tuner,
    ) -> None:
        self.experiment_id = experiment_id
        self.exp_dir = exp_dir
        self.settings = settings
        self.store = store
        self.service = service
        self.tuner = tuner
        self.scale = time_scale()
        self.status = st.INITIALIZED
        self.errors: list[str] = []
        self._live: dict[int, _Live] = {}
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._tuner_exhausted = False
        self._tuner_pool = concurrent.futures.ThreadPoolExecutor(1, "tunelab-tuner")
        info = store.experiment()
        self._next_sequence: int = info["next_sequence"]
        self._used_base: float = info["used_seconds"]
        self._clock_start: float | None = None
        self._last_clock_save = 0.0
        self._submitted = sum(store.count_trials().values())
        self._finished = asyncio.Event()
        self._pending_error: Exception | None = None

    # -- public ----------------------------------------------------------------------------

    async def run(self) -> str:
        """Run until the experiment is DONE, STOPPED or in ERROR; return that state."""
        now = time.time()
        with self.store.transaction():
            self.store.update_experiment(status=st.RUNNING, start_time=now, end_time=None)
            self.store.add_event("experiment_started")
        self.status = st.RUNNING
        self._clock_start = time.monotonic()
        logger.info("Experiment %s running", self.experiment_id)
        try:
            await self._loop()
        except Exception as error:  # a bug or a tuner failure must not leave trials running
            logger.exception("Experiment %s failed", self.experiment_id)
            await self._fail(f"{type(error).__name__}: {error}")
        finally:
            self._tuner_pool.shutdown(wait=False)
            self._finished.set()
        return self.status

    async def stop(self) -> None:
        """End every trial (USER_CANCELED) and the experiment (STOPPED)."""
        if self._finished.is_set():
            return
        self._stop_requested = True
        self._wake.set()
        await self._finished.wait()

    def used_seconds(self) -> float:
        if self._clock_start is None:
            return self._used_base
        return self._used_base + (time.monotonic() - self._clock_start)

    def waiting_reasons(self) -> dict[int, str]:
        return {
            seq: live.waiting_reason for seq, live in self._live.items() if live.waiting_reason
        }

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            if self._pending_error is not None:
                raise self._pending_error
            if self._stop_requested:
                await self._cancel_all(st.USER_CANCELED, "experiment stopped")
                self._set_status(st.STOPPED)
                return
            self._check_trial_deadlines()
            await self._collect_running_metrics()
            await self._fill_slots()
            if not self._can_submit() and not self._live:
                self._set_status(st.DONE)
                return
            if not self._can_submit() and self.status == st.RUNNING:
                self._set_status(st.NO_MORE_TRIAL)
            self._save_clock()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sleep_time())
            self._wake.clear()

    def _sleep_time(self) -> float:
        wait = _METRIC_POLL_SECONDS
        now = time.monotonic()
        if self.settings.max_duration is not None and self.status == st.RUNNING:
            wait = min(wait, max(0.0, self._duration_limit() - self.used_seconds()))
        for live in self._live.values():
            if live.deadline is not None:
                wait = min(wait, max(0.0, live.deadline - now))
        return max(wait, 0.005)

    def _duration_limit(self) -> float:
        assert self.settings.max_duration is not None
        return self.settings.max_duration * self.scale

    def _can_submit(self) -> bool:
        if self._tuner_exhausted:
            return False
        limit = self.settings.max_trials
        if limit is not None and self._submitted >= limit:
            return False
        if self.settings.max_duration is not None:
            return self.used_seconds() < self._duration_limit()
        return True

    async def _fill_slots(self) -> None:
        # Trials already waiting for resources go first, in order.
        for live in sorted(self._live.values(), key=lambda item: item.record.sequence):
            if live.handle is None and live.task is None:
                await self._try_start(live)
        while self._can_submit() and len(self._live) < self.settings.concurrency:
            if any(live.handle is None for live in self._live.values()):
                return  # something is waiting for resources; don't queue more behind it
            sequence = self._next_sequence
            try:
                parameters = await self._call_tuner(self.tuner.suggest, sequence)
            except NoMoreTrials:
                self._tuner_exhausted = True
                logger.info("Experiment %s: the tuner has nothing left", self.experiment_id)
                self.store.add_event("tuner_no_more_trials")
                return
            live = self._add_trial(sequence, parameters, "algorithm")
            await self._try_start(live)

    def _add_trial(self, sequence: int, parameters: dict[str, Any], source: str) -> _Live:
        record = TrialRecord(
            sequence=sequence,
            trial_id=new_trial_id(),
            status=st.WAITING,
            parameters=parameters,
            source=source,
            submit_time=time.time(),
        )
        with self.store.transaction():
            self.store.add_trial(record)
            self._next_sequence = sequence + 1
            self.store.update_experiment(next_sequence=self._next_sequence)
        self._submitted += 1
        live = _Live(record)
        self._live[sequence] = live
        return live

    async def _try_start(self, live: _Live) -> None:
        record = live.record
        spec = self._spec(record)
        placement = self.service.place(spec)
        if isinstance(placement, str):
            if placement != live.waiting_reason:
                live.waiting_reason = placement
                self.store.update_trial(record.sequence, reason=placement)
                logger.info("Trial %s %s", record.trial_id, placement)
            return
        live.waiting_reason = None
        await self._launch(live, spec, placement)

    def _spec(self, record: TrialRecord) -> TrialSpec:
        return TrialSpec(
            experiment_id=self.experiment_id,
            trial_id=record.trial_id,
            sequence=record.sequence,
            command=self.settings.trial_command,
            code_dir=self.settings.code_dir,
            trial_dir=self.exp_dir / "trials" / record.trial_id,
            parameters=record.parameters,
            parameter_source=record.source,
            gpu_number=self.settings.gpu_number,
        )

    async def _launch(self, live: _Live, spec: TrialSpec, placement: Placement) -> None:
        record = live.record
        record.attempts += 1
        record.start_time = time.time()
        with self.store.transaction():
            self.store.update_trial(
                record.sequence,
                status=st.TRIAL_RUNNING,
                start_time=record.start_time,
                attempts=record.attempts,
                reason=None,
                placement=placement.to_json(),
            )
        record.status = st.TRIAL_RUNNING
        try:
            live.handle = await self.service.launch(spec, placement)
        except OSError as error:
            self._finish_trial(live, st.FAILED, f"could not start: {error}", None)
            return
        if self.settings.max_trial_duration is not None:
            live.deadline = time.monotonic() + self.settings.max_trial_duration * self.scale
        live.task = asyncio.get_running_loop().create_task(self._watch(live))
        logger.info("Trial %s started (#%d)", record.trial_id, record.sequence)

    async def _watch(self, live: _Live) -> None:
        assert live.handle is not None
        try:
            exit_info = await self.service.wait(live.handle)
            await self._collect_metrics(live)
            state, reason = live.end_state or self._state_from_exit(exit_info)
            self._finish_trial(live, state, reason, exit_info.exit_code)
            await self._tell_tuner_end(live, state)
        except Exception as error:  # handed to the loop, which ends the experiment in ERROR
            logger.exception("Trial %s: bookkeeping failed", live.record.trial_id)
            self._pending_error = self._pending_error or error
        finally:
            self._live.pop(live.record.sequence, None)
            self._wake.set()

    @staticmethod
    def _state_from_exit(exit_info: TrialExit) -> tuple[str, str]:
        if exit_info.exit_code == 0 and exit_info.signal is None:
            return st.SUCCEEDED, "exit code 0"
        return st.FAILED, exit_info.describe()

    def _finish_trial(self, live: _Live, state: str, reason: str, exit_code: int | None) -> None:
        record = live.record
        record.status, record.reason, record.end_time = state, reason, time.time()
        with self.store.transaction():
            self.store.update_trial(
                record.sequence,
                status=state,
                reason=reason,
                end_time=record.end_time,
                exit_code=exit_code,
            )
            self.store.add_event(
                "trial_ended", {"status": state, "reason": reason}, record.sequence
            )
        self._live.pop(record.sequence, None)
        log = logger.info if state == st.SUCCEEDED else logger.warning
        log("Trial %s %s: %s", record.trial_id, state.lower(), reason)

    async def _tell_tuner_end(self, live: _Live, state: str) -> None:
        record = live.record
        if record.final_default is not None:
            await self._call_tuner(self.tuner.observe, record.sequence, record.final_default)
        await self._call_tuner(self.tuner.trial_end, record.sequence, state == st.SUCCEEDED)

    # -- metrics ---------------------------------------------------------------------------

    async def _collect_running_metrics(self) -> None:
        for live in list(self._live.values()):
            if live.handle is not None:
                await self._collect_metrics(live)

    async def _collect_metrics(self, live: _Live) -> None:
        assert live.handle is not None
        lines = await self.service.read_metrics(live.handle)
        if not lines:
            return
        record = live.record
        stored: list[MetricRecord] = []
        final_changed = False
        for line in lines:
            seq = line.get("seq")
            kind = line.get("type")
            if not isinstance(seq, int) or kind not in ("INTERMEDIATE", "FINAL"):
                continue
            if seq < live.extra.get("next_line", 0):
                continue  # already stored (a rerun re-reads the earlier attempt's lines)
            live.extra["next_line"] = seq + 1
            value = line.get("value")
            default = st.default_value(value)
            if kind == "INTERMEDIATE":
                step = live.steps
                live.steps += 1
            else:
                step = 0
                if record.final is None:
                    record.final, record.final_default = value, default
                    final_changed = True
            stored.append(
                MetricRecord(
                    record.sequence,
                    seq,
                    kind,
                    step,
                    value,
                    default,
                    float(line.get("time") or time.time()),
                )
            )
        if not stored:
            return
        with self.store.transaction():
            self.store.add_metrics(stored)
            if final_changed:
                self.store.update_trial(
                    record.sequence, final=record.final, final_default=record.final_default
                )

    # -- deadlines, budgets, cancel --------------------------------------------------------

    def _check_trial_deadlines(self) -> None:
        now = time.monotonic()
        limit = self.settings.max_trial_duration
        for live in list(self._live.values()):
            if live.deadline is not None and now >= live.deadline and live.end_state is None:
                assert limit is not None
                live.end_state = (
                    st.EARLY_STOPPED,
                    f"exceeded maxTrialDuration {format_seconds(limit)}",
                )
                live.deadline = None
                asyncio.get_running_loop().create_task(self._cancel(live))

    async def _cancel(self, live: _Live) -> None:
        if live.handle is not None:
            await self.service.cancel(live.handle)

    async def _cancel_all(self, state: str, reason: str) -> None:
        self._set_status(st.STOPPING)
        for live in list(self._live.values()):
            if live.handle is None:
                self._finish_trial(live, state, reason, None)
                continue
            if live.end_state is None:
                live.end_state = (state, reason)
            await self._cancel(live)
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _fail(self, message: str) -> None:
        self.errors.append(message)
        self.store.update_experiment(error=message)
        await self._cancel_all(st.SYS_CANCELED, f"experiment error: {message}")
        self._set_status(st.ERROR)

    def _set_status(self, status: str) -> None:
        if status == self.status:
            return
        fields: dict[str, Any] = {"status": status}
        if status in st.FINAL_EXPERIMENT_STATES:
            self._save_clock(force=True)
            self._clock_start = None
            fields["end_time"] = time.time()
        with self.store.transaction():
            self.store.update_experiment(**fields)
            self.store.add_event("experiment_status", {"status": status})
        self.status = status
        logger.info("Experiment %s %s", self.experiment_id, status)

    def _save_clock(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._clock_start is None or (
            not force and now - self._last_clock_save < _CLOCK_SAVE_SECONDS
        ):
            return
        self._last_clock_save = now
        self.store.update_experiment(used_seconds=self.used_seconds())

    async def _call_tuner(self, method: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tuner_pool, method, *args)
