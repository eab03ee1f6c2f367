"""Drive real experiments from the outside: create, kill -9, resume, stop, then check the table.

Everything here works on real processes: the ``tunelab`` CLI in subprocesses, managers that
are killed with SIGKILL, trials that keep running without them. The fault tests
(``tests/faults``) and the fault benchmark (``benchmarks/faults/run.py``) share it, so the
benchmark's 100 kills run exactly what the test suite runs 20 times.

A lab is one private ``TUNELAB_HOME``. Every process of a lab (its managers, its trials and
their children) carries that ``TUNELAB_HOME`` in its environment, which is how
:func:`lab_processes` finds what a test left running without a registry.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import yaml

from tunelab.store import (
    DB_FILE,
    ExperimentStore,
    ManagerInfo,
    MetricRecord,
    TrialRecord,
    experiment_dirs,
    find_experiment,
    read_manager_info,
)
from tunelab.trial import METRICS_FILE, read_metrics

__all__ = [
    "STEPS_TRIAL",
    "Experiment",
    "FaultLab",
    "Snapshot",
    "check_table",
    "lab_processes",
    "run_chaos",
]

T = TypeVar("T")

FINAL_TRIAL_STATES = {"SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}
ACTIVE_EXPERIMENT_STATES = {"INITIALIZED", "RUNNING", "NO_MORE_TRIAL", "STOPPING"}

# Reports ``steps`` intermediate results a short while apart, then one final result. The values
# follow from the parameters, so a check can tell each trial's lines apart.
STEPS_TRIAL = """
import os, time, tunelab
scale = float(os.environ.get("TUNELAB_TIME_SCALE", "1"))
p = tunelab.get_next_parameter()
steps = int(os.environ.get("FAULT_STEPS", "5"))
base = p["x"] * 10 + p["y"]
for step in range(steps):
    time.sleep(float(os.environ.get("FAULT_STEP_SECONDS", "15")) * scale)
    tunelab.report_intermediate_result(base + step / 100)
tunelab.report_final_result({"default": base, "steps": steps})
"""

# A finite space of 8 x 3 = 24 points: a tuner that samples a point twice is caught.
FINITE_SPACE = {
    "x": {"_type": "choice", "_value": list(range(8))},
    "y": {"_type": "choice", "_value": [0, 1, 2]},
}


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@dataclass
class Snapshot:
    """What an experiment's store says, read-only."""

    experiment: dict[str, Any]
    trials: list[TrialRecord]
    metrics: list[MetricRecord]

    @property
    def status(self) -> str:
        return str(self.experiment["status"])

    def by_status(self, status: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == status]

    def metrics_of(self, sequence: int) -> list[MetricRecord]:
        return [m for m in self.metrics if m.sequence == sequence]


def lab_processes(home: Path) -> list[psutil.Process]:
    """Every live process of a lab: the environment names its ``TUNELAB_HOME``."""
    found = []
    wanted = str(home)
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get("TUNELAB_HOME") == wanted:
                found.append(process)
        except psutil.Error:
            continue
    return found


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each process has exited (a zombie counts as exited); return the others."""
    deadline = time.monotonic() + timeout
    left = list(processes)
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        if left:
            time.sleep(0.02)
    return left


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class FaultLab:
    """A private tunelab home and the experiments made in it.

    Args:
        home: the ``TUNELAB_HOME`` of this lab.
        root: where experiment folders (config, search space, trial script) are written.
        scale: ``TUNELAB_TIME_SCALE`` for every manager of the lab.
    """

    def __init__(self, home: Path, root: Path, scale: float = 0.01) -> None:
        self.home = home
        self.root = root
        self.scale = scale
        self.extra_env: dict[str, str] = {}

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TUNELAB_HOME"] = str(self.home)
        env["TUNELAB_TIME_SCALE"] = str(self.scale)
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, timeout: float = 120) -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "tunelab", *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    def write(self, search_space: Any, trial: str, name: str = "exp", **config: Any) -> Path:
        """An experiment folder with a trial script; returns the config path (NNI keys)."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "trial.py").write_text(textwrap.dedent(trial), encoding="utf-8")
        (folder / "search_space.json").write_text(json.dumps(search_space), encoding="utf-8")
        full: dict[str, Any] = {
            "searchSpaceFile": "search_space.json",
            "trialCommand": f"{sys.executable} trial.py",
            "trialCodeDirectory": ".",
            "trialConcurrency": 2,
            "tuner": {"name": "Random"},
            "trainingService": {"platform": "local"},
        }
        full.update(config)
        path = folder / "config.yml"
        path.write_text(yaml.safe_dump(full, allow_unicode=True), encoding="utf-8")
        return path

    def create(self, config: Path) -> Experiment:
        """``tunelab create`` (in the background); the experiment once its manager listens."""
        result = self.cli("create", "--config", str(config))
        if result.code != 0:
            raise AssertionError(f"tunelab create failed ({result.code}): {result.stderr}")
        experiment_id = result.stdout.split()[1]
        found = self._find(experiment_id)
        return Experiment(self, experiment_id, found)

    def _find(self, experiment_id: str) -> Path:
        found = self._in_home(find_experiment, experiment_id)
        if found is None:
            raise AssertionError(f"experiment {experiment_id} has no folder in {self.home}")
        return found[1]

    def _in_home(self, function: Callable[..., T], *args: Any) -> T:
        """Call one of tunelab.store's functions as if this lab's home were the user's."""
        before = os.environ.get("TUNELAB_HOME")
        os.environ["TUNELAB_HOME"] = str(self.home)
        try:
            return function(*args)
        finally:
            if before is None:
                del os.environ["TUNELAB_HOME"]
            else:
                os.environ["TUNELAB_HOME"] = before

    def processes(self) -> list[psutil.Process]:
        return lab_processes(self.home)

    def clean_up(self, timeout: float = 30) -> list[str]:
        """Stop every manager of the lab, then kill whatever still runs; describe the latter."""
        for experiment_id, exp_dir in self._in_home(experiment_dirs).items():
            Experiment(self, experiment_id, exp_dir).stop(missing_ok=True)
        left = wait_gone(self.processes(), timeout)
        described = []
        for process in left:
            try:
                described.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
                process.kill()
            except psutil.Error:
                continue
        wait_gone(left, 10)
        return described


