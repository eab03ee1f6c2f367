"""Field cases of the experiment core, run through the real CLI with real trial processes.

Each test names its case in ../shared/cases/field_cases.md; expected values come from there.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from tests.conftest import Lab

REPORT_X = """
import tunelab
params = tunelab.get_next_parameter()
tunelab.report_final_result(float(len(str(params))))
"""


def _values(trials: list[dict], name: str) -> list:
    return [t["parameters"][name] for t in trials]


@pytest.mark.parametrize("tuner", ["Random", "TPE"])
def test_b01_quniform_values_on_grid_and_clipped(lab: Lab, tuner: str) -> None:
    space = {
        "width": {"_type": "quniform", "_value": [3, 17, 7]},
        "drop": {"_type": "quniform", "_value": [0.15, 0.95, 0.4]},
    }
    config = lab.write(space, REPORT_X, maxTrialNumber=60, tuner={"name": tuner})
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    trials = lab.trials(exp)
    widths = set(_values(trials, "width"))
    drops = {round(v, 9) for v in _values(trials, "drop")}
    # The space has 3 x 3 = 9 points: a finite space is never sampled twice.
    assert len(trials) == 9
    assert widths == {3, 7, 14}
    assert drops == {0.15, 0.4, 0.8}


def test_b01_gridsearch_enumerates_fractional_q(lab: Lab) -> None:
    space = {"drop": {"_type": "quniform", "_value": [0.15, 0.95, 0.4]}}
    config = lab.write(space, REPORT_X, maxTrialNumber=20, tuner={"name": "GridSearch"})
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    assert sorted(_values(lab.trials(exp), "drop")) == pytest.approx([0.15, 0.4, 0.8])
    assert lab.status(exp)["status"] == "DONE"


@pytest.mark.parametrize("bounds", [[-2, 5], [0, 5]])
def test_b03_loguniform_nonpositive_low_fails_fast(lab: Lab, bounds: list) -> None:
    config = lab.write({"l1": {"_type": "loguniform", "_value": bounds}}, REPORT_X)
    result = lab.cli("create", "--config", str(config))
    assert result.code == 2
    assert "l1" in result.stderr and "0 < low" in result.stderr.replace("low >", "0 < low")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # Nothing was created and nothing runs.
    assert not lab.home.exists() or not any(lab.home.iterdir())
    assert "No experiment is running" in lab.cli("experiment", "list").stdout


@pytest.mark.parametrize(
    ("space", "words"),
    [
        ({"lr": {"_type": "uniform", "_value": [0.05, 0.001]}}, ["lr", "low"]),
        ({"n": {"_type": "randint", "_value": [1, 4, 2]}}, ["n", "2"]),
        ({"m": {"_type": "randint", "_value": [0.5, 3.5]}}, ["m", "int"]),
    ],
)
def test_b04_malformed_ranges_rejected_at_creation(lab: Lab, space: dict, words: list) -> None:
    config = lab.write(space, REPORT_X, maxTrialNumber=30, tuner={"name": "TPE"})
    for command in (["create", "--config", str(config)], ["config", "check", str(config)]):
        result = lab.cli(*command)
        assert result.code == 2, result
        assert "Traceback" not in result.stderr
        for word in words:
            assert word in result.stderr
    assert not lab.home.exists() or not any(lab.home.iterdir())


def test_b06_randint_upper_bound_excluded_under_tpe(lab: Lab) -> None:
    space = {
        "bins": {"_type": "randint", "_value": [150, 400]},
        "leaves": {"_type": "randint", "_value": [20, 60]},
        "lr": {"_type": "loguniform", "_value": [0.005, 0.3]},
    }
    trial = """
