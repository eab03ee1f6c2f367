"""Resume after a stop and after the manager was killed with SIGKILL: nothing is lost.

Field case B24 (../shared/cases/field_cases.md): maxTrialNumber 10, concurrency 3, trials of
60 s (scaled); the manager is killed with 4 trials SUCCEEDED and 3 RUNNING, then resumed. The
trials numbered 4 and up wait for a gate file before they end, so the kill always comes at
exactly that moment; they keep reporting intermediate results while they wait, also while no
manager runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.faults.harness import FINITE_SPACE, Experiment, FaultLab, Snapshot, check_table
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