class Experiment:
    """One experiment of a lab, reached through its folder, its store and its manager."""

    def __init__(self, lab: FaultLab, experiment_id: str, exp_dir: Path) -> None:
        self.lab = lab
        self.id = experiment_id
        self.dir = exp_dir

    # -- manager ---------------------------------------------------------------------------

    def manager(self) -> ManagerInfo | None:
        """The live manager, or None."""
        info = read_manager_info(self.dir)
        return info if info is not None and info.is_alive() else None

    def wait_manager(self, timeout: float = 60, other_than: int | None = None) -> ManagerInfo:
        """Wait until a manager (not the one with pid ``other_than``) listens."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.manager()
            if info is not None and info.pid != other_than:
                return info
            time.sleep(0.02)
        log = (self.dir / "log" / "manager.out").read_text("utf-8", "replace")[-2000:]
        raise AssertionError(f"no manager for {self.id} within {timeout} s; manager.out: {log}")

    def kill_manager(self) -> int:
        """SIGKILL the manager (its trials are left running, as after a crash); its pid."""
        info = self.manager()
        if info is None:
            raise AssertionError(f"experiment {self.id} has no live manager to kill")
        process = psutil.Process(info.pid)
        process.kill()
        if wait_gone([process], 10):
            raise AssertionError(f"manager {info.pid} survived SIGKILL")
        return info.pid

    def trial_processes(self) -> list[psutil.Process]:
        """Live processes started for this experiment's trials (wrappers, trials, children)."""
        trials = str(self.dir / "trials")
        found = []
        for process in self.lab.processes():
            try:
                if process.environ().get("TUNELAB_TRIAL_DIR", "").startswith(trials):
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def kill_trials(self) -> int:
        """SIGKILL every trial process of the experiment (a machine that lost them all)."""
        processes = self.trial_processes()
        for process in processes:
            try:
                process.kill()
            except psutil.Error:
                continue
        wait_gone(processes, 10)
        return len(processes)

    def resume(self, timeout: float = 60) -> ManagerInfo:
        """``tunelab resume``, and wait until the new manager listens."""
        old = read_manager_info(self.dir)
        if self.manager() is not None:
            raise AssertionError(f"experiment {self.id} still has a live manager")
        result = self.lab.cli("resume", self.id, timeout=timeout)
        if result.code != 0:
            raise AssertionError(f"tunelab resume failed ({result.code}): {result.stderr}")
        return self.wait_manager(timeout, other_than=None if old is None else old.pid)

    def stop(self, missing_ok: bool = False, timeout: float = 60) -> None:
        """Stop through the API (``DELETE /experiment``) and wait for the manager to exit."""
        info = self.manager()
        if info is None:
            if missing_ok:
                return
            raise AssertionError(f"experiment {self.id} is not running")
        with contextlib.suppress(httpx.HTTPError):
            self.api("DELETE", "/experiment", timeout=timeout)
        if wait_gone([psutil.Process(info.pid)], timeout):
            raise AssertionError(f"manager {info.pid} did not exit after stop")

    def api(self, method: str, path: str, timeout: float = 30, **kwargs: Any) -> Any:
        info = self.manager()
        if info is None:
            raise AssertionError(f"experiment {self.id} is not running")
        response = httpx.request(
            method,
            f"{info.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {info.token}"},
            timeout=timeout,
            **kwargs,
        )
        response.raise_for_status()
        return response

    # -- store -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        store = ExperimentStore(self.dir / DB_FILE, readonly=True)
        try:
            return Snapshot(store.experiment(), store.trials(), store.metrics())
        finally:
            store.close()

    def wait_for(
        self, predicate: Callable[[Snapshot], bool], timeout: float = 60, what: str = ""
    ) -> Snapshot:
        deadline = time.monotonic() + timeout
        snap = self.snapshot()
        while not predicate(snap):
            if time.monotonic() > deadline:
                states = [(t.sequence, t.status) for t in snap.trials]
                raise AssertionError(
                    f"timed out waiting for {what or predicate}: {snap.status} {states}"
                )
            time.sleep(0.05)
            snap = self.snapshot()
        return snap

    def wait_status(self, *statuses: str, timeout: float = 120) -> Snapshot:
        return self.wait_for(lambda s: s.status in statuses, timeout, f"status {statuses}")

    def trial_dir(self, trial: TrialRecord) -> Path:
        return self.dir / "trials" / trial.trial_id