import tunelab
p = tunelab.get_next_parameter()
assert isinstance(p["bins"], int) and isinstance(p["leaves"], int), p
tunelab.report_final_result(p["bins"] / 400 + p["leaves"] / 60 - p["lr"])
"""
    config = lab.write(space, trial, maxTrialNumber=40, tuner={"name": "TPE"})
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    trials = lab.trials(exp)
    assert len(trials) == 40
    assert all(t["status"] == "SUCCEEDED" for t in trials)
    assert all(150 <= b <= 399 and isinstance(b, int) for b in _values(trials, "bins"))
    assert all(20 <= v <= 59 and isinstance(v, int) for v in _values(trials, "leaves"))


def test_b07_nested_choice_without_name_rejected(lab: Lab) -> None:
    space = {
        "opt": {
            "_type": "choice",
            "_value": [
                {"_name": "sgd", "momentum": {"_type": "uniform", "_value": [0.5, 0.99]}},
                {"beta1": {"_type": "uniform", "_value": [0.8, 0.95]}},
            ],
        }
    }
    config = lab.write(space, REPORT_X, tuner={"name": "TPE"})
    result = lab.cli("create", "--config", str(config))
    assert result.code == 2
    assert "_name" in result.stderr and "opt" in result.stderr
    assert not lab.home.exists() or not any(lab.home.iterdir())


@pytest.mark.parametrize("tuner", ["TPE", "Random"])
def test_b08_finite_space_exhausted_then_done(lab: Lab, tuner: str) -> None:
    space = {
        "opt": {"_type": "choice", "_value": ["adam", "sgd"]},
        "lr": {"_type": "choice", "_value": [0.1, 0.01, 0.001]},
    }
    trial = """
import os, time, tunelab
p = tunelab.get_next_parameter()
time.sleep(2 * float(os.environ["TUNELAB_TIME_SCALE"]) * 10)
tunelab.report_final_result({"adam": 1.0, "sgd": 0.5}[p["opt"]] * p["lr"])
"""
    config = lab.write(space, trial, maxTrialNumber=10, tuner={"name": tuner})
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    trials = lab.trials(exp)
    configs = {(t["parameters"]["opt"], t["parameters"]["lr"]) for t in trials}
    assert len(trials) == 6 and len(configs) == 6
    assert lab.status(exp)["status"] == "DONE"


def test_b09_gridsearch_q_values_not_point_count(lab: Lab) -> None:
    space = {
        "d": {"_type": "quniform", "_value": [0.2, 1.0, 0.2]},
        "act": {"_type": "choice", "_value": ["a", "b"]},
    }
    config = lab.write(space, REPORT_X, maxTrialNumber=50, tuner={"name": "GridSearch"})
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    points = {(round(t["parameters"]["d"], 9), t["parameters"]["act"]) for t in lab.trials(exp)}
    expected = {(d, a) for d in (0.2, 0.4, 0.6, 0.8, 1.0) for a in ("a", "b")}
    assert points == expected
    assert len(lab.trials(exp)) == 10
    assert lab.status(exp)["status"] == "DONE"


def test_b09_gridsearch_continuous_dimension_bounded_by_budget(lab: Lab) -> None:
    space = {
        "d": {"_type": "quniform", "_value": [0.2, 1.0, 0.2]},
        "act": {"_type": "choice", "_value": ["a", "b"]},
        "w": {"_type": "uniform", "_value": [0, 8]},
    }
    config = lab.write(
        space, REPORT_X, maxTrialNumber=12, trialConcurrency=1, tuner={"name": "GridSearch"}
    )
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    trials = sorted(lab.trials(exp), key=lambda t: t["sequence"])
    assert len(trials) == 12
    keys = {json.dumps(t["parameters"], sort_keys=True) for t in trials}
    assert len(keys) == 12
    assert trials[0]["parameters"]["w"] == 4.0
    assert all(0 <= t["parameters"]["w"] <= 8 for t in trials)


def test_b12_dict_metric_default_drives_tuner_and_extra_keys_kept(lab: Lab) -> None:
    space = {"x": {"_type": "uniform", "_value": [0, 1]}}
    trial = """
