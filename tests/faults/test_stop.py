"""Stop: every trial's whole process tree ends, the trials are USER_CANCELED at once with their
end frozen at the stop, and the experiment is STOPPED with nothing left running."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil

from tests.faults.harness import Experiment, FaultLab, Snapshot, wait_gone

# Trial 0 has a child and a grandchild in its process group; trial 1 and its child ignore
# SIGTERM; trial 2 has a child that left the group (its own session) and ignores SIGTERM;
# trial 3 cleans up for half a second when SIGTERM comes. Each process writes its pid to the
# trial folder's ``pids`` file.
TREE_TRIAL = """
import os, pathlib, signal, subprocess, sys, time, tunelab
tunelab.get_next_parameter()
folder = pathlib.Path(os.environ["TUNELAB_TRIAL_DIR"])
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
number = tunelab.get_sequence_id()
if number == 0:
    child = subprocess.Popen(["bash", "-c", "sleep 600 & echo $! >> pids; wait"], cwd=folder)
elif number == 1:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", stubborn])
elif number == 2:
    child = subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True)
else:
    def clean_up(signum, frame):
        time.sleep(0.5)  # within the grace period that a stop gives
        (folder / "cleaned").write_text("after SIGTERM")
        sys.exit(0)

    signal.signal(signal.SIGTERM, clean_up)
    child = subprocess.Popen(["sleep", "600"])
with open(folder / "pids", "a") as pids:
    pids.write(f"{os.getpid()}\\n{child.pid}\\n")
tunelab.report_intermediate_result(0.1)
time.sleep(600)
"""


def _pids(experiment: Experiment, snap: Snapshot) -> list[int]:
    pids = []
    for trial in snap.trials:
        pids.extend(
            int(line) for line in (experiment.trial_dir(trial) / "pids").read_text().split()
        )
    return pids


def _count(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def test_stop_ends_every_process_tree_and_freezes_trials(faults: FaultLab) -> None:
    config = faults.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}},
        TREE_TRIAL,
        name="stop-tree",
        maxTrialNumber=4,
        trialConcurrency=4,
    )
    experiment = faults.create(config)

    def tree_written(snap: Snapshot) -> bool:
        files = [experiment.trial_dir(t) / "pids" for t in snap.by_status("RUNNING")]
        return len(files) == 4 and sum(_count(f) for f in files) == 9

    running = experiment.wait_for(tree_written, what="four trial trees")
    processes = [psutil.Process(pid) for pid in _pids(experiment, running)]
    assert len(processes) == 9 and all(p.is_running() for p in processes)
    manager = psutil.Process(experiment.manager().pid)  # type: ignore[union-attr]

    # Stop through the API, and watch the store while the trees are being ended.
    seen_canceled_while_stopping = False
    asked = time.time()
    stopper = threading.Thread(target=experiment.api, args=("DELETE", "/experiment"))
    stopper.start()
    while stopper.is_alive():
        snap = experiment.snapshot()
        if all(t.status == "USER_CANCELED" for t in snap.trials):
            seen_canceled_while_stopping = True
            break
        time.sleep(0.01)
    stopper.join(60)

    # USER_CANCELED at once: trial 3 was still cleaning up (half a second) by then.
    assert seen_canceled_while_stopping
    assert wait_gone([manager], 30) == []
    stopped = experiment.snapshot()
    assert stopped.status == "STOPPED"
    for trial in stopped.trials:
        assert (trial.status, trial.reason) == ("USER_CANCELED", "experiment stopped")
        # Frozen at the stop, not at the moment the last process went.
        assert trial.end_time is not None and asked <= trial.end_time <= asked + 1.0
    # The polite signal came first, and the grace period was given.
    cleaned = experiment.trial_dir(stopped.trials[3]) / "cleaned"
    assert cleaned.read_text() == "after SIGTERM"
    # Every process of every tree has ended, the child that left the group included.
    assert wait_gone(processes, 5) == []
    assert experiment.trial_processes() == []
    assert faults.processes() == []

    # Durations stay frozen afterwards (the CLI reads them from the stopped store).
    time.sleep(0.5)
    listed = faults.cli("trial", "ls", experiment.id, "--json")
    assert listed.code == 0, listed.stderr
    for row in json.loads(listed.stdout):
        trial = next(t for t in stopped.trials if t.trial_id == row["id"])
        assert row["status"] == "USER_CANCELED"
        assert abs(row["duration"] - (trial.end_time - trial.start_time)) < 1e-6


def test_stop_through_the_cli(faults: FaultLab) -> None:
    config = faults.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}},
        "import time, tunelab\ntunelab.get_next_parameter()\ntime.sleep(600)\n",
        name="stop-cli",
        maxTrialNumber=4,
        trialConcurrency=2,
    )
    experiment = faults.create(config)
    experiment.wait_for(lambda s: len(s.by_status("RUNNING")) == 2, what="2 running")
    result = faults.cli("stop", experiment.id)
    assert result.code == 0, result.stderr
    assert experiment.manager() is None
    snap = experiment.snapshot()
    assert snap.status == "STOPPED"
    assert [t.status for t in snap.trials] == ["USER_CANCELED", "USER_CANCELED"]
    assert faults.processes() == []
