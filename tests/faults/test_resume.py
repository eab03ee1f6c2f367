"""Resume after a stop and after the manager was killed with SIGKILL: nothing is lost.

Field case B24 (../shared/cases/field_cases.md): maxTrialNumber 10, concurrency 3, trials of
60 s (scaled); the manager is killed with 4 trials SUCCEEDED and 3 RUNNING, then resumed. The
trials numbered 4 and up wait for a gate file before they end, so the kill always comes at
exactly that moment; they keep reporting intermediate results while they wait, also while no
manager runs.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

from tests.faults.harness import (
    FINITE_SPACE,
    Experiment,
    FaultLab,
    Snapshot,
    check_table,
    wait_gone,
)
from tunelab.store import TrialRecord

GATED_TRIAL = """
import os, pathlib, time, tunelab
scale = float(os.environ["TUNELAB_TIME_SCALE"])
p = tunelab.get_next_parameter()
gate = pathlib.Path(os.environ["FAULT_GATE"])
start, step = time.time(), 0
while time.time() - start < 60 * scale or (tunelab.get_sequence_id() >= 4 and not gate.exists()):
    time.sleep(10 * scale)
    tunelab.report_intermediate_result(step)
    step += 1
tunelab.report_final_result(p["x"] * 10 + p["y"])
"""


def _b24(faults: FaultLab, tuner: str = "Random") -> tuple[Experiment, Path, Snapshot]:
    """An experiment held with 4 trials SUCCEEDED and 3 RUNNING; returns it, its gate file
    and the store at that moment."""
    gate = faults.root / f"gate-{tuner}"
    faults.extra_env = {"FAULT_GATE": str(gate)}
    config = faults.write(
        FINITE_SPACE,
        GATED_TRIAL,
        name=f"b24-{tuner}",
        maxTrialNumber=10,
        trialConcurrency=3,
        tuner={"name": tuner},
    )
    experiment = faults.create(config)

    def held_with_metrics(snap: Snapshot) -> bool:
        running = snap.by_status("RUNNING")
        return (
            len(snap.by_status("SUCCEEDED")) == 4
            and len(running) == 3
            and all(_lines(experiment, t) >= 2 for t in running)
        )

    held = experiment.wait_for(held_with_metrics, what="4 SUCCEEDED and 3 RUNNING")
    assert len(held.trials) == 7
    return experiment, gate, held


def _lines(experiment: Experiment, trial: TrialRecord) -> int:
    path = experiment.trial_dir(trial) / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _finished_unchanged(before: Snapshot, after: Snapshot) -> None:
    """The trials that had ended before the kill are exactly as they were, metrics included."""
    for old in before.by_status("SUCCEEDED"):
        new = next(t for t in after.trials if t.sequence == old.sequence)
        assert (new.trial_id, new.status, new.final, new.start_time, new.end_time) == (
            old.trial_id,
            old.status,
            old.final,
            old.start_time,
            old.end_time,
        )
        assert new.attempts == 1
        assert after.metrics_of(old.sequence) == before.metrics_of(old.sequence)


def test_b24_sigkill_with_trials_running_reattaches_them(faults: FaultLab) -> None:
    experiment, gate, held = _b24(faults)
    running = {t.sequence: t for t in held.by_status("RUNNING")}
    processes = experiment.trial_processes()

    experiment.kill_manager()
    # The trials outlive their manager, and the store still says they run.
    assert all(p.is_running() for p in processes)
    assert {t.sequence for t in experiment.snapshot().by_status("RUNNING")} == set(running)

    experiment.resume()
    gate.touch()
    done = experiment.wait_status("DONE")

    problems, figures = check_table(experiment, 10)
    assert problems == []
    _finished_unchanged(held, done)
    for sequence, old in running.items():
        new = next(t for t in done.trials if t.sequence == sequence)
        # Re-attached, not run again: same process, one attempt, start time kept.
        assert (new.trial_id, new.attempts, new.start_time) == (old.trial_id, 1, old.start_time)
        assert new.status == "SUCCEEDED"
        # Its end is seen at once, even though its supervisor is no child of the new manager
        # (where nobody reaps orphans, it stays a zombie).
        exited = (experiment.trial_dir(new) / ".exitcode").stat().st_mtime
        assert new.end_time is not None and new.end_time - exited < 1.0
    kinds = [e["kind"] for e in _events(experiment)]
    assert kinds.count("trial_reattached") == 3
    assert done.experiment["used_seconds"] >= held.experiment["used_seconds"]
    assert figures["metric_lines"] > 10 * 6


def test_b24_sigkill_of_manager_and_trials_reruns_them_under_same_ids(faults: FaultLab) -> None:
    experiment, gate, held = _b24(faults, tuner="TPE")
    running = {t.sequence: t for t in held.by_status("RUNNING")}

    experiment.kill_manager()
    assert experiment.kill_trials() >= 3
    gate.touch()
    experiment.resume()
    done = experiment.wait_status("DONE")

    problems, _ = check_table(experiment, 10)
    assert problems == []
    _finished_unchanged(held, done)
    for sequence, old in running.items():
        new = next(t for t in done.trials if t.sequence == sequence)
        assert new.trial_id == old.trial_id
        assert (new.status, new.attempts) == ("SUCCEEDED", 2)
        # The first attempt's metrics stay, tagged with attempt 1; the result is attempt 2's.
        attempts = {m.attempt for m in done.metrics_of(sequence)}
        assert attempts == {1, 2}
        second = [m for m in done.metrics_of(sequence) if m.attempt == 2]
        steps = [m.step for m in second if m.type == "INTERMEDIATE"]
        assert steps == list(range(len(steps))) and [m.type for m in second][-1] == "FINAL"
        trial_dir = experiment.trial_dir(new)
        assert json.loads((trial_dir / "parameters.json").read_text())["parameter_source"] == (
            "resumed"
        )
    # Numbering went on from 7 without a gap or a collision, and no trial counted twice.
    assert [t.sequence for t in done.trials] == list(range(10))


def test_resume_after_stop_runs_stopped_trials_again(faults: FaultLab) -> None:
    experiment, gate, held = _b24(faults)
    running = {t.sequence for t in held.by_status("RUNNING")}

    experiment.stop()
    stopped = experiment.snapshot()
    assert stopped.status == "STOPPED"
    assert {t.sequence for t in stopped.by_status("USER_CANCELED")} == running
    assert experiment.trial_processes() == []

    gate.touch()
    experiment.resume()
    done = experiment.wait_status("DONE")
    problems, _ = check_table(experiment, 10)
    assert problems == []
    _finished_unchanged(held, done)
    for sequence in running:
        trial = next(t for t in done.trials if t.sequence == sequence)
        assert (trial.status, trial.attempts) == ("SUCCEEDED", 2)
    # The stopped time does not count as used: the clock went on from the stop.
    assert done.experiment["used_seconds"] >= stopped.experiment["used_seconds"]


def test_killed_again_right_after_resume(faults: FaultLab) -> None:
    """Killed again as soon as the resumed manager listens (while it re-attaches its trials),
    then resumed once more."""
    experiment, gate, _held = _b24(faults)
    for _ in range(2):
        experiment.kill_manager()
        experiment.resume()
    gate.touch()
    experiment.wait_status("DONE")
    problems, _ = check_table(experiment, 10)
    assert problems == []


def _events(experiment: Experiment) -> list[dict]:
    from tunelab.store import DB_FILE, ExperimentStore

    store = ExperimentStore(experiment.dir / DB_FILE, readonly=True)
    try:
        return store.events()
    finally:
        store.close()


# Ignores SIGTERM, so that a stop or a kill spends its grace period on it; waits for the gate.
# Each intermediate result carries the pid that reported it.
STUBBORN_TRIAL = """
import os, pathlib, signal, time, tunelab
signal.signal(signal.SIGTERM, signal.SIG_IGN)
tunelab.get_next_parameter()
gate = pathlib.Path(os.environ["FAULT_GATE"])
step = 0
while not gate.exists() or step < 3:
    time.sleep(0.1)
    tunelab.report_intermediate_result({"default": step, "pid": os.getpid()})
    step += 1
