"""An experiment whose manager died (SIGKILL) while trials ran: what the CLI shows, and what
stop and delete do. Trials outlive their manager by design (they are taken up by a resume), so
until a resume or a stop the store says they run; the listing says why, a stop takes them up,
records those that ended meanwhile and ends the others, and a delete ends them first."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.conftest import Lab, process_gone
from tests.faults.harness import lab_processes

SPACE = {"x": {"_type": "choice", "_value": [1, 2]}}
# Each trial reports once, then waits for its own gate file (by sequence number).
TRIAL = """
import pathlib, time, tunelab
p = tunelab.get_next_parameter()
tunelab.report_intermediate_result(0.5)
gate = pathlib.Path({gates!r}) / str(tunelab.get_sequence_id())
while not gate.exists():
    time.sleep(0.05)
tunelab.report_final_result(p["x"])
"""


def _orphan(lab: Lab) -> tuple[str, Path, list[int]]:
    """Two trials running, then the manager killed; returns the experiment, the gates folder
    and the trials' process ids."""
    exp, gates, pids = _orphan_ready(lab)
    client = lab.client(exp)
    os.kill(client.manager.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not process_gone(client.manager.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(process_gone(pid) for pid in pids)  # the trials outlive their manager
    return exp, gates, pids


def _orphan_ready(lab: Lab) -> tuple[str, Path, list[int]]:
    """Two trials running under a live manager; returns what :func:`_orphan` returns."""
    gates = lab.root / "gates"
    gates.mkdir()
    config = lab.write(
        SPACE,
        TRIAL.format(gates=str(gates)),
        maxTrialNumber=2,
        trialConcurrency=2,
        tuner={"name": "GridSearch"},
    )
    exp = lab.start(config)
    lab.wait_running(exp, 2)
    client = lab.client(exp)
    pids = [int(p.read_text()) for p in client.dir.glob("trials/*/.pid")]
    assert len(pids) == 2
    return exp, gates, pids


def test_stop_after_the_manager_died_records_what_ended_and_ends_the_rest(lab: Lab) -> None:
    exp, gates, pids = _orphan(lab)

    listed = lab.tl("trial", "ls", exp, "--json").json()
    assert [t["status"] for t in listed] == ["RUNNING", "RUNNING"]
    for trial in listed:
        assert trial["reason"] == (
            f"the experiment's manager died; tunelab resume {exp} takes the trial up, "
            f"tunelab stop {exp} ends it"
        )

    # Trial 0 ends while no manager watches it.
    (gates / "0").touch()
    first = lab.client(exp).dir / "trials" / listed[0]["id"]
    deadline = time.monotonic() + 20
    while not (first / ".exitcode").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (first / ".exitcode").read_text().strip() == "0"

    result = lab.cli("stop", "--all")
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Experiment {exp} stopped (STOPPED); its manager had died: its trials were taken up, "
        "those that had ended recorded and the others ended.",
        f"Stopped 1 experiment: {exp}",
    ]
    trials = sorted(lab.client(exp).trials(), key=lambda t: t["sequence"])
    assert [(t["status"], t["reason"]) for t in trials] == [
        ("SUCCEEDED", "exit code 0"),
        ("USER_CANCELED", "experiment stopped"),
    ]
    assert trials[0]["finalMetric"] == 1
    assert trials[0]["latestIntermediate"] == {"step": 0, "value": 0.5}
    assert all(process_gone(pid) for pid in pids)
    assert lab_processes(lab.home) == []
    assert lab.client(exp).experiment()["status"] == "STOPPED"
    line = lab.tl("stop", exp).stderr.strip()
    assert line == f"tunelab: experiment {exp} is not running (STOPPED)"

    # A resume runs the stopped trial again under its own id; nothing counts twice.
    (gates / "1").touch()
    result = lab.cli("resume", exp, "--foreground")
    assert result.code == 0, result.stderr
    trials = sorted(lab.client(exp).trials(), key=lambda t: t["sequence"])
    assert [t["id"] for t in trials] == [t["id"] for t in listed]
    assert [(t["status"], t["finalMetric"], t["attempts"]) for t in trials] == [
        ("SUCCEEDED", 1, 1),
        ("SUCCEEDED", 2, 2),
    ]
    assert lab.client(exp).experiment()["trialCount"] == 2


def test_delete_after_the_manager_died_ends_its_trials_first(lab: Lab) -> None:
    exp, _, pids = _orphan(lab)
    exp_dir = lab.client(exp).dir

    result = lab.cli("experiment", "delete", exp, "--yes")

    assert result.code == 0, result.stderr
    assert all(process_gone(pid) for pid in pids)
    assert lab_processes(lab.home) == []
    assert not exp_dir.exists()


def test_a_stop_whose_manager_hangs_ends_the_trials_all_the_same(lab: Lab) -> None:
    exp, _, pids = _orphan_ready(lab)
    client = lab.client(exp)
    os.kill(client.manager.pid, signal.SIGSTOP)  # it takes no request and never ends

    status = client.stop(timeout=2)

    assert status == "STOPPED"
    assert all(process_gone(pid) for pid in pids)
    assert lab_processes(lab.home) == []
    assert {t["status"] for t in lab.client(exp).trials()} == {"USER_CANCELED"}


def test_stop_closes_the_view_of_a_dead_managers_experiment_and_ends_its_trials(
    lab: Lab,
) -> None:
    exp, _, pids = _orphan(lab)
    assert lab.cli("view", exp).code == 0

    result = lab.cli("stop", exp)

    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Experiment {exp}: read-only view closed.",
        f"Experiment {exp} stopped (STOPPED); its manager had died: its trials were taken up, "
        "those that had ended recorded and the others ended.",
    ]
    assert all(process_gone(pid) for pid in pids)
    assert lab_processes(lab.home) == []
    assert {t["status"] for t in lab.client(exp).trials()} == {"USER_CANCELED"}