# -- the checks --------------------------------------------------------------------------------


def check_table(
    experiment: Experiment,
    max_trials: int,
    *,
    steps: int | None = None,
    distinct_parameters: bool = True,
    all_succeeded: bool = True,
    require_final: bool = True,
) -> tuple[list[str], dict[str, int]]:
    """Check an ended experiment's table of trials and metrics against its trials' files.

    Returns the problems found (empty when all is well) and what was checked: trials, metric
    lines, attempts.
    """
    snap = experiment.snapshot()
    problems: list[str] = []
    trials = snap.trials

    if len(trials) != max_trials:
        problems.append(f"{len(trials)} trials, expected maxTrialNumber {max_trials}")
    sequences = [t.sequence for t in trials]
    if sequences != list(range(len(trials))):
        problems.append(f"sequence numbers not 0..{len(trials) - 1}: {sequences}")
    ids = [t.trial_id for t in trials]
    if len(set(ids)) != len(ids):
        problems.append(f"trial ids repeat: {ids}")
    if snap.experiment["next_sequence"] != len(trials):
        problems.append(f"next_sequence {snap.experiment['next_sequence']} != {len(trials)}")
    if distinct_parameters:
        keys = [json.dumps(t.parameters, sort_keys=True) for t in trials]
        if len(set(keys)) != len(keys):
            problems.append("a point of the finite space was tried twice")

    lines_checked = 0
    for trial in trials:
        name = f"trial {trial.trial_id} (#{trial.sequence})"
        if trial.status not in FINAL_TRIAL_STATES:
            problems.append(f"{name} is {trial.status}, not in a final state")
        if all_succeeded and trial.status != "SUCCEEDED":
            problems.append(f"{name} is {trial.status}: {trial.reason}")
        if require_final and trial.status == "SUCCEEDED" and trial.final is None:
            problems.append(f"{name} SUCCEEDED without its final metric")
        lines_checked += _check_metrics(
            experiment, trial, snap.metrics_of(trial.sequence), steps, problems
        )

    left = experiment.trial_processes()
    if left:
        problems.append(f"{len(left)} trial processes still run: {[p.pid for p in left]}")
    figures = {
        "trials": len(trials),
        "metric_lines": lines_checked,
        "attempts": sum(t.attempts for t in trials),
    }
    return problems, figures


def _check_metrics(
    experiment: Experiment,
    trial: TrialRecord,
    stored: list[MetricRecord],
    steps: int | None,
    problems: list[str],
) -> int:
    """Every line of the trial's metrics file is stored exactly once, tagged with the attempt
    that wrote it; the trial's result is its last attempt's first final."""
    name = f"trial {trial.trial_id} (#{trial.sequence})"
    written, _ = read_metrics(experiment.trial_dir(trial) / METRICS_FILE)
    in_file = {line["seq"]: line for line in written}
    in_store = {m.line: m for m in stored}
    if len(in_store) != len(stored):
        problems.append(f"{name}: a metric line is stored twice")
    missing = sorted(set(in_file) - set(in_store))
    extra = sorted(set(in_store) - set(in_file))
    if missing:
        problems.append(f"{name}: metric lines {missing} of metrics.jsonl are not stored")
    if extra:
        problems.append(f"{name}: stored metric lines {extra} are not in metrics.jsonl")
    for seq in sorted(set(in_file) & set(in_store)):
        line, metric = in_file[seq], in_store[seq]
        if line["type"] != metric.type or not _same(line["value"], metric.value):
            problems.append(
                f"{name}: line {seq} stored as {metric.value!r}, not {line['value']!r}"
            )

    ordered = [in_store[seq] for seq in sorted(in_store)]
    attempts = [m.attempt for m in ordered]
    if attempts != sorted(attempts):
        problems.append(f"{name}: attempt tags out of order {attempts}")
    if any(a > trial.attempts for a in attempts):
        problems.append(f"{name}: a metric tagged with attempt > {trial.attempts}")
    last = [m for m in ordered if m.attempt == trial.attempts]
    if trial.status == "SUCCEEDED" and steps is not None:
        intermediates = [m for m in last if m.type == "INTERMEDIATE"]
        if [m.step for m in intermediates] != list(range(steps)):
            problems.append(
                f"{name}: its last attempt's intermediate steps are "
                f"{[m.step for m in intermediates]}, expected 0..{steps - 1}"
            )
    finals = [m for m in last if m.type == "FINAL"]
    if trial.status == "SUCCEEDED" and trial.final is not None:
        if not finals:
            problems.append(f"{name}: its result did not come from its last attempt")
        elif not _same(finals[0].value, trial.final):
            problems.append(f"{name}: result {trial.final!r} is not its first final")
    return len(in_file)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