tunelab.report_final_result(1.0)
"""


def _stubborn(faults: FaultLab, name: str) -> tuple[Experiment, Path, Snapshot]:
    gate = faults.root / f"gate-{name}"
    faults.extra_env = {"FAULT_GATE": str(gate)}
    config = faults.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}},
        STUBBORN_TRIAL,
        name=name,
        maxTrialNumber=3,
        trialConcurrency=2,
    )
    experiment = faults.create(config)
    running = experiment.wait_for(
        lambda s: (
            len(s.by_status("RUNNING")) == 2 and all(_lines(experiment, t) for t in s.trials)
        ),
        what="2 trials running and reporting",
    )
    return experiment, gate, running


def _quietly(experiment: Experiment, path: str) -> None:
    """``DELETE path``, whose answer never comes when the manager is killed meanwhile."""
    with contextlib.suppress(Exception):
        experiment.api("DELETE", path)


def _pids_by_attempt(snap: Snapshot, sequence: int) -> dict[int, set[int]]:
    pids: dict[int, set[int]] = {}
    for metric in snap.metrics_of(sequence):
        if metric.type == "INTERMEDIATE":
            pids.setdefault(metric.attempt, set()).add(metric.value["pid"])
    return pids


def test_sigkill_during_a_stop_ends_the_stopped_trials_before_they_run_again(
    faults: FaultLab,
) -> None:
    experiment, gate, running = _stubborn(faults, "kill-in-stop")
    stopper = threading.Thread(target=_quietly, args=(experiment, "/experiment"))
    stopper.start()
    # The stop has written its USER_CANCELED; the manager dies in the grace period it gives.
    experiment.wait_for(
        lambda s: all(t.status == "USER_CANCELED" for t in s.trials), timeout=10, what="frozen"
    )
    experiment.kill_manager()
    stopper.join(30)
    old = experiment.trial_processes()
    assert old, "the stubborn trials should have outlived their manager"

    experiment.resume()
    # The interrupted stop is carried out: the old processes end before the trials run again.
    assert wait_gone(old, 15) == []
    gate.touch()
    done = experiment.wait_status("DONE")
    problems, _ = check_table(experiment, 3)
    assert problems == []
    for trial in running.by_status("RUNNING"):
        pids = _pids_by_attempt(done, trial.sequence)
        assert sorted(pids) == [1, 2] and len(pids[2]) == 1 and not pids[1] & pids[2]


def test_sigkill_while_killing_a_trial_leaves_it_killed(faults: FaultLab) -> None:
    experiment, gate, running = _stubborn(faults, "kill-in-kill")
    victim = running.by_status("RUNNING")[0]
    killer = threading.Thread(target=_quietly, args=(experiment, f"/trials/{victim.trial_id}"))
    killer.start()
    experiment.wait_for(
        lambda s: s.trials[victim.sequence].status == "USER_CANCELED", timeout=10, what="killed"
    )
    experiment.kill_manager()
    killer.join(30)
    victim_processes = [
        p
        for p in experiment.trial_processes()
        if p.environ().get("TUNELAB_TRIAL_ID") == victim.trial_id
    ]
    assert victim_processes

    experiment.resume()
    assert wait_gone(victim_processes, 15) == []
    gate.touch()
    done = experiment.wait_status("DONE")
    killed = done.trials[victim.sequence]
    assert (killed.status, killed.reason, killed.attempts) == (
        "USER_CANCELED",
        "killed by user",
        1,
    )
    # The killed trial still counts: two more ran, to maxTrialNumber 3.
    assert [t.status for t in done.trials].count("SUCCEEDED") == 2


def test_duration_budget_goes_on_from_what_was_used_across_a_kill(faults: FaultLab) -> None:
    """maxExperimentDuration counts the time a manager ran the experiment: not the time it was
    dead, and not from zero again after a resume."""
    trial = "import os, time, tunelab\ntunelab.get_next_parameter()\n"
    trial += "time.sleep(50 * float(os.environ['TUNELAB_TIME_SCALE']))\n"
    trial += "tunelab.report_final_result(1.0)\n"
    config = faults.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}},
        trial,
        name="duration",
        maxTrialNumber=1000,
        trialConcurrency=2,
        maxExperimentDuration="5m",  # 3 s scaled
    )
    started = time.monotonic()
    experiment = faults.create(config)
    limit = 300 * faults.scale
    while (observed := experiment.api("GET", "/experiment").json()["usedSeconds"]) < limit / 2:
        time.sleep(0.05)
    experiment.kill_manager()
    alive = time.monotonic() - started
    # What the store kept of the used time: at most one tick of the loop (0.5 s) is lost.
    assert experiment.snapshot().experiment["used_seconds"] >= observed - 0.6
    time.sleep(2.0)  # dead time: it must not count
    resumed = time.monotonic()
    experiment.resume()
    done = experiment.wait_status("DONE")
    alive += time.monotonic() - resumed
    used = done.experiment["used_seconds"]
    assert limit <= used <= alive
    # Trials stop being submitted once the budget is used: about limit / 0.5 s x 2 slots.
    assert len(done.trials) <= 2 * (limit / 0.5) + 4
    assert all(t.status == "SUCCEEDED" for t in done.trials)
