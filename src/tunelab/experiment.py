"""The Python API of experiments: NNI's ``Experiment`` class.

::

    from tunelab import Experiment

    experiment = Experiment("local")
    experiment.config.trial_command = "python3 trial.py"
    experiment.config.search_space = {"lr": {"_type": "loguniform", "_value": [1e-4, 0.1]}}
    experiment.config.tuner.name = "TPE"
    experiment.config.trial_concurrency = 2
    experiment.config.max_trial_number = 10
    experiment.run()

Everything here goes through :mod:`tunelab.client`, as the CLI does: an experiment started in
Python is one of this machine's experiments like any other (``tunelab experiment list`` shows
it, ``tunelab stop`` stops it), and every operation behaves the same from both.

Decisions where NNI leaves a choice or where tunelab departs from it:

- ``port=None`` (the default) means 8080 or the next free port, so that several experiments
  can start without choosing ports; a number means that port, and an error if it is busy (as
  NNI does for every port). :attr:`Experiment.port` says which port was taken.
- ``run()`` checks the config before anything is created: a config that cannot run raises
  :class:`~tunelab.errors.ConfigError` (a bad search space too, with fields named
  ``searchSpace.<parameter>``). It waits for DONE (True), STOPPED (True) or ERROR (False) and
  then stops the manager, as NNI does. Ctrl-C stops the experiment and returns None.
- An experiment started by ``start()``, ``resume()`` or ``view(non_blocking=True)`` is stopped
  when the interpreter exits (NNI's Background mode); one reached with ``connect()`` is not.
- Reads work on a stopped experiment too (from its store); changes need a running one.
- Metric values are Python values (a number or a dict), not NNI's JSON-encoded strings; NaN
  and infinities are floats again.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunelab.client import (
    ExperimentClient,
    by_port,
    create_experiment,
    resolve,
    resume_experiment,
    runnable_config,
    view_experiment,
)
from tunelab.client._signals import Signalled, raise_pending, signals_raise
from tunelab.errors import ConfigError, Issue, SearchSpaceError, UsageError
from tunelab.store import decode_json_value

if TYPE_CHECKING:
    from tunelab.config import ExperimentConfig

__all__ = [
    "Experiment",
    "TrialHyperParameters",
    "TrialJob",
    "TrialMetricData",
    "TrialResult",
]

logger = logging.getLogger("tunelab.experiment")
_POLL_SECONDS = 0.5

# The record classes below keep NNI's camelCase field names, so that code written against
# nni.experiment reads them unchanged.


@dataclass
class TrialHyperParameters:
    """The parameters a trial received, in NNI's shape."""

    parameter_id: int
    parameter_source: str
    parameters: dict[str, Any]
    parameter_index: int = 0


@dataclass
class TrialMetricData:
    """One metric a trial reported. ``type`` is ``PERIODICAL`` (intermediate) or ``FINAL``;
    ``data`` is the value as reported (a number or a dict)."""

    timestamp: int
    trialJobId: str
    parameterId: str
    type: str
    sequence: int
    data: Any


@dataclass
class TrialJob:
    """A trial, with NNI's field names (times in milliseconds since the epoch)."""

    trialJobId: str
    status: str
    hyperParameters: list[TrialHyperParameters]
    logPath: str
    startTime: int | None
    endTime: int | None
    finalMetricData: list[TrialMetricData]
    stderrPath: str
    sequenceId: int
    message: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialResult:
    """A trial's parameters and final result, as ``export_data`` gives them."""

    parameter: dict[str, Any]
    value: Any
    trialJobId: str


def _ms(stamp: Any) -> int | None:
    return None if not isinstance(stamp, (int, float)) else int(stamp * 1000)


