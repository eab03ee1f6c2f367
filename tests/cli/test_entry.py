"""The ``tunelab`` entry point starts a create's manager before it loads the CLI: that process
must become the experiment's manager, or end with the command, whatever the command did."""

from __future__ import annotations

from importlib.metadata import version

from tests.conftest import Lab
from tests.faults.harness import lab_processes

SPACE = {"x": {"_type": "uniform", "_value": [0, 1]}}
TRIAL = "import tunelab\ntunelab.get_next_parameter()\ntunelab.report_final_result(1.0)\n"


def test_the_prestarted_process_becomes_the_manager(lab: Lab) -> None:
    config = lab.write(SPACE, TRIAL, trialConcurrency=1, maxTrialNumber=1)
    done = lab.cli("create", "--config", str(config))
    assert done.code == 0, done.stderr
    experiment = done.stdout.split()[1]
    # Once the trial has ended (a process the manager forks shows the manager's command line
    # until it execs), the manager is the one process left, and it is the one started first.
    lab.wait(experiment, lambda profile, trials: profile["status"] == "DONE")
    [manager] = lab_processes(lab.home)
    assert "--deferred" in manager.cmdline()
    assert lab.cli("stop", experiment).code == 0
    assert lab_processes(lab.home) == []
    shown = lab.cli("trial", "ls", experiment)
    assert "SUCCEEDED" in shown.stdout, shown.stdout


def test_a_create_that_ends_early_leaves_no_process(lab: Lab) -> None:
    config = lab.write(SPACE, TRIAL)
    for args in (
        ("create", "--config", str(config), "--no-such-flag"),  # a usage error
        ("create", "--config", str(lab.root / "missing.yml")),  # a config that is not there
        ("create", "--help"),
    ):
        done = lab.cli(*args)
        assert done.code in (0, 2), (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert lab_processes(lab.home) == [], args
    assert "No experiments" in lab.cli("experiment", "list", "--all").stdout


def test_version_answers_to_nnictls_short_flag_too(lab: Lab) -> None:
    for flag in ("-v", "--version"):
        done = lab.cli(flag)
        assert done.code == 0, done.stderr
        assert done.stdout.strip() == f"tunelab, version {version('tunelab')}"