import nni
p = nni.get_next_parameter()
nni.report_final_result({"default": 0.5 + p["x"] / 3, "loss": 0.41})
"""
    config = lab.write(
        space,
        trial,
        maxTrialNumber=25,
        tuner={"name": "TPE", "classArgs": {"optimize_mode": "maximize"}},
    )
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    trials = lab.trials(exp)
    assert len(trials) == 25
    for t in trials:
        assert t["default"] == pytest.approx(0.5 + t["parameters"]["x"] / 3)
        assert t["finalMetric"]["loss"] == 0.41
    best = max(trials, key=lambda t: t["default"])
    assert lab.status(exp)["best"]["id"] == best["id"]
    csv_path = lab.root / "out.csv"
    assert (
        lab.cli("experiment", "export", exp, "--type", "csv", "--filename", str(csv_path)).code
        == 0
    )
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert {row["metric.loss"] for row in rows} == {"0.41"}
    assert float(rows[0]["default"]) == pytest.approx(trials[0]["default"])


FINALS_TRIAL = """
import tunelab
values = [0.7, 0.4, float("-inf"), float("nan"), 0.9, 0.1]
tunelab.get_next_parameter()
tunelab.report_final_result(values[tunelab.get_sequence_id()])
"""


@pytest.mark.parametrize(("mode", "best"), [("maximize", 0.9), ("minimize", 0.1)])
def test_b14_nan_and_infinities_listed_exported_never_best(
    lab: Lab, mode: str, best: float
) -> None:
    space = {"x": {"_type": "uniform", "_value": [0, 1]}}
    config = lab.write(
        space,
        FINALS_TRIAL,
        maxTrialNumber=6,
        trialConcurrency=1,
        tuner={"name": "TPE", "classArgs": {"optimize_mode": mode}},
    )
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    trials = sorted(lab.trials(exp), key=lambda t: t["sequence"])
    assert [t["default"] for t in trials] == [0.7, 0.4, "-Infinity", "NaN", 0.9, 0.1]
    assert all(t["status"] == "SUCCEEDED" for t in trials)
    assert lab.status(exp)["best"]["default"] == best
    assert f"{best}" in result.stdout.splitlines()[-2]

    json_path, csv_path = lab.root / "e.json", lab.root / "e.csv"
    assert lab.cli("experiment", "export", exp, "-t", "json", "-f", str(json_path)).code == 0
    assert lab.cli("experiment", "export", exp, "-t", "csv", "-f", str(csv_path)).code == 0
    document = json.loads(json_path.read_text(), parse_constant=_refuse)
    exported = sorted(document["trials"], key=lambda t: t["sequence"])
    assert [t["value"] for t in exported] == [0.7, 0.4, "-Infinity", "NaN", 0.9, 0.1]
    rows = sorted(
        csv.DictReader(io.StringIO(csv_path.read_text())), key=lambda r: int(r["sequence"])
    )
    assert [r["default"] for r in rows] == ["0.7", "0.4", "-Infinity", "NaN", "0.9", "0.1"]


def _refuse(name: str) -> float:
    raise AssertionError(f"export is not strict JSON: it holds {name}")


def test_b16_nan_final_never_best_and_bad_values_fail_the_trial(lab: Lab) -> None:
    trial = """
import tunelab
values = [float("nan"), 0.3, "nan", 0.8, "", 0.5]
tunelab.get_next_parameter()
tunelab.report_final_result(values[tunelab.get_sequence_id()])
"""
    space = {"x": {"_type": "uniform", "_value": [0, 1]}}
    config = lab.write(
        space,
        trial,
        maxTrialNumber=6,
        trialConcurrency=1,
        tuner={"name": "TPE", "classArgs": {"optimize_mode": "maximize"}},
    )
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    trials = sorted(lab.trials(exp), key=lambda t: t["sequence"])
    states = [t["status"] for t in trials]
    assert states == ["SUCCEEDED", "SUCCEEDED", "FAILED", "SUCCEEDED", "FAILED", "SUCCEEDED"]
    # The reason says why: the trial's own error, the last line of its traceback.
    assert trials[2]["reason"].startswith("exit code 1: TypeError: report_final_result: ")
    assert "(got 'nan', a str)" in trials[2]["reason"]
    assert lab.status(exp)["best"]["default"] == 0.8
    stderr = (lab.home / exp / "trials" / trials[2]["id"] / "trial.stderr").read_text()
    assert "report_final_result" in stderr


def test_b17_intermediates_without_final_are_latest_not_final(lab: Lab) -> None:
    trial = """
import sys, tunelab
tunelab.get_next_parameter()
for value in (0.31, 0.45, 0.52):
    tunelab.report_intermediate_result(value)
