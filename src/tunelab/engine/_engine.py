"""The experiment loop: trial states, scheduling, budgets, resume.

The engine owns the loop and every piece of bookkeeping (DESIGN.md rule 1): it asks the tuner
for parameters when a slot is free, asks the training service to place and start the trial,
collects metrics, decides each trial's final state, and moves the experiment through
RUNNING, NO_MORE_TRIAL and DONE. Each change is committed to the store before it is acted on
(rule 3). Tuner calls run in one worker thread, in order, so a slow model fit never stalls the
HTTP API that shares this event loop (rule 5).

Budgets (rule 10): ``maxTrialNumber`` counts distinct trials (user-added and rerun trials
included); a trial that runs again after a crash or a stop keeps its number and does not count
twice. ``maxExperimentDuration`` counts the time the experiment was running. Once either is
reached, no trial is started; the experiment is NO_MORE_TRIAL while trials still run, and DONE
once the last one has ended. A tuner with nothing left to suggest leads to DONE the same way.

Stop: every trial is marked USER_CANCELED at once, with its end time frozen at the stop, and
its process tree is ended; the trials are flagged to run again when the experiment resumes
(as NNI does). A trial the user kills is USER_CANCELED for good.

Resume (``run(resume=True)`` on a store written by an earlier manager, stopped or killed):
the tuner is rebuilt by replaying the stored history in order (nothing is pickled); trials the
store says were running are re-attached through the training service when their process still
runs or left its exit code, and run again under the same id otherwise; waiting trials and
trials cancelled by the stop run again. Their metrics of earlier attempts stay stored, tagged
with the attempt.

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
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tunelab.assessors import Assessor, assessor_name
from tunelab.engine import _states as st
from tunelab.errors import NoMoreTrials, UsageError
from tunelab.services import Placement, TrainingService, TrialExit, TrialHandle, TrialSpec
from tunelab.services._base import STDERR_FILE
from tunelab.space import SearchSpace
from tunelab.store import ExperimentStore, MetricRecord, TrialRecord, new_trial_id
from tunelab.trial import METRICS_FILE, read_metrics
from tunelab.tuners import Tuner

__all__ = ["Engine", "EngineSettings", "format_seconds", "time_scale"]

logger = logging.getLogger("tunelab.engine")
T = TypeVar("T")

_METRIC_POLL_SECONDS = 0.5
# How often the used time is saved: a crash loses at most this much of it. It shrinks with
# TUNELAB_TIME_SCALE, so that a crash loses the same share of a scaled budget.
_CLOCK_SAVE_SECONDS = 2.0

# How long the stop of an experiment whose manager died waits for its re-attached trials that
# have ended to be recorded before it ends the others.
_SETTLE_SECONDS = 2.0

STOP_REASON = "experiment stopped"
KILL_REASON = "killed by user"
RESTART_REASON = "manager restarted; the trial runs again"


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
    """A trial the engine is responsible for right now: waiting for a slot, or running."""

    record: TrialRecord
    handle: TrialHandle | None = None
    waiting_reason: str | None = None
    deadline: float | None = None
    end_state: tuple[str, str] | None = None  # set when the engine itself ends the trial
    frozen: bool = False  # state and end time already written (stop, kill)
    task: asyncio.Task[None] | None = None
    launching: bool = False
    steps: int = 0
    next_line: int = 0
    history: list[float] = field(default_factory=list)  # this attempt's intermediate defaults
    assessed: int = 0  # how many of those the assessor has judged

    @property
    def running(self) -> bool:
        return self.handle is not None or self.launching


class Engine:
    """Runs one experiment to its end.

    Args:
        experiment_id: the experiment's id.
        exp_dir: the experiment's folder (trials go in ``trials/<trial id>/``).
        settings: what to run and the budgets.
        store: the experiment's store, open for writing.
        service: the training service.
        tuner: the tuner, with the search space already given to it.
        assessor: stops poor trials early, when the config names one.
    """

    def __init__(
        self,
        experiment_id: str,
        exp_dir: Path,
        settings: EngineSettings,
        store: ExperimentStore,
        service: TrainingService,
        tuner: Tuner,
        assessor: Assessor | None = None,
    ) -> None:
        self.experiment_id = experiment_id
        self.exp_dir = exp_dir
        self.settings = settings
        self.store = store
        self.service = service
        self.tuner = tuner
        self.assessor = assessor
        self.scale = time_scale()
        self.status = st.INITIALIZED
        self.errors: list[str] = []
        self.reopened = asyncio.Event()
        self._status_changed = asyncio.Event()
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
        self._finished.set()
        self._pending_error: Exception | None = None

    # -- public ----------------------------------------------------------------------------

    async def run(self, resume: bool = False, stop: bool = False) -> str:
        """Run until the experiment is DONE, STOPPED or in ERROR; return that state.

        Args:
            resume: take up a store written by an earlier manager (see the module docstring).
            stop: with ``resume``, stop at once instead (the stop of an experiment whose
                manager died): its trials are taken up as a resume takes them, those that
                ended while no manager watched are recorded as they ended, and the others are
                ended as a stop ends them (USER_CANCELED, to run again on resume).
        """
        if stop:
            self._stop_requested = True
        self._finished.clear()
        now = time.time()
        with self.store.transaction():
            self.store.update_experiment(status=st.RUNNING, end_time=None, error=None)
            if self.store.experiment()["start_time"] is None:
                self.store.update_experiment(start_time=now)
            self.store.add_event("experiment_resumed" if resume else "experiment_started")
        self.status = st.RUNNING
        self.errors.clear()
        self._clock_start = time.monotonic()
        logger.info("Experiment %s %s", self.experiment_id, "resumed" if resume else "running")
        try:
            if resume:
                await self._recover()
            if stop:
                await self._record_ended_trials()
                if not self._live and not self._can_submit():
                    # Everything ended while no manager watched, and the budget is used:
                    # the experiment had finished, and says so.
                    self._set_status(st.DONE)
                    return self.status
            await self._loop()
        except Exception as error:  # a bug or a tuner failure must not leave trials running
            logger.exception("Experiment %s failed", self.experiment_id)
            await self._fail(f"{type(error).__name__}: {error}")
        finally:
            self._finished.set()
        return self.status

    async def stop(self) -> None:
        """End every trial (USER_CANCELED, to run again on resume) and the experiment."""
        if self._finished.is_set():
            return  # DONE, STOPPED or ERROR already: the state says how it ended
        self._stop_requested = True
        self._wake.set()
        await self._finished.wait()

    async def close(self) -> None:
        self._tuner_pool.shutdown(wait=False)

    def used_seconds(self) -> float:
        if self._clock_start is None:
            return self._used_base
        return self._used_base + (time.monotonic() - self._clock_start)

    def waiting_reasons(self) -> dict[int, str]:
        """Why each waiting trial waits, and why a running one cannot be followed now (its
        host is unreachable, say), by trial number."""
        reasons = {}
        for seq, live in self._live.items():
            if live.waiting_reason:
                reasons[seq] = live.waiting_reason
            elif live.handle is not None and live.end_state is None:
                note = self.service.note(live.handle)
                if note:
                    reasons[seq] = note
        return reasons

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for: the experiment takes no more changes."""
        return self._stop_requested

    @property
    def is_running(self) -> bool:
        return not self._finished.is_set()

    async def wait_status(self, than: str, timeout: float) -> str:
        """Wait until the experiment's state is other than ``than``, or ``timeout`` seconds;
        return the state. Lets a client see the end of an experiment at once, unpolled."""
        if self.status == than:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._status_changed.wait(), timeout)
        return self.status

    # -- changes asked for while the experiment runs ---------------------------------------

    async def update(
        self,
        *,
        concurrency: int | None = None,
        max_trials: int | None = None,
        max_duration: float | None = None,
        max_duration_text: str | int | float | None = None,
        search_space: Mapping[str, Any] | None = None,
    ) -> None:
        """Change a budget, the concurrency or the search space (already validated)."""
        info = self.store.experiment()
        config = dict(info["config"])
        space = None
        if search_space is not None:
            space = SearchSpace.from_json(search_space)
            config["searchSpace"] = space.raw
            # The file the first space came from no longer says what the experiment searches.
            config.pop("searchSpaceFile", None)
        if concurrency is not None:
            config["trialConcurrency"] = concurrency
        if max_trials is not None:
            config["maxTrialNumber"] = max_trials
        if max_duration is not None:
            config["maxExperimentDuration"] = max_duration_text or max_duration
        changes = {
            key: value
            for key, value in (
                ("trialConcurrency", concurrency),
                ("maxTrialNumber", max_trials),
                ("maxExperimentDuration", max_duration_text or max_duration),
                ("searchSpace", None if space is None else "updated"),
            )
            if value is not None
        }
        if space is not None:
            # The tuner first: a custom tuner that refuses the space (a ConfigError) leaves the
            # stored experiment as it was. Should the manager die before the store is written,
            # the resumed tuner is rebuilt from the stored, earlier space.
            await self._call_tuner(self.tuner.update_search_space, space)
            self._tuner_exhausted = False
        with self.store.transaction():
            self.store.update_experiment(config=config)
            self.store.add_event("experiment_updated", changes)

        if concurrency is not None:
            self.settings.concurrency = concurrency
        if max_trials is not None:
            self.settings.max_trials = max_trials
        if max_duration is not None:
            self.settings.max_duration = max_duration
        logger.info("Experiment %s updated: %s", self.experiment_id, changes)
        self._after_change()

    async def add_trial(
        self, parameters: dict[str, Any], source: str = "customized"
    ) -> TrialRecord:
        """Queue a trial with parameters the user chose; it counts against maxTrialNumber."""
        limit = self.settings.max_trials
        if limit is not None and self._submitted >= limit:
            raise UsageError(
                f"maxTrialNumber {limit} is reached ({self._submitted} trials); raise it with "
                "'tunelab update trialnum' first"
            )
        sequence = self._next_sequence
        live = self._add_trial(sequence, parameters, source)
        await self._call_tuner(self.tuner.add_trial, sequence, parameters)
        self.store.add_event("trial_added", {"source": source}, sequence)
        self._after_change()
        return live.record

    async def rerun_trial(self, trial_id: str) -> TrialRecord:
        """Queue a new trial with the parameters of an existing one."""
        original = self.store.trial(trial_id)
        if original is None:
            raise LookupError(trial_id)
        return await self.add_trial(dict(original.parameters), source="rerun")

    async def kill_trial(self, trial_id: str) -> TrialRecord:
        """End one trial for good (USER_CANCELED, not run again on resume)."""
        record = self.store.trial(trial_id)
        if record is None:
            raise LookupError(trial_id)
        live = self._live.get(record.sequence)
        if live is None:
            raise UsageError(
                f"trial {trial_id} is {record.status}: only a waiting or running "
                "trial can be killed"
            )
        self._freeze(live, st.USER_CANCELED, KILL_REASON, requeue=False)
        if live.handle is None and not live.launching:
            self._live.pop(record.sequence, None)
            await self._tell_tuner_end(live, st.USER_CANCELED)
        else:
            await self._cancel(live)
        self._wake.set()
        return live.record

    async def import_data(self, records: list[tuple[dict[str, Any], Any]]) -> tuple[int, int]:
        """Feed earlier results (parameters, metric) to the tuner; they are stored so that a
        resumed experiment feeds them again, and are not trials. Returns how many were
        imported, and how many of those do not fit the current search space (a parameter
        missing, extra or out of its domain): the tuner keeps those but cannot learn from
        them."""
        space = SearchSpace.from_json(self.store.experiment()["config"].get("searchSpace") or {})
        outside = sum(1 for parameters, _ in records if space.from_parameters(parameters) is None)
        with self.store.transaction():
            ids = self.store.add_imported(records)
            self.store.add_event("data_imported", {"count": len(ids)})
        await self._call_tuner(self._feed_imported, list(zip(ids, records, strict=True)))
        self._after_change()
        return len(ids), outside

    def _feed_imported(self, items: list[tuple[int, tuple[dict[str, Any], Any]]]) -> None:
        for record_id, (parameters, value) in items:
            self._feed_one_imported(record_id, parameters, value)

    def _feed_one_imported(self, record_id: int, parameters: dict[str, Any], value: Any) -> None:
        key = -record_id  # imported results never collide with trial numbers
        self.tuner.add_trial(key, parameters)
        default = st.default_value(value)
        if default is not None:
            self.tuner.observe(key, default, value)
        self.tuner.trial_end(key, default is not None)

    def _after_change(self) -> None:
        """Wake the loop; reopen an experiment that was DONE if there is work again."""
        self._wake.set()
        if (
            self._finished.is_set()
            and self.status == st.DONE
            and (self._can_submit() or self._queued())
        ):
            self.reopened.set()

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            if self._pending_error is not None:
                raise self._pending_error
            if self._stop_requested:
                await self._cancel_all(st.USER_CANCELED, STOP_REASON)
                self._set_status(st.STOPPED)
                return
            self._check_trial_deadlines()
            self._end_queued_after_deadline()
            await self._collect_running_metrics()
            await self._fill_slots()
            can_submit = self._can_submit()
            if not can_submit and not self._live:
                self._set_status(st.DONE)
                return
            if not can_submit and not self._queued() and self.status == st.RUNNING:
                self._set_status(st.NO_MORE_TRIAL)
            elif can_submit and self.status == st.NO_MORE_TRIAL:
                self._set_status(st.RUNNING)
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
        """Whether a new trial may still be submitted (budgets left, tuner not exhausted)."""
        if self._tuner_exhausted:
            return False
        limit = self.settings.max_trials
        if limit is not None and self._submitted >= limit:
            return False
        return not self._duration_exceeded()

    def _duration_exceeded(self) -> bool:
        if self.settings.max_duration is None:
            return False
        return self.used_seconds() >= self._duration_limit()

    def _queued(self) -> list[_Live]:
        return sorted(
            (live for live in self._live.values() if not live.running and not live.frozen),
            key=lambda live: live.record.sequence,
        )

    def _running_count(self) -> int:
        return sum(1 for live in self._live.values() if live.running)

    async def _fill_slots(self) -> None:
        # Trials already queued (waiting for a slot or resources, rerun, user-added) go first.
        # After the duration budget, queued trials are not started either.
        for live in self._queued():
            if self._running_count() >= self.settings.concurrency:
                return
            if self._duration_exceeded():
                return
            await self._try_start(live)
            if not live.running:
                return  # waiting for resources; don't start later trials around it
        while self._can_submit() and self._running_count() < self.settings.concurrency:
            if self._queued():
                return
            sequence = self._next_sequence
            try:
                parameters = await self._call_tuner(self.tuner.suggest, sequence)
            except NoMoreTrials as reason:
                self._tuner_exhausted = True
                logger.info(
                    "Experiment %s: the tuner has nothing left (%s)", self.experiment_id, reason
                )
                self.store.add_event("tuner_no_more_trials", {"reason": str(reason)})
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
                # A reason that only counts down ("retrying in 5 s", "in 4 s", "now") is
                # logged once.
                if live.waiting_reason is None or _COUNTDOWN.sub("", placement) != _COUNTDOWN.sub(
                    "", live.waiting_reason
                ):
                    logger.info("Trial %s %s", record.trial_id, placement)
                live.waiting_reason = placement
                self.store.update_trial(record.sequence, reason=placement)
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
            parameter_source="resumed" if record.attempts else _source(record.source),
            gpu_number=self.settings.gpu_number,
        )

    async def _launch(self, live: _Live, spec: TrialSpec, placement: Placement) -> None:
        record = live.record
        record.attempts += 1
        record.start_time = time.time()
        record.end_time = None
        with self.store.transaction():
            self.store.update_trial(
                record.sequence,
                status=st.TRIAL_RUNNING,
                start_time=record.start_time,
                end_time=None,
                attempts=record.attempts,
                reason=None,
                placement=placement.to_json(),
                handle=None,  # an earlier attempt's handle must not be re-attached
                requeue=0,
            )
        record.status = st.TRIAL_RUNNING
        live.launching = True
        live.steps = 0
        live.history = []
        try:
            handle = await self.service.launch(spec, placement)
        except OSError as error:
            live.launching = False
            self._finish_trial(live, st.FAILED, f"could not start: {error}", None)
            await self._tell_tuner_end(live, st.FAILED)
            return
        live.handle, live.launching = handle, False
        self.store.update_trial(record.sequence, handle=handle.state())
        if self.settings.max_trial_duration is not None:
            live.deadline = time.monotonic() + self.settings.max_trial_duration * self.scale
        live.task = asyncio.get_running_loop().create_task(self._watch(live))
        logger.info("Trial %s started (#%d)", record.trial_id, record.sequence)
        if live.frozen:  # killed while it was being launched
            await self._cancel(live)

    async def _watch(self, live: _Live) -> None:
        assert live.handle is not None
        try:
            exit_info = await self.service.wait(live.handle)
            # What the trial wrote before it ended is stored, not judged: a trial that has
            # ended on its own is not stopped early.
            await self._collect_metrics(live, assess=False)
            state, reason = live.end_state or self._state_from_exit(exit_info)
            if (
                live.end_state is None
                and exit_info.exit_code not in (None, 0)
                and exit_info.signal is None
                and exit_info.message is None
            ):
                # "exit code 1: TypeError: report_final_result: ..." says what went wrong, and
                # so does "exit code 127: trian.py: command not found".
                error = _failure_detail(
                    live.handle.spec.trial_dir / STDERR_FILE, exit_info.exit_code
                )
                if error is not None:
                    reason = f"{reason}: {error}"
            self._finish_trial(live, state, reason, exit_info.exit_code)
            await self._tell_tuner_end(live, state)
        except Exception as error:  # handed to the loop, which ends the experiment in ERROR
            logger.exception("Trial %s: bookkeeping failed", live.record.trial_id)
            self._pending_error = self._pending_error or error
            # The trial must not stay RUNNING: its process is ended (if it still runs) and
            # its end is written with the reason.
            if not live.frozen and live.record.status in st.ACTIVE_TRIAL_STATES:
                with contextlib.suppress(Exception):
                    await self.service.cancel(live.handle)
                with contextlib.suppress(Exception):
                    self._write_end(
                        live.record,
                        st.FAILED,
                        f"tunelab could not record its end ({type(error).__name__}: {error})",
                    )
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
        self._live.pop(record.sequence, None)
        if live.frozen:
            # State, reason and end time were written when the stop or kill was asked for.
            self.store.update_trial(record.sequence, exit_code=exit_code)
            return
        self._write_end(record, state, reason, exit_code=exit_code)
        log = logger.info if state == st.SUCCEEDED else logger.warning
        log("Trial %s %s: %s", record.trial_id, state.lower(), reason)

    def _write_end(self, record: TrialRecord, state: str, reason: str, **fields: Any) -> None:
        """Store how a trial ended (state, reason, end time now, and ``fields``)."""
        record.status, record.reason, record.end_time = state, reason, time.time()
        with self.store.transaction():
            self.store.update_trial(
                record.sequence, status=state, reason=reason, end_time=record.end_time, **fields
            )
            self.store.add_event(
                "trial_ended", {"status": state, "reason": reason}, record.sequence
            )

    def _freeze(self, live: _Live, state: str, reason: str, requeue: bool) -> None:
        """Write a trial's end now (stop, kill), before its process is ended."""
        if live.frozen:
            return
        record = live.record
        record.requeue = requeue
        self._write_end(record, state, reason, requeue=int(requeue))
        live.end_state = (state, reason)
        live.frozen = True
        live.waiting_reason = None
        logger.info("Trial %s %s: %s", record.trial_id, state.lower(), reason)

    async def _tell_tuner_end(self, live: _Live, state: str) -> None:
        record = live.record
        if live.frozen and record.requeue:
            return  # it runs again on resume; the tuner hears of its end then
        if record.final_default is not None:
            await self._call_tuner(
                self.tuner.observe, record.sequence, record.final_default, record.final
            )
        await self._call_tuner(self.tuner.trial_end, record.sequence, state == st.SUCCEEDED)
        if self.assessor is not None:
            await self._call_tuner(
                self.assessor.trial_end, record.sequence, state == st.SUCCEEDED, live.history
            )

    # -- metrics ---------------------------------------------------------------------------

    async def _collect_running_metrics(self) -> None:
        for live in list(self._live.values()):
            if live.handle is not None:
                await self._collect_metrics(live)

    async def _collect_metrics(self, live: _Live, assess: bool = True) -> None:
        assert live.handle is not None
        lines = await self.service.read_metrics(live.handle)
        if self._store_metric_lines(live, lines) and assess:
            await self._assess(live)

    def _store_metric_lines(self, live: _Live, lines: list[dict[str, Any]]) -> bool:
        """Store the lines not stored yet, tagged with the trial's current attempt; return
        whether intermediate results were among them."""
        if not lines:
            return False
        record = live.record
        stored: list[MetricRecord] = []
        final_changed = False
        for line in lines:
            seq = line.get("seq")
            kind = line.get("type")
            if not isinstance(seq, int) or kind not in ("INTERMEDIATE", "FINAL"):
                continue
            if seq < live.next_line:
                continue  # already stored (an earlier attempt, or before a restart)
            live.next_line = seq + 1
            value = line.get("value")
            default = st.default_value(value)
            if kind == "INTERMEDIATE":
                step = live.steps
                live.steps += 1
                live.history.append(math.nan if default is None else default)
            else:
                step = 0
                if record.final is None:
                    record.final, record.final_default = value, default
                    final_changed = True
                else:
                    # Stored with the others, but the first final result is the trial's.
                    logger.warning(
                        "Trial %s reported a final result again (%s); its first one (%s) "
                        "stands, as the tuner has it",
                        record.trial_id,
                        _short(value),
                        _short(record.final),
                    )
            stored.append(
                MetricRecord(
                    record.sequence,
                    seq,
                    kind,
                    step,
                    value,
                    default,
                    _line_time(line),
                    max(record.attempts, 1),
                )
            )
        if not stored:
            return False
        with self.store.transaction():
            self.store.add_metrics(stored)
            if final_changed:
                self.store.update_trial(
                    record.sequence, final=record.final, final_default=record.final_default
                )
        return any(m.type == "INTERMEDIATE" for m in stored)

    async def _assess(self, live: _Live) -> None:
        """Ask the assessor whether a running trial goes on, at every step it has not judged
        yet (results that arrive together are judged one step at a time, as they would have
        been one by one); carry out a stop."""
        if self.assessor is None or live.end_state is not None or live.frozen:
            return
        step = live.assessed
        while step < len(live.history):
            step += 1
            history = live.history[:step]
            keep = await self._call_tuner(self.assessor.assess, live.record.sequence, history)
            live.assessed = step
            if live.end_state is not None or live.frozen:
                return
            if not keep:
                break
        else:
            return
        reason = f"stopped by {assessor_name(self.assessor)} at step {step}"
        live.end_state = (st.EARLY_STOPPED, reason)
        self.store.add_event("trial_assessed", {"stop": True, "step": step}, live.record.sequence)
        asyncio.get_running_loop().create_task(self._cancel(live))

    # -- resume ----------------------------------------------------------------------------

    async def _recover(self) -> None:
        trials = self.store.trials()
        histories = self._stored_histories(trials) if self.assessor is not None else {}
        await self._call_tuner(self._replay, trials, self.store.imported(), histories)
        # A stop or a kill writes its state first and then ends the processes: a manager that
        # died in between left them running. They end now, before anything runs again.
        interrupted = [
            record
            for record in trials
            if record.status in (st.USER_CANCELED, st.SYS_CANCELED)
            and record.handle
            and record.exit_code is None
        ]
        last_lines = self.store.last_metric_lines()
        await asyncio.gather(
            *(self._finish_cancel(r, last_lines.get(r.sequence, -1) + 1) for r in interrupted)
        )
        if interrupted:
            last_lines = self.store.last_metric_lines()
        for record in trials:
            if record.status == st.TRIAL_RUNNING:
                await self._reattach(record, last_lines.get(record.sequence, -1) + 1)
            elif record.status == st.WAITING or record.requeue:
                self._requeue(record, last_lines.get(record.sequence, -1) + 1, None)

    async def _record_ended_trials(self) -> None:
        """Give the re-attached trials whose process has ended a moment to be recorded (their
        exit code and last metrics), so that a stop does not cancel a trial that finished."""
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=_SETTLE_SECONDS)

    def _stored_histories(self, trials: list[TrialRecord]) -> dict[int, list[float]]:
        """Each trial's intermediate defaults of its latest attempt, from the store."""
        attempts = {t.sequence: max(t.attempts, 1) for t in trials}
        histories: dict[int, list[float]] = {}
        for metric in self.store.metrics(metric_type="INTERMEDIATE"):
            if metric.attempt == attempts.get(metric.sequence):
                value = math.nan if metric.default is None else metric.default
                histories.setdefault(metric.sequence, []).append(value)
        return histories

    def _replay(
        self,
        trials: list[TrialRecord],
        imported: list[tuple[int, dict[str, Any], Any]],
        histories: dict[int, list[float]],
    ) -> None:
        for record_id, parameters, value in imported:
            self._feed_one_imported(record_id, parameters, value)
        for record in trials:
            self.tuner.add_trial(record.sequence, record.parameters)
            finished = record.status in st.FINISHED_TRIAL_STATES and not record.requeue
            if finished and record.final_default is not None:
                self.tuner.observe(record.sequence, record.final_default, record.final)
            if finished:
                self.tuner.trial_end(record.sequence, record.status == st.SUCCEEDED)
            if finished and self.assessor is not None:
                self.assessor.trial_end(
                    record.sequence,
                    record.status == st.SUCCEEDED,
                    histories.get(record.sequence, []),
                )

    async def _reattach(self, record: TrialRecord, next_line: int) -> None:
        spec = self._spec(record)
        placement = Placement.from_json(record.placement)
        try:
            handle = await self.service.reattach(spec, placement, record.handle or {})
        except Exception:
            logger.exception("Trial %s: could not re-attach", record.trial_id)
            handle = None
        if handle is None:
            next_line = self._store_lost_attempt(record, spec.trial_dir, next_line)
            self._requeue(record, next_line, RESTART_REASON)
            return
        live = _Live(record, handle=handle, next_line=next_line)
        live.history = [
            math.nan if m.default is None else m.default
            for m in self.store.metrics(record.sequence, "INTERMEDIATE")
            if m.attempt == record.attempts
        ]
        live.steps = live.assessed = len(live.history)
        limit = self.settings.max_trial_duration
        if limit is not None and record.start_time is not None:
            left = limit * self.scale - (time.time() - record.start_time)
            live.deadline = time.monotonic() + max(0.0, left)
        self._live[record.sequence] = live
        live.task = asyncio.get_running_loop().create_task(self._watch(live))
        self.store.add_event("trial_reattached", None, record.sequence)
        logger.info("Trial %s re-attached (#%d)", record.trial_id, record.sequence)

    async def _finish_cancel(self, record: TrialRecord, next_line: int) -> None:
        """End what is left of a trial whose stop or kill a dead manager did not finish, and
        store what it wrote meanwhile under its attempt; its state was written already."""
        spec = self._spec(record)
        placement = Placement.from_json(record.placement)
        try:
            handle = await self.service.reattach(spec, placement, record.handle or {})
        except Exception:
            logger.exception("Trial %s: could not re-attach to end it", record.trial_id)
            return
        if handle is None:
            return
        await self.service.cancel(handle)
        exit_info = await self.service.wait(handle)
        live = _Live(record, handle=handle, next_line=next_line)
        live.steps = self.store.attempt_metric_counts(record.sequence, max(record.attempts, 1))
        self._store_metric_lines(live, await self.service.read_metrics(handle))
        self.store.update_trial(record.sequence, exit_code=exit_info.exit_code)
        logger.info("Trial %s: ended the processes an interrupted stop left", record.trial_id)

    def _store_lost_attempt(self, record: TrialRecord, trial_dir: Path, next_line: int) -> int:
        """Store what an attempt whose process is gone wrote after the last stored line (the
        manager died before reading it), tagged with that attempt, so that the next attempt,
        which appends to the same file, is not credited with it. Returns the next line."""
        live = _Live(record, next_line=next_line)
        live.steps = self.store.attempt_metric_counts(record.sequence, max(record.attempts, 1))
        lines, _ = read_metrics(trial_dir / METRICS_FILE)
        self._store_metric_lines(live, lines)
        return live.next_line

    def _requeue(self, record: TrialRecord, next_line: int, reason: str | None) -> None:
        record.status, record.reason, record.end_time = st.WAITING, reason, None
        record.final, record.final_default, record.requeue = None, None, False
        with self.store.transaction():
            self.store.update_trial(
                record.sequence,
                status=st.WAITING,
                reason=reason,
                end_time=None,
                final=None,
                final_default=None,
                requeue=0,
            )
        self._live[record.sequence] = _Live(record, next_line=next_line)

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

    def _end_queued_after_deadline(self) -> None:
        """Trials still waiting for a slot when maxExperimentDuration runs out do not start;
        they run if the experiment is resumed with more time."""
        if not self._duration_exceeded():
            return
        limit = format_seconds(self.settings.max_duration or 0)
        for live in self._queued():
            reason = f"maxExperimentDuration {limit} reached before the trial could start"
            self._freeze(live, st.SYS_CANCELED, reason, requeue=True)
            self._live.pop(live.record.sequence, None)

    async def _cancel(self, live: _Live) -> None:
        if live.handle is not None:
            await self.service.cancel(live.handle)

    async def _cancel_all(self, state: str, reason: str) -> None:
        self._set_status(st.STOPPING)
        for live in list(self._live.values()):
            self._freeze(live, state, reason, requeue=True)
            if not live.running:
                self._live.pop(live.record.sequence, None)
        await asyncio.gather(
            *(self._cancel(live) for live in list(self._live.values())), return_exceptions=True
        )
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
            self._used_base = self.used_seconds()
            self._clock_start = None
            fields["end_time"] = time.time()
        with self.store.transaction():
            self.store.update_experiment(**fields)
            self.store.add_event("experiment_status", {"status": status})
        self.status = status
        self._status_changed.set()
        self._status_changed = asyncio.Event()
        logger.info("Experiment %s %s", self.experiment_id, status)

    def _save_clock(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._clock_start is None or (
            not force and now - self._last_clock_save < _CLOCK_SAVE_SECONDS * min(1.0, self.scale)
        ):
            return
        self._last_clock_save = now
        self.store.update_experiment(used_seconds=self.used_seconds())

    async def _call_tuner(self, method: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tuner_pool, method, *args)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _source(source: str) -> str:
    """The parameter source a trial sees, in NNI's words."""
    return "algorithm" if source == "algorithm" else "customized"


def _line_time(line: dict[str, Any]) -> float:
    """When a metric line was written: its own ``time`` if that is a usable number, else now."""
    written = line.get("time")
    if isinstance(written, (int, float)) and not isinstance(written, bool):
        with contextlib.suppress(OverflowError):
            if math.isfinite(float(written)):
                return float(written)
    return time.time()


_PYTHON_ERROR = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b(: .*)?")
# bash's prefix on what it says about a command: "tunelab-trial: line 3: " (the trial wrapper),
# "bash: line 1: ", "/bin/sh: 1: ".
_SHELL_ERROR = re.compile(r"^(?:[\w./-]+: )?(?:line )?\d+: ")
_COUNTDOWN = re.compile(r"\b(?:in \d+(?:\.\d+)? ?s|now)\b")
_ERROR_TAIL_BYTES = 8192
_ERROR_MAX_CHARS = 300


def _failure_detail(stderr: Path, exit_code: int) -> str | None:
    """What a failed trial's stderr says went wrong: the exception a Python trial ended with
    (the last line of its traceback), or the shell's word on a command it could not run (exit
    codes 126 and 127: not found, not executable), without the shell's own prefix."""
    try:
        with open(stderr, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - _ERROR_TAIL_BYTES))
            tail = file.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[-1]
    if exit_code in (126, 127) and _SHELL_ERROR.match(line):
        line = _SHELL_ERROR.sub("", line, count=1)
    elif not _PYTHON_ERROR.fullmatch(line):
        return None
    return line if len(line) <= _ERROR_MAX_CHARS else line[: _ERROR_MAX_CHARS - 3] + "..."
