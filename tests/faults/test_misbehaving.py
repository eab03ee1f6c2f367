"""Trials that misbehave: each ends in an honest state with a reason a person can read, and the
experiment goes on (DESIGN.md rule 4).

Most cases share one experiment: GridSearch over a ``case`` choice runs each case once, side by
side, and the experiment must still end DONE with the best trial the one that reported best.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.faults.harness import FaultLab, Snapshot, check_table, wait_gone
from tunelab.store import TrialRecord

CASES_TRIAL = r"""
import os, pathlib, signal, subprocess, sys, time, tunelab
case = tunelab.get_next_parameter()["case"]
folder = pathlib.Path(os.environ["TUNELAB_TRIAL_DIR"])

def leave_children():
    group = subprocess.Popen(["sleep", "600"])
    session = subprocess.Popen(["sleep", "600"], start_new_session=True)
    # A daemon: forked twice, its own session, its parent gone before the trial ends.
    subprocess.run(
        [sys.executable, "-c",
         "import os, sys, time\n"
         "if os.fork() == 0:\n"
         "    os.setsid()\n"
         "    if os.fork() == 0:\n"
         "        open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)\n"
         "    os._exit(0)\n"
         "os.wait()\n",
         str(folder / "daemon.pid")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True,
    )
    while not (folder / "daemon.pid").exists() or not (folder / "daemon.pid").read_text():
        time.sleep(0.01)
    pids = [group.pid, session.pid, int((folder / "daemon.pid").read_text())]
    (folder / "children").write_text(" ".join(map(str, pids)))

if case == "ok":
    tunelab.report_intermediate_result(0.4)
    tunelab.report_final_result(0.5)
elif case == "exit3":
    sys.exit(3)
elif case == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
elif case == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)
elif case == "hang":
    time.sleep(3600)
elif case == "hang-stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(3600)
elif case == "after-final":
    tunelab.report_final_result(0.3)
    tunelab.report_intermediate_result(0.4)
    tunelab.report_final_result(0.9)
elif case == "no-final":
    for value in (0.97, 0.98, 0.99):
        tunelab.report_intermediate_result(value)
elif case == "not-utf8":
    sys.stdout.buffer.write(b"caf\xe9 \xff\xfe\x80 end\n")
    sys.stderr.buffer.write(b"\xc3\x28 bad \xa0\xa1\n")
    with open(folder / "metrics.jsonl", "ab") as metrics:
        metrics.write(b"\xff\xfe not json \x80\n")
    tunelab.report_final_result(0.2)
elif case == "children-ok":
    leave_children()
    tunelab.report_final_result(0.1)
elif case == "children-fail":
    leave_children()
    sys.exit(1)
elif case == "huge":
    tunelab.report_intermediate_result({"default": -10**400})
    tunelab.report_final_result(10**400)
elif case == "raw-huge":
    # Lines as a trial might write them by hand: an int beyond every float, a time of 1e400.
    with open(folder / "metrics.jsonl", "a", encoding="utf-8") as metrics:
        metrics.write('{"seq": 0, "type": "FINAL", "value": 1%s, "time": 1e400}\n' % ("0" * 400))
elif case == "fail-after-final":
    tunelab.report_final_result(0.99)
    sys.exit(3)