sys.exit(0)
"""
    space = {"x": {"_type": "uniform", "_value": [0, 1]}}
    config = lab.write(space, trial, maxTrialNumber=1)
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    (only,) = lab.trials(exp)
    assert only["status"] == "SUCCEEDED"
    assert only["finalMetric"] is None and only["default"] is None
    assert only["latestIntermediate"] == {"value": 0.52, "step": 2}
    assert only["intermediateCount"] == 3
    assert lab.status(exp)["best"] is None
    assert "(latest)" in lab.cli("trial", "ls", exp).stdout


SLEEP_THEN_REPORT = """
import os, time, tunelab
scale = float(os.environ["TUNELAB_TIME_SCALE"])
tunelab.get_next_parameter()
time.sleep({seconds} * scale)
tunelab.report_final_result(0.5)
"""


def test_b20_no_more_trial_while_last_trial_runs(lab: Lab) -> None:
    import time

    space = {"x": {"_type": "uniform", "_value": [0, 1]}}
    config = lab.write(
        space, SLEEP_THEN_REPORT.format(seconds=300), maxTrialNumber=1, trialConcurrency=1
    )
    result = lab.cli("create", "--config", str(config))
    assert result.code == 0, result.stderr
    exp = result.stdout.split()[1]
    seen = []
    for _ in range(200):
        status = lab.status(exp)
        seen.append(status["status"])
        if status["status"] == "DONE":
            break
        time.sleep(0.1)
    assert "NO_MORE_TRIAL" in seen and seen[-1] == "DONE"
    assert seen.index("NO_MORE_TRIAL") < seen.index("DONE")
    (only,) = lab.trials(exp)
    assert only["status"] == "SUCCEEDED" and only["default"] == 0.5


def test_b21_duration_budget_stops_submissions_then_done(lab: Lab) -> None:
    space = {"x": {"_type": "uniform", "_value": [0, 1]}}
    # Scaled: the experiment may run 1.2 s; each trial takes 3 s.
    config = lab.write(
        space,
        SLEEP_THEN_REPORT.format(seconds=300),
        maxTrialNumber=10,
        trialConcurrency=2,
        maxExperimentDuration="2m",
    )
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    trials = lab.trials(exp)
    assert len(trials) == 2
    assert all(t["status"] == "SUCCEEDED" and t["default"] == 0.5 for t in trials)
    assert "NO_MORE_TRIAL" in result.stdout
    assert lab.status(exp)["status"] == "DONE"


def test_b25_trial_silent_inside_child_shell_is_alive(lab: Lab) -> None:
    trial = """
import os, subprocess, tunelab
scale = float(os.environ["TUNELAB_TIME_SCALE"])
tunelab.get_next_parameter()
subprocess.run(f"sleep {90 * scale}", shell=True, check=True)
tunelab.report_final_result(0.61)
"""
    space = {"x": {"_type": "uniform", "_value": [0, 1]}}
    config = lab.write(space, trial, maxTrialNumber=1)
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    (only,) = lab.trials(exp)
    assert only["status"] == "SUCCEEDED" and only["default"] == 0.61


def test_b27_spaces_in_directories_and_quoted_arguments(lab: Lab, tmp_path: Path) -> None:
    code_dir = tmp_path / "my code"
    code_dir.mkdir()
    (code_dir / "train v2.py").write_text(
        "import sys, tunelab\n"
        "tunelab.get_next_parameter()\n"
        "assert sys.argv[-1] == 'a b', sys.argv\n"
        "tunelab.report_final_result(1.0)\n",
        encoding="utf-8",
    )
    import sys

    work = tmp_path / "hpo runs" / "exp A"
    config = lab.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}},
        REPORT_X,
        maxTrialNumber=2,
        trialCodeDirectory=str(code_dir),
        trialCommand=f'{sys.executable} "train v2.py" --tag "a b"',
        experimentWorkingDirectory=str(work),
    )
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    trials = lab.trials(exp)
    assert [t["status"] for t in trials] == ["SUCCEEDED", "SUCCEEDED"]
    assert (work / exp / "trials" / trials[0]["id"] / "trial.stdout").exists()
    listed = lab.cli("experiment", "list", "--all", "--json").json()
    assert [row["id"] for row in listed] == [exp]


def test_b33_json_export_is_one_valid_document(lab: Lab) -> None:
    space = {
        "x": {"_type": "uniform", "_value": [0, 1]},
        "c": {"_type": "choice", "_value": ["a", "b"]},
    }
    config = lab.write(space, REPORT_X, maxTrialNumber=5)
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    path = lab.root / "export.json"
    assert (
        lab.cli("experiment", "export", exp, "--type", "json", "--filename", str(path)).code == 0
    )
    document = json.loads(path.read_text())
    assert document["experiment"]["id"] == exp
    assert document["experiment"]["config"]["searchSpace"] == space
    assert len(document["trials"]) == 5
    for trial in document["trials"]:
        assert set(trial) >= {"id", "parameters", "value", "status"}
        assert set(trial["parameters"]) == {"x", "c"}
        assert isinstance(trial["value"], float) and not math.isnan(trial["value"])
