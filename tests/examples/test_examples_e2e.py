"""Each example runs through ``tunelab create --foreground`` as its README says, with a
smaller trial budget, and every trial ends SUCCEEDED with a final result.

The examples are copied to a temporary folder first, with the budget lowered and ``python3``
replaced by this interpreter (so a virtual environment's tunelab is the one the trials see).
Everything else in the config is the example's own.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from examples_support import EXAMPLES, has_torch

pytestmark = pytest.mark.slow


def copy_example(
    example: str, tmp_path: Path, trials: int, config_name: str = "config.yml", **extra_args: str
) -> Path:
    folder = tmp_path / example
    shutil.copytree(EXAMPLES / example, folder, ignore=shutil.ignore_patterns("__pycache__"))
    config_path = folder / config_name
    config: dict[str, Any] = yaml.safe_load(config_path.read_text(encoding="utf-8"))

    # The test run scales durations down (TUNELAB_TIME_SCALE), so a duration budget would end
    # the experiment early: the trial count is the budget here.
    v1 = "trial" in config and isinstance(config["trial"], dict)
    if v1:
        config["maxTrialNum"] = trials
        config.pop("maxExecDuration", None)
        config["trial"]["command"] = python_command(config["trial"]["command"], extra_args)
    else:
        config["maxTrialNumber"] = trials
        config.pop("maxExperimentDuration", None)
        config["trialCommand"] = python_command(config["trialCommand"], extra_args)

    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return config_path


def python_command(command: str, extra_args: dict[str, str]) -> str:
    assert command.startswith("python3 "), command
    args = "".join(f" --{name} {value}" for name, value in extra_args.items())
    return f"{sys.executable} {command.removeprefix('python3 ')}{args}"


def run_and_check(lab: Any, config: Path, trials: int) -> list[dict[str, Any]]:
    result, experiment_id = lab.run(config, timeout=600)

    assert result.code == 0, f"{result.stdout}\n{result.stderr}"
    assert experiment_id, f"no experiment id in the output:\n{result.stdout}"

    listed = lab.cli("trial", "ls", experiment_id)
    assert listed.code == 0, listed.stderr
    ended = lab.trials(experiment_id)
    assert len(ended) == trials, ended
    for trial in ended:
        assert trial["status"] == "SUCCEEDED", trial
        assert isinstance(trial["default"], float), trial
        assert trial["id"] in listed.stdout
    return ended


def test_digits_sklearn(lab: Any, tmp_path: Path) -> None:
    config = copy_example("digits-sklearn", tmp_path, trials=4)

    ended = run_and_check(lab, config, trials=4)

    assert max(trial["default"] for trial in ended) > 0.5


def test_nni_trial_unchanged(lab: Any, tmp_path: Path) -> None:
    config = copy_example("nni-trial-unchanged", tmp_path, trials=3)

    run_and_check(lab, config, trials=3)


def test_nni_trial_unchanged_v1_config(lab: Any, tmp_path: Path) -> None:
    config = copy_example("nni-trial-unchanged", tmp_path, trials=2, config_name="config_v1.yml")

    run_and_check(lab, config, trials=2)


@pytest.mark.skipif(
    not has_torch(),
    reason="torch is not installed: pip install torch==2.13.0 && pip install -e '.[torch]'",
)
def test_digits_torch(lab: Any, tmp_path: Path) -> None:
    config = copy_example("digits-torch", tmp_path, trials=2, epochs="2")

    ended = run_and_check(lab, config, trials=2)

    assert all(trial["intermediateCount"] == 2 for trial in ended)