"""

CASES = [
    "ok",
    "exit3",
    "sigkill",
    "segv",
    "hang",
    "hang-stubborn",
    "after-final",
    "no-final",
    "not-utf8",
    "children-ok",
    "children-fail",
    "huge",
    "raw-huge",
    "fail-after-final",
]

# Each case: its state, and its reason (a prefix, for the one whose words depend on the limit).
EXPECTED = {
    "ok": ("SUCCEEDED", "exit code 0"),
    "exit3": ("FAILED", "exit code 3"),
    "sigkill": ("FAILED", "killed by signal 9"),
    "segv": ("FAILED", "killed by signal 11"),
    "hang": ("EARLY_STOPPED", "exceeded maxTrialDuration 10m"),
    "hang-stubborn": ("EARLY_STOPPED", "exceeded maxTrialDuration 10m"),
    "after-final": ("SUCCEEDED", "exit code 0"),
    "no-final": ("SUCCEEDED", "exit code 0"),
    "not-utf8": ("SUCCEEDED", "exit code 0"),
    "children-ok": ("SUCCEEDED", "exit code 0"),
    "children-fail": ("FAILED", "exit code 1"),
    "huge": ("SUCCEEDED", "exit code 0"),
    "raw-huge": ("SUCCEEDED", "exit code 0"),
    "fail-after-final": ("FAILED", "exit code 3"),
}


def _trial(snap: Snapshot, case: str) -> TrialRecord:
    return next(t for t in snap.trials if t.parameters["case"] == case)


def test_misbehaving_trials_end_honestly_and_the_experiment_goes_on(faults: FaultLab) -> None:
    config = faults.write(
        {"case": {"_type": "choice", "_value": CASES}},
        CASES_TRIAL,
        name="cases",
        maxTrialNumber=len(CASES),
        trialConcurrency=4,
        maxTrialDuration="10m",
        tuner={"name": "GridSearch"},
    )
    experiment = faults.create(config)
    done = experiment.wait_status("DONE", "ERROR", timeout=180)
    assert done.status == "DONE" and not done.experiment["error"]

    # Every case in its state, with its reason.
    states = {case: (_trial(done, case).status, _trial(done, case).reason) for case in CASES}
    assert states == EXPECTED
    for case in ("hang", "hang-stubborn"):
        trial = _trial(done, case)
        # Ended at its deadline (6 s scaled), plus at most the 3 s grace of a stubborn trial.
        assert 5.5 <= trial.end_time - trial.start_time <= 12  # type: ignore[operator]
    problems, _ = check_table(experiment, len(CASES), all_succeeded=False, require_final=False)
    assert problems == []

    # Metrics after the final are recorded; the first final is the result.
    trial = _trial(done, "after-final")
    assert trial.final == 0.3
    stored = [(m.type, m.value) for m in done.metrics_of(trial.sequence)]
    assert stored == [("FINAL", 0.3), ("INTERMEDIATE", 0.4), ("FINAL", 0.9)]
    assert experiment.api("GET", f"/trials/{trial.trial_id}").json()["default"] == 0.3
    log = (experiment.dir / "log" / "manager.log").read_text("utf-8")
    assert (
        f"Trial {trial.trial_id} reported a final result again (0.9); its first one (0.3) "
        "stands, as the tuner has it"
    ) in log

    # No final metric: SUCCEEDED without a result, and not best despite its high intermediates.
    trial = _trial(done, "no-final")
    assert trial.final is None and trial.final_default is None
    view = experiment.api("GET", "/experiment").json()
    # Best: neither the failed trial's higher result nor the infinite ones.
    assert (view["best"]["parameters"], view["best"]["default"]) == ({"case": "ok"}, 0.5)
    assert view["best"]["latestIntermediate"] == {"value": 0.4, "step": 0}
    assert view["best"]["intermediateCount"] == 1
    assert _trial(done, "fail-after-final").final == 0.99
    # Integers beyond a float's range count as infinite; the experiment never noticed.
    assert _trial(done, "huge").final_default == float("inf")
    assert _trial(done, "raw-huge").final_default == float("inf")
    assert [m.default for m in done.metrics_of(_trial(done, "huge").sequence)] == [
        float("-inf"),
        float("inf"),
    ]
    shown = experiment.api("GET", f"/trials/{trial.trial_id}").json()
    assert shown["latestIntermediate"] == {"value": 0.99, "step": 2}

    # Output that is not UTF-8 is served as written; the corrupt metrics line was skipped.
    trial = _trial(done, "not-utf8")
    assert trial.final == 0.2
    for name, raw in (("stdout", b"caf\xe9 \xff\xfe\x80 end\n"), ("stderr", b"\xc3\x28 bad")):
        response = experiment.api("GET", f"/trials/{trial.trial_id}/files/{name}")
        assert raw in response.content
    for extra in ([], ["--stderr"]):
        result = faults.cli("log", "trial", experiment.id, "--trial_id", trial.trial_id, *extra)
        assert result.code == 0 and "Traceback" not in result.stderr, result.stderr
        assert ("end" if not extra else "bad") in result.stdout

    # Children left running are ended; the trial's own exit decided its state (above).
    for case in ("children-ok", "children-fail"):
        trial = _trial(done, case)
        pids = [int(p) for p in (experiment.trial_dir(trial) / "children").read_text().split()]
        assert len(pids) == 3
        assert wait_gone(_processes(pids), 5) == [], f"{case}: children of the trial still run"
    info = experiment.manager()
    assert info is not None
    assert [p.pid for p in faults.processes()] == [info.pid]


def _processes(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return found


def test_100_mb_of_output_keeps_the_manager_responsive(faults: FaultLab) -> None:
    trial = """
