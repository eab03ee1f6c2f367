"""Managing experiments through the real CLI, with real managers and trial processes: stop,
resume, view, update, trial kill and rerun, top, logs, config, webui.

Trials are held RUNNING by a gate file (tests.conftest.gated_trial) for as long as a test
needs, so nothing here waits on a clock.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Lab, gated_trial, process_gone
from tests.faults.harness import lab_processes

SPACE = {"x": {"_type": "uniform", "_value": [0, 1]}}


def _gated(lab: Lab, **config: object) -> tuple[Path, Path]:
    gate = lab.root / "gate"
    return lab.write(SPACE, gated_trial(gate), **config), gate


def _one_error_line(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.code == 2, (result.code, result.stdout, stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return str(lines[0])


def _trial_pids(exp_dir: Path) -> list[int]:
    pids = []
    for pid_file in exp_dir.glob("trials/*/.pid"):
        pids.append(int(pid_file.read_text().strip()))
    return pids


def test_stop_cancels_trials_then_resume_reruns_them_under_the_same_ids(lab: Lab) -> None:
    config, gate = _gated(lab, maxTrialNumber=4, trialConcurrency=2)
    exp = lab.start(config)
    running = lab.wait_running(exp, 2)
    first_ids = sorted(t["id"] for t in running if t["status"] == "RUNNING")

    result = lab.cli("stop", exp)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"Experiment {exp} stopped (STOPPED)."
    client = lab.client(exp)
    assert not client.running
    assert client.experiment()["status"] == "STOPPED"
    stopped = client.trials()
    assert sorted(t["id"] for t in stopped) == first_ids
    assert {t["status"] for t in stopped} == {"USER_CANCELED"}
    assert {t["reason"] for t in stopped} == {"experiment stopped"}
    assert all(t["endTime"] is not None for t in stopped)
    # No trial process is left, and the durations stay frozen at the stop.
    assert all(process_gone(pid) for pid in _trial_pids(client.dir))
    time.sleep(0.3)
    again = {t["id"]: t["duration"] for t in lab.client(exp).trials()}
    assert again == {t["id"]: t["duration"] for t in stopped}

    gate.touch()
    result = lab.cli("resume", exp, "--foreground")
    assert result.code == 0, result.stderr
    assert f"Experiment {exp} resumed: http://127.0.0.1:" in result.stdout
    trials = sorted(lab.client(exp).trials(), key=lambda t: t["sequence"])
    # The two cancelled trials ran again under their own ids; numbering went on from 2; the
    # budget of 4 counts each trial once.
    assert [t["sequence"] for t in trials] == [0, 1, 2, 3]
    assert sorted(t["id"] for t in trials[:2]) == first_ids
    assert [t["attempts"] for t in trials] == [2, 2, 1, 1]
    assert {t["status"] for t in trials} == {"SUCCEEDED"}
    profile = lab.client(exp).experiment()
    assert profile["status"] == "DONE" and profile["trialCount"] == 4


def test_resume_and_view_refuse_what_they_cannot_do(lab: Lab) -> None:
    config, gate = _gated(lab, maxTrialNumber=1, trialConcurrency=1)
    exp = lab.start(config)

    line = _one_error_line(lab.cli("resume", exp))
    assert f"experiment {exp} is running" in line and f"tunelab stop {exp}" in line
    line = _one_error_line(lab.tl("view", exp))
    assert "is running" in line
    line = _one_error_line(lab.tl("resume", "nosuchid"))
    assert "no experiment with id 'nosuchid'" in line and exp in line

    # --config must describe the same experiment; a changed budget is allowed.
    other = lab.write(
        SPACE, "print(1)\n", maxTrialNumber=1, trialCommand="python3 other.py", name="other"
    )
    assert lab.cli("stop", exp).code == 0
    line = _one_error_line(lab.cli("resume", exp, "--config", str(other)))
    assert "does not describe experiment" in line and "trialCommand differ" in line
    bigger = lab.write(SPACE, gated_trial(gate), maxTrialNumber=2, trialConcurrency=1)
    assert bigger == config
    gate.touch()
    result = lab.cli("resume", exp, "--config", str(config), "--foreground")
    assert result.code == 0, result.stderr
    # The file's budget is taken, and said.
    assert f"  maxTrialNumber is now 2 from {config}\n" in result.stdout
    profile = lab.client(exp).experiment()
    assert (profile["status"], profile["maxTrialNumber"], profile["trialCount"]) == ("DONE", 2, 2)
    assert profile["config"]["maxTrialNumber"] == 2


def test_resume_with_a_config_takes_its_budget_and_concurrency_before_anything_runs(
    lab: Lab,
) -> None:
    config, gate = _gated(lab, maxTrialNumber=6, trialConcurrency=2)
    exp = lab.start(config)
    lab.wait_running(exp, 2)
    assert lab.cli("stop", exp).code == 0
    smaller = lab.write(SPACE, gated_trial(gate), maxTrialNumber=2, trialConcurrency=1)
    assert smaller == config
    gate.touch()

    result = lab.cli("resume", exp, "--config", str(config), "--foreground")

    assert result.code == 0, result.stderr
    assert f"  maxTrialNumber is now 2 from {config}\n" in result.stdout
    assert f"  trialConcurrency is now 1 from {config}\n" in result.stdout
    trials = sorted(lab.client(exp).trials(), key=lambda t: t["startTime"])
    # Only the two stopped trials ran again (the budget is 2), one at a time.
    assert [(t["status"], t["attempts"]) for t in trials] == [("SUCCEEDED", 2)] * 2
    assert trials[0]["endTime"] <= trials[1]["startTime"]


def test_one_manager_per_experiment_whatever_the_timing(lab: Lab) -> None:
    """Two resumes and a view of one stopped experiment started at the same moment: one
    manager takes it, the others are refused in one line, and a stop ends it all."""
    config, gate = _gated(lab, maxTrialNumber=3, trialConcurrency=1)
    exp = lab.start(config)
    lab.wait_running(exp, 1)
    assert lab.cli("stop", exp).code == 0
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(
            pool.map(lambda args: lab.cli(*args), [("resume", exp)] * 2 + [("view", exp)])
        )
    assert sorted(r.code for r in results) == [0, 2, 2], [(r.code, r.stderr) for r in results]
    for refused in (r for r in results if r.code == 2):
        line = _one_error_line(refused)
        assert f"experiment {exp} is already open in another manager" in line, line
    managers = [
        p for p in lab_processes(lab.home) if "tunelab.engine.manager" in " ".join(p.cmdline())
    ]
    assert len(managers) == 1
    assert lab.client(exp).manager.pid == managers[0].pid
    gate.touch()
    assert lab.cli("stop", "--all").code == 0
    assert lab_processes(lab.home) == []
    trials = lab.client(exp).trials()
    assert len({t["sequence"] for t in trials}) == len(trials)
    assert all(t["status"] != "RUNNING" for t in trials)


def test_an_id_prefix_names_one_experiment_or_lists_the_candidates(lab: Lab) -> None:
    for name in ("abc111", "abc222", "xyz333"):
        (lab.home / name).mkdir(parents=True)
        (lab.home / name / "experiment.db").touch()

    line = _one_error_line(lab.tl("experiment", "status", "abc"))
    assert "several experiment ids (abc111, abc222)" in line
    line = _one_error_line(lab.tl("experiment", "status", "nope"))
    assert "abc111, abc222, xyz333" in line
    from tunelab.client import resolve

    assert resolve("xy").id == "xyz333"
    # An empty database file is no experiment store: said in one line, no traceback.
    result = lab.tl("experiment", "status", "xy")
    assert result.code == 1 and result.stderr.startswith("tunelab: an experiment's store")


def test_view_is_read_only_and_every_change_is_refused(lab: Lab) -> None:
    config, gate = _gated(lab, maxTrialNumber=2, trialConcurrency=2)
    gate.touch()
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    trial_id = lab.client(exp).trials()[0]["id"]

    result = lab.cli("view", exp)
    assert result.code == 0, result.stderr
    assert f"Experiment {exp} is open read-only (VIEWED): http://127.0.0.1:" in result.stdout
    client = lab.client(exp)
    assert client.viewed and client.experiment()["status"] == "VIEWED"
    assert len(client.trials()) == 2
    data = lab.root / "data.json"
    data.write_text(json.dumps([{"parameter": {"x": 0.5}, "value": 1.0}]))
    space = lab.root / "space.json"
    space.write_text(json.dumps(SPACE))
    for command in (
        ["update", "concurrency", exp, "-v", "3"],
        ["update", "trialnum", exp, "-v", "9"],
        ["update", "duration", exp, "-v", "1h"],
        ["update", "searchspace", exp, "-f", str(space)],
        ["trial", "kill", exp, "-T", trial_id],
        ["trial", "rerun", exp, "-T", trial_id],
        ["experiment", "import", exp, "-f", str(data)],
    ):
        line = _one_error_line(lab.tl(*command))
        assert "read-only" in line and f"tunelab resume {exp}" in line, command
    assert lab.tl("webui", "url", exp).stdout.strip() == client.url

    result = lab.cli("stop", "--port", str(client.port))
    assert result.stdout.strip() == f"Experiment {exp}: read-only view closed."
    assert lab.client(exp).experiment()["status"] == "DONE"


def test_updates_take_effect_and_bad_values_are_refused(lab: Lab) -> None:
    config, gate = _gated(lab, maxTrialNumber=3, trialConcurrency=1)
    exp = lab.start(config)
    lab.wait_running(exp, 1)

    result = lab.cli("update", "concurrency", exp, "--value", "3")
    assert result.stdout.strip() == f"Experiment {exp}: trialConcurrency is now 3."
    lab.wait_running(exp, 3)
    assert lab.tl("update", "trialnum", exp, "-v", "5").code == 0
    # The file is read as create reads a searchSpaceFile: JSON, or else YAML (NNI's rule).
    new_space = lab.root / "new_space.json"
    new_space.write_text('{"x": {"_type": "choice", "_value": [7, 8]},}')  # a trailing comma
    assert lab.tl("update", "searchspace", exp, "--filename", str(new_space)).code == 0
    profile = lab.client(exp).experiment()
    assert profile["trialConcurrency"] == 3 and profile["maxTrialNumber"] == 5
    assert profile["config"]["searchSpace"] == {"x": {"_type": "choice", "_value": [7, 8]}}
    # The file the first space came from is not named beside the new space any more.
    assert "searchSpaceFile" not in profile["config"]
    assert "searchSpaceFile" not in yaml.safe_load(lab.tl("config", "show", exp).stdout)

    bad_space = lab.root / "bad_space.json"
    bad_space.write_text(json.dumps({"lr": {"_type": "loguniform", "_value": [0, 1]}}))
    for command, words in (
        (["update", "concurrency", exp, "-v", "0"], ["trialConcurrency", "1 to 1000"]),
        (["update", "concurrency", exp, "-v", "many"], ["many", "integer"]),
        (["update", "trialnum", exp, "-v", "-2"], ["maxTrialNumber"]),
        (["update", "duration", exp, "-v", "10x"], ["maxExperimentDuration", "'x'"]),
        (["update", "searchspace", exp, "-f", str(bad_space)], ["lr", "0 < low"]),
        (
            ["update", "searchspace", exp, "-f", str(lab.root / "none.json")],
            ["none.json", "not found"],
        ),
    ):
        line = _one_error_line(lab.tl(*command))
        for word in words:
            assert word in line, (command, line)

    gate.touch()
    profile = lab.wait_status(exp, ["DONE"])
    trials = sorted(lab.client(exp).trials(), key=lambda t: t["sequence"])
    assert len(trials) == 5 and profile["trialCount"] == 5
    # The two trials after the update came from the new space.
    assert [t["parameters"]["x"] in (7, 8) for t in trials] == [False] * 3 + [True] * 2


def test_update_duration_ends_submissions_then_more_time_runs_more(lab: Lab) -> None:
    config, gate = _gated(lab, maxTrialNumber=10, trialConcurrency=1)
    exp = lab.start(config)
    lab.wait_running(exp, 1)

    # Scaled by 0.01, a 1 s budget is already used up: no new trial; the running one goes on.
    assert lab.cli("update", "duration", exp, "-v", "1s").code == 0
    lab.wait_status(exp, ["NO_MORE_TRIAL"])
    gate.touch()
    profile = lab.wait_status(exp, ["DONE"])
    assert profile["trialCount"] == 1 and profile["maxExperimentDuration"] == "1s"

    assert lab.tl("update", "duration", exp, "-v", "1h").code == 0
    profile = lab.wait_status(exp, ["DONE"], timeout=90)
    assert profile["trialCount"] == 10


def test_trial_kill_and_rerun(lab: Lab) -> None:
    config, gate = _gated(lab, maxTrialNumber=3, trialConcurrency=2)
    exp = lab.start(config)
    running = [t for t in lab.wait_running(exp, 2) if t["status"] == "RUNNING"]
    victim = min(running, key=lambda t: t["sequence"])

    result = lab.cli("trial", "kill", exp, "--trial_id", victim["id"])
    assert result.code == 0, result.stderr
    assert f"Trial {victim['id']} of experiment {exp}: USER_CANCELED (killed by user)." in (
        result.stdout
    )
    killed = lab.client(exp).trial(victim["id"])
    assert killed["status"] == "USER_CANCELED" and killed["reason"] == "killed by user"

    # The freed slot went to trial #2; the budget of 3 is used, so a rerun is refused until
    # the budget is raised.
    lab.wait_running(exp, 2)
    line = _one_error_line(lab.cli("trial", "rerun", exp, "-T", victim["id"]))
    assert "maxTrialNumber 3 is reached" in line
    assert lab.tl("update", "trialnum", exp, "-v", "4").code == 0
    result = lab.cli("trial", "rerun", exp, "-T", victim["id"])
    assert result.code == 0, result.stderr
    trials = lab.client(exp).trials()
    assert len(trials) == 4
    rerun = max(trials, key=lambda t: t["sequence"])
    assert rerun["id"] != victim["id"] and rerun["sequence"] == 3
    assert rerun["parameters"] == victim["parameters"]
    assert rerun["parameterSource"] == "rerun"
    assert f"Trial {rerun['id']} (#3) of experiment {exp} queued" in result.stdout
    line = _one_error_line(lab.tl("trial", "kill", exp, "-T", "zzzzz"))
    assert "no trial 'zzzzz'" in line and victim["id"] in line

    gate.touch()
    lab.wait_status(exp, ["DONE"])
    final = {t["id"]: t for t in lab.client(exp).trials()}
    assert final[rerun["id"]]["status"] == "SUCCEEDED"
    assert final[rerun["id"]]["default"] == victim["parameters"]["x"]
    assert final[victim["id"]]["status"] == "USER_CANCELED"
    line = _one_error_line(lab.tl("trial", "kill", exp, "-T", rerun["id"]))
    assert "SUCCEEDED" in line and "only a waiting or running trial" in line


def test_top_logs_config_and_webui(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    config, gate = _gated(lab, maxTrialNumber=1, trialConcurrency=1, experimentName="topped")
    exp = lab.start(config)
    (running,) = lab.wait_running(exp, 1)
    url = lab.client(exp).url

    top = lab.cli("top", "--once")
    assert top.code == 0, top.stderr
    assert exp in top.stdout and running["id"] in top.stdout and "topped" in top.stdout
    # On a narrow screen or a pipe, a table folds a long cell (a URL, the parameters) onto
    # more lines; it never cuts one short with an ellipsis.
    monkeypatch.setenv("COLUMNS", "60")
    for args in (("top", "--once"), ("experiment", "list"), ("trial", "ls", exp)):
        shown = lab.cli(*args)
        assert shown.code == 0 and "…" not in shown.stdout, (args, shown.stdout)
    monkeypatch.delenv("COLUMNS")
    assert lab.tl("webui", "url", exp).stdout.strip() == url

    result = lab.cli("log", "trial", exp, "-T", running["id"])
    path = Path(result.stdout.splitlines()[0])
    assert path == lab.home / exp / "trials" / running["id"] / "trial.stdout"
    assert f"trial {running['id']} got" in result.stdout
    result = lab.tl("log", "trial", exp, "-T", running["id"], "--stderr")
    assert result.stdout.splitlines() == [str(path.with_name("trial.stderr")), "a line on stderr"]

    log_text = (lab.home / exp / "log" / "manager.log").read_text().splitlines()
    assert lab.tl("log", "stdout", exp).stdout.splitlines() == log_text
    assert lab.tl("log", "stdout", exp, "--head", "1").stdout.splitlines() == log_text[:1]
    assert lab.tl("log", "stdout", exp, "-T", "2").stdout.splitlines() == log_text[-2:]
    assert lab.tl("log", "stderr", exp).code == 0

    shown = yaml.safe_load(lab.cli("config", "show", exp).stdout)
    assert shown == lab.client(exp).config()
    assert shown["experimentName"] == "topped" and shown["searchSpace"] == SPACE
    profile = lab.tl("experiment", "show", exp).json()
    assert profile["id"] == exp and profile["config"] == shown
    listed = lab.tl("experiment", "list", "--json").json()
    assert [(row["id"], row["status"], row["url"]) for row in listed] == [
        (exp, "NO_MORE_TRIAL", url)
    ]

    gate.touch()
    lab.wait_status(exp, ["DONE"])
    assert lab.cli("stop").stdout.strip() == f"Experiment {exp} stopped (DONE)."
    line = _one_error_line(lab.tl("webui", "url", exp))
    assert "not running" in line and f"tunelab view {exp}" in line
    assert "No experiment is running." in lab.tl("top", "--once").stdout


def test_user_errors_are_one_line_with_exit_code_2(lab: Lab) -> None:
    missing = str(lab.root / "missing.yml")
    cases = [
        (["nosuchcommand"], "No such command"),
        (["create"], "--config"),
        (["create", "--config", missing], "missing.yml"),
        (["stop"], "no experiment is running"),
        (["stop", "abc", "--all"], "not several"),
        (["stop", "nosuch"], "no experiment with id"),
        (["trial", "ls"], "no experiment is running"),
        (["trial", "kill", "abc"], "--trial_id"),
        (["experiment", "delete"], "--all"),
        (["experiment", "load", "--path", missing], "missing.yml"),
        (["update", "concurrency"], "--value"),
        (["log", "stdout", "nosuch"], "no experiment with id"),
        (["config", "check", missing], "missing.yml"),
        (["platform", "clean", "--config", missing], "missing.yml"),
    ]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda args: lab.cli(*args), [args for args, _ in cases]))
    for (args, words), result in zip(cases, results, strict=True):
        line = _one_error_line(result)
        assert line.startswith("tunelab: ") and words in line, (args, line)
    assert lab.cli("stop", "--all").stdout.strip() == "No experiment is running."


def test_help_for_every_command() -> None:
    import click
    from click.testing import CliRunner

    from tunelab.cli import cli

    def walk(command: click.Command, path: list[str]) -> list[list[str]]:
        found = [path]
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                found += walk(sub, [*path, name])
        return found

    paths = walk(cli, [])
    names = {" ".join(p) for p in paths}
    for expected in (
        "create",
        "resume",
        "view",
        "stop",
        "top",
        "update searchspace",
        "update concurrency",
        "update duration",
        "update trialnum",
        "trial ls",
        "trial kill",
        "trial rerun",
        "experiment list",
        "experiment show",
        "experiment status",
        "experiment delete",
        "experiment export",
        "experiment import",
        "experiment save",
        "experiment load",
        "log stdout",
        "log stderr",
        "log trial",
        "webui url",
        "config show",
        "config check",
        "platform clean",
    ):
        assert expected in names
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_platform_clean_on_the_local_platform(lab: Lab) -> None:
    config = lab.write(SPACE, "print(1)\n")
    result = lab.cli("platform", "clean", "--config", str(config))
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == "Cleaned what tunelab left on local."
