"""The Python API (``tunelab.Experiment``) on real managers and trial processes: run, start,
stop, resume, view, connect, the reads, updates and kill, and the stop at interpreter exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import Lab, gated_trial
from tunelab.config import ExperimentConfig, load_config
from tunelab.errors import ConfigError, UsageError

SPACE = {"x": {"_type": "uniform", "_value": [0, 1]}}
DICT_METRIC_TRIAL = """
import tunelab
p = tunelab.get_next_parameter()
tunelab.report_intermediate_result(p["x"] / 2)
tunelab.report_final_result({"default": p["x"], "loss": 1 - p["x"]})
"""


def _code(lab: Lab, trial: str) -> Path:
    folder = lab.root / "code"
    folder.mkdir(exist_ok=True)
    (folder / "trial.py").write_text(textwrap.dedent(trial), encoding="utf-8")
    return folder


def _fill(config: ExperimentConfig, code: Path, **fields: object) -> ExperimentConfig:
    config.trial_command = f"{sys.executable} trial.py"
    config.trial_code_directory = str(code)
    config.search_space = SPACE
    config.tuner.name = "Random"
    config.trial_concurrency = 2
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def test_run_a_config_filled_in_python_and_read_everything_back(lab: Lab) -> None:
    from tunelab import Experiment

    experiment = Experiment("local")
    _fill(experiment.config, _code(lab, DICT_METRIC_TRIAL), max_trial_number=4)
    experiment.config.tuner.name = "TPE"
    experiment.config.tuner.class_args = {"optimize_mode": "maximize"}

    assert experiment.run() is True
    assert experiment.id is not None and isinstance(experiment.port, int)
    assert experiment.get_status() == "DONE"
    assert not lab.client(experiment.id).running  # run() stops the manager at the end

    jobs = experiment.list_trial_jobs()
    assert len(jobs) == 4 and {job.status for job in jobs} == {"SUCCEEDED"}
    assert [job.sequenceId for job in jobs] == [0, 1, 2, 3]
    for job in jobs:
        (hyper,) = job.hyperParameters
        assert hyper.parameters == job.parameters and hyper.parameter_source == "algorithm"
        (final,) = job.finalMetricData
        x = job.parameters["x"]
        assert final.type == "FINAL" and final.data == {"default": x, "loss": 1 - x}
        assert job.logPath == str(lab.home / experiment.id / "trials" / job.trialJobId)
        assert Path(job.stderrPath).is_file() and job.endTime >= job.startTime > 0

    exported = experiment.export_data()
    assert sorted(r.trialJobId for r in exported) == sorted(j.trialJobId for j in jobs)
    assert all(r.value["default"] == r.parameter["x"] for r in exported)
    assert experiment.get_job_statistics() == [
        {"trialJobStatus": "SUCCEEDED", "trialJobNumber": 4}
    ]
    metrics = experiment.get_job_metrics()
    assert set(metrics) == {j.trialJobId for j in jobs}
    one = jobs[0]
    (only,) = experiment.get_job_metrics(one.trialJobId).values()
    assert [(m.type, m.data) for m in only] == [
        ("PERIODICAL", one.parameters["x"] / 2),
        ("FINAL", {"default": one.parameters["x"], "loss": 1 - one.parameters["x"]}),
    ]
    assert experiment.get_trial_job(one.trialJobId) == one
    profile = experiment.get_experiment_profile()
    assert profile["id"] == experiment.id and profile["maxTrialNumber"] == 4
    assert profile["best"]["default"] == max(j.parameters["x"] for j in jobs)


def test_b07_nested_choice_without_name_fails_at_once_through_python(lab: Lab) -> None:
    from tunelab import Experiment

    config = _fill(ExperimentConfig("local"), _code(lab, DICT_METRIC_TRIAL))
    config.search_space = {
        "opt": {
            "_type": "choice",
            "_value": [
                {"_name": "sgd", "momentum": {"_type": "uniform", "_value": [0.5, 0.99]}},
                {"beta1": {"_type": "uniform", "_value": [0.8, 0.95]}},
            ],
        }
    }
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"searchSpace\.opt.*_name"):
        Experiment(config).run()
    assert time.monotonic() - started < 30
    with pytest.raises(ConfigError, match="trialCommand: must be given"):
        Experiment("local").run()
    assert not lab.home.exists() or not list(lab.home.iterdir())
    with pytest.raises(UsageError, match="has not been started"):
        Experiment("local").get_status()


def test_start_update_kill_stop_then_resume_to_the_budget(lab: Lab) -> None:
    from tunelab import Experiment

    gate = lab.root / "gate"
    config = _fill(
        ExperimentConfig("local"),
        _code(lab, gated_trial(gate)),
        max_trial_number=3,
        trial_concurrency=1,
    )
    experiment = Experiment(config)
    experiment.start()
    assert experiment.get_status() == "RUNNING"
    lab.wait_running(experiment.id, 1)
    assert Experiment.connect(experiment.port).id == experiment.id
    with pytest.raises(UsageError, match="already started"):
        experiment.start()

    experiment.update_trial_concurrency(2)
    lab.wait_running(experiment.id, 2)
    experiment.update_max_trial_number(5)
    experiment.update_max_experiment_duration("1h")
    experiment.update_search_space({"x": {"_type": "choice", "_value": [3, 4, 5, 6]}})
    profile = experiment.get_experiment_profile()
    assert (profile["trialConcurrency"], profile["maxTrialNumber"]) == (2, 5)
    assert profile["maxExperimentDuration"] == "1h"
    with pytest.raises(UsageError, match="trialConcurrency must be an integer from 1 to 1000"):
        experiment.update_trial_concurrency(0)
    with pytest.raises(UsageError, match="unknown time unit"):
        experiment.update_max_experiment_duration("2w")

    victim = min(
        (job for job in experiment.list_trial_jobs() if job.status == "RUNNING"),
        key=lambda job: job.sequenceId,
    )
    experiment.kill_trial_job(victim.trialJobId)
    killed = experiment.get_trial_job(victim.trialJobId)
    assert (killed.status, killed.message) == ("USER_CANCELED", "killed by user")
    lab.wait_running(experiment.id, 2)

    experiment.stop()
    assert experiment.get_status() == "STOPPED"
    stopped = {job.trialJobId: job for job in experiment.list_trial_jobs()}
    assert len(stopped) == 3
    assert {job.status for job in stopped.values()} == {"USER_CANCELED"}

    gate.touch()
    resumed = Experiment.resume(experiment.id)
    assert resumed.get_status() == "DONE"
    jobs = {job.trialJobId: job for job in resumed.list_trial_jobs()}
    assert len(jobs) == 5 and set(stopped) < set(jobs)
    assert jobs[victim.trialJobId].status == "USER_CANCELED"  # a killed trial stays killed
    assert [j.status for j in jobs.values()].count("SUCCEEDED") == 4
    late = [j for j in jobs.values() if j.sequenceId >= 2]  # started after the update
    assert len({j.parameters["x"] for j in late}) == 3
    assert {j.parameters["x"] for j in late} <= {3, 4, 5, 6}


def test_view_is_read_only_from_python(lab: Lab) -> None:
    from tunelab import Experiment

    config = _fill(ExperimentConfig("local"), _code(lab, DICT_METRIC_TRIAL), max_trial_number=2)
    experiment = Experiment(config)
    assert experiment.run() is True

    viewed = Experiment.view(experiment.id, non_blocking=True)
    assert viewed.get_status() == "VIEWED" and viewed.port is not None
    assert len(viewed.list_trial_jobs()) == 2
    assert viewed.config is not None and viewed.config.max_trial_number == 2
    with pytest.raises(UsageError, match="read-only"):
        viewed.update_max_trial_number(9)
    with pytest.raises(UsageError, match="read-only"):
        viewed.kill_trial_job(viewed.list_trial_jobs()[0].trialJobId)
    viewed.stop()
    assert viewed.get_status() == "DONE"
    with pytest.raises(UsageError, match="is not running"):
        viewed.update_max_trial_number(9)
    with pytest.raises(UsageError, match="no experiment of this machine listens on port"):
        Experiment.connect(viewed.port)

    # Resuming a viewed experiment closes the view first; then changes are taken.
    Experiment.view(experiment.id, non_blocking=True)
    resumed = Experiment.resume(experiment.id, wait_completion=False)
    lab.wait_status(experiment.id, ["DONE"])
    resumed.update_max_trial_number(3)
    lab.wait(experiment.id, lambda p, ts: p["status"] == "DONE" and len(ts) == 3)
    resumed.stop()


def _script(lab: Lab, body: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(body)],
        env=lab.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def test_an_experiment_started_in_python_is_stopped_at_interpreter_exit(lab: Lab) -> None:
    gate = lab.root / "gate"
    config = lab.write(SPACE, gated_trial(gate), maxTrialNumber=2)
    script = _script(
        lab,
        f"""
        import time
        from tunelab import Experiment
        from tunelab.client import resolve
        from tunelab.config import load_config
        experiment = Experiment(load_config({str(config)!r}))
        experiment.start()
        while not any(t["status"] == "RUNNING" for t in resolve(experiment.id).trials()):
            time.sleep(0.05)
        print(experiment.id, flush=True)
        """,
    )
    stdout, stderr = script.communicate(timeout=120)
    assert script.returncode == 0, stderr
    exp = stdout.split()[0]
    client = lab.client(exp)
    assert not client.running
    assert client.experiment()["status"] == "STOPPED"
    assert {t["status"] for t in client.trials()} == {"USER_CANCELED"}


def _signal_a_running_run(lab: Lab, signum: int) -> tuple[subprocess.Popen[str], str, str]:
    """A script in ``Experiment.run()`` with its trials running, sent ``signum``; returns the
    script (ended) and its stdout and stderr."""
    gate = lab.root / "gate"  # never opened: the trials wait until they are stopped
    config = lab.write(SPACE, gated_trial(gate), maxTrialNumber=2)
    script = _script(
        lab,
        f"""
        from tunelab import Experiment
        from tunelab.config import load_config
        experiment = Experiment(load_config({str(config)!r}))
        result = experiment.run()
        print("result", result, experiment.id, experiment.get_status(), flush=True)
        """,
    )
    deadline = time.monotonic() + 120
    while not lab.home.exists() or not any(lab.home.glob("*/trials/*/trial.stdout")):
        assert time.monotonic() < deadline and script.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)  # start() has returned; run() waits
    script.send_signal(signum)
    stdout, stderr = script.communicate(timeout=120)
    return script, stdout, stderr


def test_ctrl_c_during_run_stops_the_experiment(lab: Lab) -> None:
    script, stdout, stderr = _signal_a_running_run(lab, signal.SIGINT)
    assert script.returncode == 0, stderr
    word, result, exp, status = stdout.split()
    assert (word, result, status) == ("result", "None", "STOPPED")
    assert not lab.client(exp).running


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_during_run_stops_the_experiment_then_ends(
    lab: Lab, signum: int
) -> None:
    """``timeout``, a job scheduler or a closed terminal end a run: its experiment ends too."""
    script, stdout, stderr = _signal_a_running_run(lab, signum)
    assert script.returncode == -signum, stderr  # ended by the signal, after the stop
    assert "result" not in stdout  # run() did not return
    [exp] = [p.name for p in lab.home.iterdir() if (p / "experiment.db").exists()]
    client = lab.client(exp)
    assert not client.running
    assert client.experiment()["status"] == "STOPPED"
    assert {t["status"] for t in client.trials()} == {"USER_CANCELED"}


def test_experiment_is_a_lazy_attribute_of_the_package() -> None:
    import tunelab
    import tunelab.experiment

    assert tunelab.Experiment is tunelab.experiment.Experiment
    assert "Experiment" not in tunelab.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = tunelab.Nothing  # type: ignore[attr-defined]


def test_a_config_object_and_a_file_give_the_same_experiment(lab: Lab) -> None:
    from tunelab import Experiment

    path = lab.write(SPACE, DICT_METRIC_TRIAL, maxTrialNumber=1)
    experiment = Experiment(load_config(path))
    assert experiment.run(wait_completion=False) is None
    assert lab.wait_status(experiment.id, ["DONE"])["trialCount"] == 1
    experiment.stop()
    assert not lab.client(experiment.id).running


def test_connect_takes_a_port_and_says_so_for_an_id(lab: Lab) -> None:
    from tunelab import Experiment

    with pytest.raises(UsageError, match=r"port of a running experiment's manager.*'abc'"):
        Experiment.connect("abc")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no experiment of this machine listens on port 1"):
        Experiment.connect(1)