def test_a_stop_after_everything_ended_and_the_budget_is_used_says_done(lab: Lab) -> None:
    exp, gates, pids = _orphan(lab)
    for sequence in ("0", "1"):
        (gates / sequence).touch()
    deadline = time.monotonic() + 20
    while not all(process_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)

    result = lab.cli("stop", exp)

    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"Experiment {exp} stopped (DONE); its manager had died")
    trials = sorted(lab.client(exp).trials(), key=lambda t: t["sequence"])
    assert [(t["status"], t["finalMetric"]) for t in trials] == [
        ("SUCCEEDED", 1),
        ("SUCCEEDED", 2),
    ]


KILLER_TRIAL = """
import json, os, pathlib, signal, time, tunelab
tunelab.get_next_parameter()
if tunelab.get_sequence_id() == 0:
    folder = pathlib.Path(os.environ["TUNELAB_HOME"]) / tunelab.get_experiment_id()
    manager = json.loads((folder / "manager.json").read_text())["pid"]
    os.kill(manager, signal.SIGKILL)
time.sleep(120)
"""


def test_python_run_whose_manager_dies_returns_false_and_leaves_nothing_running(
    lab: Lab,
) -> None:
    from tunelab import Experiment
    from tunelab.config import load_config

    config = lab.write(SPACE, KILLER_TRIAL, maxTrialNumber=2, trialConcurrency=2)
    experiment = Experiment(load_config(config))

    assert experiment.run() is False

    client = lab.client(experiment.id)
    assert not client.running and not client.orphaned
    assert client.experiment()["status"] == "STOPPED"
    assert all(t["status"] != "RUNNING" for t in client.trials())
    assert lab_processes(lab.home) == []


def test_a_loaded_copy_never_touches_the_originals_trials(lab: Lab, tmp_path: Path) -> None:
    gates = lab.root / "gates"
    gates.mkdir()
    config = lab.write(SPACE, TRIAL.format(gates=str(gates)), maxTrialNumber=2)
    exp = lab.start(config)
    lab.wait_running(exp, 2)
    original = lab.client(exp)
    pids = [int(p.read_text()) for p in original.dir.glob("trials/*/.pid")]
    saves = tmp_path / "saves"
    assert lab.tl("experiment", "save", exp, "--path", str(saves)).code == 0
    (archive,) = saves.iterdir()

    copy = Lab(home=tmp_path / "copy-home", root=tmp_path)
    assert copy.cli("experiment", "load", "--path", str(archive)).code == 0
    assert copy.cli("stop", exp).code == 0  # saved while running: its manager is gone
    assert copy.cli("resume", exp).code == 0
    copy.wait_running(exp, 2)
    assert copy.cli("stop", exp).code == 0

    # The original's trials ran on untouched, under its own manager.
    assert not any(process_gone(pid) for pid in pids)
    assert {t["status"] for t in original.trials()} == {"RUNNING"}
    assert original.running
    assert lab.cli("stop", exp).code == 0


def test_stop_all_goes_on_past_an_experiment_it_cannot_stop(lab: Lab) -> None:
    import fcntl

    stuck, _, stuck_pids = _orphan(lab)
    other = lab.start(lab.write(SPACE, TRIAL.format(gates=str(lab.root / "gates")), name="b"))
    lab.wait_running(other, 2)
    # Something else holds the dead manager's experiment: its stop is refused.
    with open(lab.client(stuck).dir / "manager.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = lab.cli("stop", "--all")

    assert result.code == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"tunelab: experiment {stuck} could not be stopped: experiment {stuck}")
    assert "already open in another manager" in line
    assert sorted(result.stdout.splitlines()) == sorted(
        [f"Experiment {other} stopped (STOPPED).", "Stopped 1 of 2 experiments."]
    )
    assert not lab.client(other).running
    # Once nothing holds it, it stops as any other.
    assert lab.cli("stop", stuck).code == 0
    assert all(process_gone(pid) for pid in stuck_pids)
    assert lab_processes(lab.home) == []