import sys, time, tunelab
tunelab.get_next_parameter()
chunk = (b"x" * 1023 + b"\\n") * 1024
for _ in range(100):
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    time.sleep(0.01)
tunelab.report_final_result(1.0)
"""
    config = faults.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}}, trial, "big", maxTrialNumber=1
    )
    experiment = faults.create(config)
    experiment.wait_for(lambda s: len(s.by_status("RUNNING")) == 1, what="the trial running")
    info = experiment.manager()
    assert info is not None

    # While the trial writes, the API keeps answering.
    latencies: list[float] = []
    while experiment.snapshot().by_status("RUNNING") and len(latencies) < 200:
        started = time.monotonic()
        httpx.get(f"{info.url}/api/v1/experiment", timeout=10).raise_for_status()
        latencies.append(time.monotonic() - started)
    done = experiment.wait_status("DONE")
    (only,) = done.trials
    assert (only.status, only.final) == ("SUCCEEDED", 1.0)
    assert latencies and max(latencies) < 2.0
    stdout = experiment.trial_dir(only) / "trial.stdout"
    assert stdout.stat().st_size == 100 * 1024 * 1024
    # The whole file is served, streamed from the trial's folder.
    with httpx.stream(
        "GET", f"{info.url}/api/v1/trials/{only.trial_id}/files/stdout", timeout=60
    ) as response:
        assert response.status_code == 200
        assert sum(len(part) for part in response.iter_bytes()) == 100 * 1024 * 1024


def test_non_ascii_and_spaces_in_paths_and_arguments(faults: FaultLab, tmp_path: Path) -> None:
    code_dir = tmp_path / "código de prueba" / "実験 ü"
    code_dir.mkdir(parents=True)
    (code_dir / "träin ü.py").write_text(
        "import os, sys, tunelab\n"
        "p = tunelab.get_next_parameter()\n"
        "assert sys.argv[1:] == ['--tag', 'é 実 x', '--name=Ωmega'], sys.argv\n"
        "assert os.getcwd() == os.environ['NNI_CODE_DIR'], os.getcwd()\n"
        "print('données', p['word'])\n"
        "tunelab.report_final_result({'default': len(p['word']), 'mot': p['word']})\n",
        encoding="utf-8",
    )
    work = tmp_path / "expériences" / "運行 A"
    config = faults.write(
        {"word": {"_type": "choice", "_value": ["α β", "naïve", "日本語"]}},
        "",
        name="ascii",
        maxTrialNumber=3,
        trialCodeDirectory=str(code_dir),
        trialCommand=f"{sys.executable} 'träin ü.py' --tag \"é 実 x\" --name=Ωmega",
        experimentWorkingDirectory=str(work),
        experimentName="prüfung ✓",
    )
    experiment = faults.create(config)
    assert experiment.dir.parent == work
    done = experiment.wait_status("DONE")
    assert [t.status for t in done.trials] == ["SUCCEEDED"] * 3
    assert {t.final["mot"] for t in done.trials} == {"α β", "naïve", "日本語"}
    for trial in done.trials:
        out = (experiment.trial_dir(trial) / "trial.stdout").read_text("utf-8")
        assert out == f"données {trial.parameters['word']}\n"
    listed = faults.cli("trial", "ls", experiment.id, "--json")
    assert listed.code == 0, listed.stderr
    assert {row["parameters"]["word"] for row in json.loads(listed.stdout)} == {
        "α β",
        "naïve",
        "日本語",
    }


B25_TRIAL = """
import os, subprocess, tunelab
scale = float(os.environ["TUNELAB_TIME_SCALE"])
tunelab.get_next_parameter()
gate = os.environ["FAULT_GATE"]
subprocess.run(
    f"sleep {90 * scale}; while [ ! -e '{gate}' ]; do sleep 0.05; done", shell=True, check=True
)
tunelab.report_final_result(0.61)
"""


@pytest.mark.parametrize("kill_manager", [False, True], ids=["plain", "manager-killed"])
def test_b25_silent_trial_inside_a_child_shell_succeeds(
    faults: FaultLab, kill_manager: bool
) -> None:
    """Field case B25: no output for 90 s (scaled) inside a child shell, then a final result.
    The trial is alive as long as its process tree is, however silent; also when the manager
    was killed during the silence and the trial was re-attached by a new one. The silence
    lasts until a gate file appears too, so that a slow machine cannot end it before the
    checks."""
    gate = faults.root / "b25-gate"
    faults.extra_env = {"FAULT_GATE": str(gate)}
    config = faults.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}}, B25_TRIAL, "b25", maxTrialNumber=1
    )
    experiment = faults.create(config)
    running = experiment.wait_for(lambda s: len(s.by_status("RUNNING")) == 1, what="running")
    (trial,) = running.trials
    if kill_manager:
        experiment.kill_manager()
        experiment.resume()
    # Silent but RUNNING: no output, no metric, not judged dead.
    time.sleep(0.3)
    silent = experiment.snapshot()
    assert silent.trials[0].status == "RUNNING" and silent.metrics == []
    assert (experiment.trial_dir(trial) / "trial.stdout").stat().st_size == 0
    gate.touch()
    done = experiment.wait_status("DONE")
    (only,) = done.trials
    assert (only.status, only.final, only.attempts) == ("SUCCEEDED", 0.61, 1)
    assert only.end_time - only.start_time >= 90 * faults.scale  # type: ignore[operator]