class Experiment:
    """One experiment, to configure and run from Python, or to reach once it exists.

    Args:
        config: the experiment's config, or a platform name (``"local"``, ``"remote"``,
            ``"ray"``) for an empty config to fill in (``Experiment("local")``).
        platform: a platform name for an empty config, when ``config`` is not given.
    """

    def __init__(
        self,
        config: ExperimentConfig | str | list[str] | None = None,
        platform: str | list[str] | None = None,
    ) -> None:
        from tunelab.config import ExperimentConfig

        if isinstance(config, (str, list)):
            config, platform = None, config
        if config is None:
            config = ExperimentConfig(platform) if platform is not None else ExperimentConfig()
        self.config: ExperimentConfig | None = config
        self.id: str | None = None
        self.port: int | None = None
        self._client: ExperimentClient | None = None
        self._stop_at_exit = False

    def __repr__(self) -> str:
        return f"Experiment(id={self.id!r}, port={self.port!r})"

    @property
    def url(self) -> str | None:
        return None if self._client is None else self._client.url

    # -- starting and stopping -----------------------------------------------------------

    def start(self, port: int | None = None, debug: bool = False) -> None:
        """Create and start the experiment; return once its manager serves.

        Args:
            port: the API's port; None: 8080 or the next free one.
            debug: log at debug level.

        Raises:
            ConfigError: the config cannot run (nothing was created).
            UsageError: this object already started an experiment, or the port is busy.
        """
        if self._client is not None:
            raise UsageError(
                f"experiment {self.id} was already started from this object; create another "
                "Experiment for a new run"
            )
        if self.config is None:
            raise UsageError("this experiment has no config to start from")
        try:
            config_json = runnable_config(self.config, debug=debug)
        except SearchSpaceError as error:
            raise _as_config_error(error) from error
        self._attach(create_experiment(config_json, port), stop_at_exit=True)
        logger.info("Experiment %s started: %s", self.id, self.url)

    def run(
        self, port: int | None = None, wait_completion: bool = True, debug: bool = False
    ) -> bool | None:
        """Start the experiment and, with ``wait_completion``, wait until it ends.

        Returns:
            True when it ended DONE or STOPPED, False when it ended in ERROR or its manager
            died; None when not waiting, or when Ctrl-C stopped it. After waiting, the manager
            is stopped; the results stay readable.
        """
        self.start(port, debug)
        if not wait_completion:
            return None
        return self._wait_then_stop()

    def stop(self) -> None:
        """Stop the experiment (every trial ends, USER_CANCELED) and its manager."""
        client = self._require()
        client.refresh()
        if client.running or client.orphaned:  # a dead manager's trials are ended too
            status = client.stop()
            logger.info("Experiment %s stopped (%s)", self.id, status)
        if client.process is not None:
            client.process.poll()
        self._stop_at_exit = False

    def _wait_then_stop(self) -> bool | None:
        signalled: Signalled | None = None
        try:
            with signals_raise():
                result: bool | None = self._wait_completion()
        except KeyboardInterrupt:
            logger.warning("Experiment %s: Ctrl-C, stopping it", self.id)
            result = None
        except Signalled as received:
            logger.warning("Experiment %s: %s, stopping it", self.id, received)
            signalled, result = received, None
        finally:
            self.stop()
        if signalled is not None:
            # Stopped; now end as the signal asked (its default handler is back by now).
            os.kill(os.getpid(), signalled.signum)
        return result

    def _wait_completion(self) -> bool:
        while True:
            client = self._require()
            state = client.check_status()
            status = state["status"]
            if state.get("managerDied"):
                logger.error(
                    "Experiment %s: its manager died (see %s); its trials are ended now",
                    self.id,
                    client.dir / "log",
                )
                return False
            if status in ("DONE", "STOPPED"):
                return True
            if status == "ERROR":
                return False
            time.sleep(_POLL_SECONDS)
            raise_pending()

    def _attach(self, client: ExperimentClient, stop_at_exit: bool) -> None:
        self._client = client
        self.id = client.id
        self.port = client.port
        if stop_at_exit and not self._stop_at_exit:
            self._stop_at_exit = True
            atexit.register(self._exit_hook)

    def _exit_hook(self) -> None:
        if not self._stop_at_exit or self._client is None:
            return
        try:
            self.stop()
        except Exception:  # the interpreter is ending: say so, do not raise
            logger.exception("Experiment %s could not be stopped at exit", self.id)

    @classmethod
    def _existing(cls, client: ExperimentClient) -> Experiment:
        from tunelab.config import ExperimentConfig

        try:
            config: ExperimentConfig | None = ExperimentConfig.from_dict(client.config())
        except Exception:  # a stored config that this version no longer reads
            config = None
        experiment = cls.__new__(cls)
        experiment.config = config
        experiment.id = client.id
        experiment.port = client.port
        experiment._client = client
        experiment._stop_at_exit = False
        return experiment

    @classmethod
    def resume(
        cls,
        experiment_id: str,
        port: int | None = None,
        wait_completion: bool = True,
        debug: bool = False,
    ) -> Experiment:
        """Take up a stopped or crashed experiment (see ``tunelab resume``).

        With ``wait_completion``, wait until it ends and stop it, as :meth:`run` does.
        ``debug`` is accepted for NNI's signature; a resumed manager logs at the level its
        config says.
        """
        experiment = cls._existing(resolve(experiment_id))
        assert experiment._client is not None
        experiment._attach(resume_experiment(experiment._client, port), stop_at_exit=True)
        logger.info("Experiment %s resumed: %s", experiment.id, experiment.url)
        if wait_completion:
            experiment._wait_then_stop()
        return experiment

    @classmethod
    def view(
        cls, experiment_id: str, port: int | None = None, non_blocking: bool = False
    ) -> Experiment:
        """Open a stopped experiment read-only (status VIEWED).

        Blocks until Ctrl-C and then closes the view, unless ``non_blocking``.
        """
        experiment = cls._existing(resolve(experiment_id))
        assert experiment._client is not None
        experiment._attach(view_experiment(experiment._client, port), stop_at_exit=True)
        logger.info("Experiment %s open read-only: %s", experiment.id, experiment.url)
        if not non_blocking:
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                experiment.stop()
        return experiment

    @classmethod
    def connect(cls, port: int) -> Experiment:
        """The experiment of this machine whose manager listens on ``port``. It is not stopped
        when this interpreter exits."""
        if isinstance(port, bool) or not isinstance(port, int):
            raise UsageError(
                f"connect takes the port of a running experiment's manager, an int (got "
                f"{port!r}); for an experiment id use Experiment.view(id) or Experiment.resume(id)"
            )
        return cls._existing(by_port(port))

    # -- reads ---------------------------------------------------------------------------

    def _require(self) -> ExperimentClient:
        if self._client is None:
            raise UsageError("this experiment has not been started: call run() or start()")
        return self._client

    def get_status(self) -> str:
        return str(self._require().check_status()["status"])

    def get_experiment_profile(self) -> dict[str, Any]:
        """Config (without secrets), state, budgets used, trial counts and best trial."""
        return self._require().experiment()

    def list_trial_jobs(self) -> list[TrialJob]:
        return [self._trial_job(view) for view in self._require().trials()]

    def get_trial_job(self, trial_job_id: str) -> TrialJob:
        return self._trial_job(self._require().trial(trial_job_id))

    def get_job_statistics(self) -> list[dict[str, Any]]:
        """``[{trialJobStatus, trialJobNumber}, ...]``, one entry per trial state present."""
        counts = self.get_experiment_profile().get("trialCounts") or {}
        return [
            {"trialJobStatus": status, "trialJobNumber": number}
            for status, number in sorted(counts.items())
        ]

    def get_job_metrics(self, trial_job_id: str | None = None) -> dict[str, list[TrialMetricData]]:
        """Every metric of one trial, or of every trial, by trial id, in the order reported."""
        client = self._require()
        views = [client.trial(trial_job_id)] if trial_job_id else client.trials()
        result: dict[str, list[TrialMetricData]] = {}
        for view in views:
            result[view["id"]] = [
                TrialMetricData(
                    timestamp=_ms(metric["time"]) or 0,
                    trialJobId=view["id"],
                    parameterId=str(view["sequence"]),
                    type="FINAL" if metric["type"] == "FINAL" else "PERIODICAL",
                    sequence=int(metric["step"]),
                    data=decode_json_value(metric["value"]),
                )
                for metric in client.metrics(view["id"])
            ]
        return result

    def export_data(self) -> list[TrialResult]:
        """Every trial with a final result: its parameters, the result, its id."""
        return [
            TrialResult(view["parameters"], decode_json_value(view["finalMetric"]), view["id"])
            for view in self._require().trials()
            if view.get("finalMetric") is not None
        ]

    def _trial_job(self, view: dict[str, Any]) -> TrialJob:
        client = self._require()
        folder = client.dir / "trials" / view["id"]
        final = []
        if view.get("finalMetric") is not None:
            final.append(
                TrialMetricData(
                    timestamp=_ms(view.get("endTime")) or 0,
                    trialJobId=view["id"],
                    parameterId=str(view["sequence"]),
                    type="FINAL",
                    sequence=0,
                    data=decode_json_value(view["finalMetric"]),
                )
            )
        return TrialJob(
            trialJobId=view["id"],
            status=view["status"],
            hyperParameters=[
                TrialHyperParameters(
                    parameter_id=view["sequence"],
                    parameter_source=view.get("parameterSource") or "algorithm",
                    parameters=view["parameters"],
                )
            ],
            logPath=str(folder),
            startTime=_ms(view.get("startTime")),
            endTime=_ms(view.get("endTime")),
            finalMetricData=final,
            stderrPath=str(folder / "trial.stderr"),
            sequenceId=view["sequence"],
            message=view.get("reason"),
            parameters=view["parameters"],
        )

    # -- changes -------------------------------------------------------------------------

    def update_trial_concurrency(self, value: int) -> None:
        self._require().update(trialConcurrency=value)

    def update_max_experiment_duration(self, value: str | int | float) -> None:
        """``value``: ``"90s"``, ``"30m"``, ``"1.5h"``, ``"2d"`` or a number of seconds."""
        self._require().update(maxExperimentDuration=value)

    def update_search_space(self, value: dict[str, Any]) -> None:
        self._require().update(searchSpace=value)

    def update_max_trial_number(self, value: int) -> None:
        self._require().update(maxTrialNumber=value)

    def kill_trial_job(self, trial_job_id: str) -> None:
        """End a waiting or running trial for good (USER_CANCELED, "killed by user")."""
        self._require().kill_trial(trial_job_id)


def _as_config_error(error: SearchSpaceError) -> ConfigError:
    return ConfigError(
        [
            Issue(
                f"searchSpace.{issue.where}" if issue.where else "searchSpace",
                issue.rule,
                issue.value,
                issue.fix,
                issue.show_value,
            )
            for issue in error.issues
        ]
    )