# -- fault injection ---------------------------------------------------------------------------


@dataclass
class ChaosRun:
    """One experiment killed again and again: what happened and what the checks found."""

    seed: int
    kills: int = 0
    kills_with_trials: int = 0
    trial_processes_killed: int = 0
    resumes: int = 0
    problems: list[str] = field(default_factory=list)
    figures: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    events: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "kills": self.kills,
            "kills_with_trials": self.kills_with_trials,
            "trial_processes_killed": self.trial_processes_killed,
            "resumes": self.resumes,
            "problems": self.problems,
            "figures": self.figures,
            "seconds": round(self.seconds, 2),
        }


def run_chaos(
    lab: FaultLab,
    seed: int,
    kills: int,
    *,
    max_trials: int = 20,
    concurrency: int = 3,
    steps: int = 5,
    max_delay: float = 1.2,
    kill_trials_every: int = 4,
    name: str = "chaos",
    log: Callable[[str], None] = lambda line: None,
) -> ChaosRun:
    """Run one experiment and SIGKILL its manager ``kills`` times at random moments, resuming
    after each kill; then let it finish and check its table.

    Every ``kill_trials_every``-th kill also SIGKILLs every trial process, so that interrupted
    trials must run again under the same id. The delays come from ``seed``; a failure is
    reproduced by running again with it. Fewer kills happen when the experiment ends first.
    """
    rng = random.Random(seed)
    run = ChaosRun(seed)
    started = time.monotonic()
    config = lab.write(
        FINITE_SPACE,
        STEPS_TRIAL,
        name=f"{name}-{seed}",
        maxTrialNumber=max_trials,
        trialConcurrency=concurrency,
    )
    lab.extra_env = {"FAULT_STEPS": str(steps)}
    experiment = lab.create(config)
    log(f"chaos seed {seed}: experiment {experiment.id} in {experiment.dir}")
    used = 0.0
    while run.kills < kills:
        delay = _delay(rng, max_delay)
        time.sleep(delay)
        snap = experiment.snapshot()
        if snap.status not in ACTIVE_EXPERIMENT_STATES:
            break
        used = max(used, snap.experiment["used_seconds"])
        pid = experiment.kill_manager()
        run.kills += 1
        also_trials = kill_trials_every > 0 and run.kills % kill_trials_every == 0
        if also_trials:
            run.kills_with_trials += 1
            run.trial_processes_killed += experiment.kill_trials()
        event = (
            f"kill {run.kills}: manager {pid} after {delay:.3f} s "
            f"({'with its trials, ' if also_trials else ''}"
            f"{len(snap.by_status('SUCCEEDED'))} succeeded, "
            f"{len(snap.by_status('RUNNING'))} running)"
        )
        run.events.append(event)
        log(event)
        experiment.resume()
        run.resumes += 1
        after = experiment.snapshot().experiment["used_seconds"]
        if after + 1e-6 < used:
            run.problems.append(f"used time went back from {used:.2f} s to {after:.2f} s")

    experiment.wait_status("DONE", "ERROR", "STOPPED", timeout=180)
    experiment.stop(missing_ok=True)
    problems, run.figures = check_table(experiment, max_trials, steps=steps)
    snap = experiment.snapshot()
    if snap.status != "DONE":
        problems.append(f"experiment ended {snap.status}: {snap.experiment['error']}")
    run.problems.extend(problems)
    run.seconds = time.monotonic() - started
    return run


def _delay(rng: random.Random, max_delay: float) -> float:
    """A moment to kill at: often soon after start-up (recovery, first launches), else any."""
    if rng.random() < 0.25:
        return rng.uniform(0.0, 0.15)
    return rng.uniform(0.0, max_delay)
