"""Custom tuners and assessors written for NNI, by class name and by registered name, and the
Medianstop assessor, through the real CLI and real trial processes."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Lab, gated_trial
from tunelab.assessors import MedianstopAssessor, create_assessor
from tunelab.errors import ConfigError

REPORT_X = """
import tunelab
p = tunelab.get_next_parameter()
tunelab.report_final_result(p["x"])
"""

# An NNI custom tuner as NNI users write it: nni's base class, extract_scalar_reward, and
# NoMoreTrialError when it has nothing left.
COUNTING_TUNER = """
import json, os
import nni
from nni.tuner import Tuner
from nni.utils import ClassArgsValidator, MetricType, extract_scalar_reward

assert MetricType.FINAL == "FINAL" and MetricType.PERIODICAL == "PERIODICAL"


class CountingValidator(ClassArgsValidator):
    def validate_class_args(self, **kwargs):
        if "limit" in kwargs:
            self.range("limit", int, 1, 100).validate(kwargs["limit"])
        if "optimize_mode" in kwargs:
            self.choices("optimize_mode", "maximize", "minimize").validate(kwargs["optimize_mode"])


class CountingTuner(Tuner):
    def __init__(self, step=0.1, limit=3, optimize_mode="maximize"):
        self.step, self.limit, self.optimize_mode = step, limit, optimize_mode
        self.results = []

    def update_search_space(self, search_space):
        self.names = sorted(search_space)

    def generate_parameters(self, parameter_id, **kwargs):
        if parameter_id >= self.limit:
            raise nni.NoMoreTrialError("counted enough")
        return {"x": round(parameter_id * self.step, 6)}

    def receive_trial_result(self, parameter_id, parameters, value, **kwargs):
        assert kwargs["customized"] is False  # as NNI passes it for the tuner's own trials
        self.results.append(extract_scalar_reward(value))
        path = os.path.join(os.path.dirname(__file__), "results.json")
        with open(path, "w") as f:
            json.dump({"names": self.names, "results": self.results}, f)
"""


def write_tuner(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "counting_tuner.py").write_text(COUNTING_TUNER, encoding="utf-8")
    return folder


SPACE = {"x": {"_type": "uniform", "_value": [0, 1]}}


def test_an_nni_custom_tuner_runs_unchanged_by_class_name(lab: Lab) -> None:
    tuners = write_tuner(lab.root / "tuners")
    config = lab.write(
        SPACE,
        REPORT_X,
        maxTrialNumber=10,
        trialConcurrency=1,
        tuner={
            "className": "counting_tuner.CountingTuner",
            "codeDirectory": str(tuners),
            "classArgs": {"step": 0.25},
        },
    )

    result, exp = lab.run(config)

    assert result.code == 0, result.stderr
    trials = sorted(lab.trials(exp), key=lambda t: t["sequence"])
    assert [t["parameters"]["x"] for t in trials] == [0.0, 0.25, 0.5]
    assert lab.status(exp)["status"] == "DONE"
    seen = (tuners / "results.json").read_text()
    assert '"names": ["x"]' in seen and '"results": [0.0, 0.25, 0.5]' in seen


def test_a_custom_tuner_that_cannot_be_imported_is_a_config_error(lab: Lab) -> None:
    tuners = write_tuner(lab.root / "tuners")
    config = lab.write(
        SPACE,
        REPORT_X,
        tuner={"className": "counting_tuner.CountingTunr", "codeDirectory": str(tuners)},
    )

    result = lab.cli("create", "--config", str(config))

    assert result.code == 2
    assert "tuner.className: no such class" in result.stderr
    assert "did you mean 'CountingTuner'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_custom_tuner_refusing_its_arguments_is_a_config_error(lab: Lab) -> None:
    tuners = write_tuner(lab.root / "tuners")
    config = lab.write(
        SPACE,
        REPORT_X,
        tuner={
            "className": "counting_tuner.CountingTuner",
            "codeDirectory": str(tuners),
            "classArgs": {"stride": 2},
        },
    )

    result = lab.cli("config", "check", str(config))

    assert result.code == 2
    assert "tuner.classArgs: CountingTuner(stride) failed: TypeError" in result.stderr


PICKY_TUNER = """
from nni.tuner import Tuner


class PickyTuner(Tuner):
    def update_search_space(self, search_space):
        if "forbidden" in search_space:
            raise ValueError("no parameter may be called forbidden")
        self.space = search_space

    def generate_parameters(self, parameter_id, **kwargs):
        return {"x": 0.5}

    def receive_trial_result(self, parameter_id, parameters, value, **kwargs):
        pass
"""


def test_a_custom_tuner_refusing_the_space_is_a_config_error_and_an_update_is_refused(
    lab: Lab,
) -> None:
    tuners = lab.root / "tuners"
    tuners.mkdir()
    (tuners / "picky.py").write_text(PICKY_TUNER, encoding="utf-8")
    tuner = {"className": "picky.PickyTuner", "codeDirectory": str(tuners)}
    forbidden = {**SPACE, "forbidden": {"_type": "choice", "_value": [1, 2]}}

    refused = lab.cli("config", "check", str(lab.write(forbidden, REPORT_X, tuner=tuner)))
    assert refused.code == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "searchSpace: the tuner PickyTuner refused it in update_search_space" in refused.stderr
    assert "ValueError: no parameter may be called forbidden" in refused.stderr

    gate = lab.root / "gate"
    config = lab.write(SPACE, gated_trial(gate), name="ok", maxTrialNumber=2, tuner=tuner)
    started = lab.cli("create", "--config", str(config))
    assert started.code == 0, started.stderr
    exp = started.stdout.split()[1]
    new_space = lab.root / "forbidden.json"
    new_space.write_text(json.dumps(forbidden), encoding="utf-8")
    update = lab.cli("update", "searchspace", exp, "--filename", str(new_space))
    assert update.code == 2, update.stderr
    assert "refused it in update_search_space" in update.stderr
    assert "Traceback" not in update.stderr
    # Nothing of the refused space was kept; the experiment goes on.
    assert lab.client(exp).experiment()["config"]["searchSpace"] == SPACE
    gate.touch()
    assert lab.cli("stop", exp).code == 0


def test_algo_register_list_show_use_and_unregister(lab: Lab) -> None:
    tuners = write_tuner(lab.root / "tuners")
    meta = lab.root / "meta.yml"
    meta.write_text(
        textwrap.dedent(
            f"""
            algoType: tuner
            builtinName: Counting
            className: counting_tuner.CountingTuner
            classArgsValidator: counting_tuner.CountingValidator
            codeDirectory: {tuners}
            """
        ),
        encoding="utf-8",
    )

    registered = lab.cli("algo", "register", "--meta_path", str(meta))
    assert registered.code == 0, registered.stderr
    listed = lab.cli("algo", "list", "--json").json()
    assert {
        "name": "Counting",
        "algoType": "tuner",
        "source": "registered",
        "className": "counting_tuner.CountingTuner",
    } in listed
    assert lab.cli("algo", "show", "counting").json()["className"] == (
        "counting_tuner.CountingTuner"
    )

    config = lab.write(
        SPACE,
        REPORT_X,
        maxTrialNumber=5,
        trialConcurrency=1,
        tuner={"name": "counting", "classArgs": {"limit": 2}},
    )
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    assert len(lab.trials(exp)) == 2
    # The registered validator (NNI's ClassArgsValidator and its rules) checks classArgs.
    refusals = [
        ({"limit": 0}, "limit should be a int in range [1, 100]!"),
        ({"optimize_mode": "up"}, "optimize_mode should be in ['maximize', 'minimize']!"),
    ]
    for bad, words in refusals:
        config = lab.write(
            SPACE, REPORT_X, name="bad", tuner={"name": "counting", "classArgs": bad}
        )
        refused = lab.cli("config", "check", str(config))
        assert refused.code == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert "rejected by counting_tuner.CountingValidator" in refused.stderr
        assert words in refused.stderr, refused.stderr

    assert lab.cli("algo", "unregister", "Counting").code == 0
    again = lab.cli("config", "check", str(config))
    assert again.code == 2 and "unknown tuner" in again.stderr


def test_algo_register_refuses_builtin_names_and_bad_meta(lab: Lab) -> None:
    tuners = write_tuner(lab.root / "tuners")
    meta = lab.root / "meta.yml"
    meta.write_text(
        f"algoType: tuner\nbuiltinName: TPE\nclassName: counting_tuner.CountingTuner\n"
        f"codeDirectory: {tuners}\n",
        encoding="utf-8",
    )
    taken = lab.cli("algo", "register", "-m", str(meta))
    assert taken.code == 2 and "built-in" in taken.stderr

    meta.write_text("algoType: pruner\nbuiltinName: X\nclassName: a.B\n", encoding="utf-8")
    wrong = lab.cli("algo", "register", "-m", str(meta))
    assert wrong.code == 2 and "algoType must be 'tuner' or 'assessor'" in wrong.stderr
    assert lab.cli("algo", "unregister", "TPE").code == 2


# -- Medianstop -------------------------------------------------------------------------------


def test_medianstop_stops_trials_below_the_median_of_completed_ones() -> None:
    assessor = MedianstopAssessor(optimize_mode="maximize", start_step=2)
    for trial, values in enumerate([[0.5, 0.6, 0.7], [0.3, 0.4, 0.5], [0.7, 0.8, 0.9]]):
        assessor.trial_end(trial, True, values)
    # Running averages at step 2: 0.55, 0.35, 0.75 -> median 0.55.
    assert assessor.assess(9, [0.1]) is True  # before start_step
    assert assessor.assess(9, [0.2, 0.5]) is False
    assert assessor.assess(9, [0.55, 0.3]) is True  # a tie goes on
    assert assessor.assess(9, [0.2, 0.2, 0.2, 0.2]) is True  # no completed trial reached step 4
    assert assessor.assess(9, [math.nan, math.nan]) is False


def test_medianstop_median_of_an_even_count_is_nnis() -> None:
    """NNI takes the worse of the two middle values, not their mean."""
    up = MedianstopAssessor(optimize_mode="maximize", start_step=1)
    down = MedianstopAssessor(optimize_mode="minimize", start_step=1)
    for trial, value in enumerate([1.0, 3.0]):
        up.trial_end(trial, True, [value])
        down.trial_end(trial, True, [value])
    # The mean would be 2; NNI's median is 1 when maximizing and 3 when minimizing.
    assert up.assess(9, [1.5]) is True
    assert up.assess(9, [0.9]) is False
    assert down.assess(9, [2.5]) is True
    assert down.assess(9, [3.5]) is False


def test_medianstop_minimize_and_failed_trials_ignored() -> None:
    assessor = MedianstopAssessor(optimize_mode="minimize")
    assessor.trial_end(0, True, [1.0, 0.8])
    assessor.trial_end(1, False, [0.01, 0.01])  # failed trials take no part
    assert assessor.assess(2, [0.5]) is True
    assert assessor.assess(2, [2.0]) is False


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("Curvefitting", {}, "not available in tunelab yet"),
        ("Medianstp", {}, "did you mean 'Medianstop'"),
        ("Medianstop", {"start_stp": 1}, "did you mean 'start_step'"),
        ("Medianstop", {"optimize_mode": "up"}, "optimize_mode must be"),
    ],
)
def test_bad_assessor_configs_are_config_errors(name: str, args: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_assessor(name, args)


STEPS_TRIAL = """
import os, time, tunelab
scale = float(os.environ["TUNELAB_TIME_SCALE"])
p = tunelab.get_next_parameter()
for step in range(6):
    tunelab.report_intermediate_result(p["x"])
    time.sleep(0.4)
tunelab.report_final_result(p["x"])
"""


@pytest.mark.slow
def test_medianstop_ends_poor_trials_early_through_the_engine(lab: Lab) -> None:
    space = {"x": {"_type": "choice", "_value": [0.8, 0.9, 0.1, 0.05]}}
    config = lab.write(
        space,
        STEPS_TRIAL,
        maxTrialNumber=4,
        trialConcurrency=1,
        tuner={"name": "GridSearch"},
        assessor={"name": "Medianstop", "classArgs": {"start_step": 2}},
    )

    result, exp = lab.run(config)

    assert result.code == 0, result.stderr
    trials = sorted(lab.trials(exp), key=lambda t: t["sequence"])
    assert [t["status"] for t in trials] == [
        "SUCCEEDED",
        "SUCCEEDED",
        "EARLY_STOPPED",
        "EARLY_STOPPED",
    ]
    for trial in trials[2:]:
        assert trial["reason"].startswith("stopped by Medianstop at step ")
        assert trial["intermediateCount"] < 6
        assert trial["finalMetric"] is None


JUDGED_TRIAL = """
import os, time, tunelab
p = tunelab.get_next_parameter()
if p["x"] == 0:
    for value in (0, 10):
        tunelab.report_intermediate_result(value)
    tunelab.report_final_result(10)
elif p["x"] == 1:
    # Two results at once: the first (-1, below the median 0 at step 1) must be judged on
    # its own, not only the pair's best (20).
    for value in (-1, 20):
        tunelab.report_intermediate_result(value)
    time.sleep(20)
    tunelab.report_final_result(20)
else:
    # Poor results, then the end at once: the trial ended on its own and is not stopped.
    for value in (-5, -5, -5):
        tunelab.report_intermediate_result(value)
    tunelab.report_final_result(-5)
    os._exit(0)
"""


@pytest.mark.slow
def test_medianstop_judges_every_step_and_never_a_trial_that_ended(lab: Lab) -> None:
    config = lab.write(
        {"x": {"_type": "choice", "_value": [0, 1, 2]}},
        JUDGED_TRIAL,
        maxTrialNumber=3,
        trialConcurrency=1,
        tuner={"name": "GridSearch"},
        assessor={"name": "Medianstop", "classArgs": {"start_step": 1}},
    )

    result, exp = lab.run(config)

    assert result.code == 0, result.stderr
    trials = sorted(lab.trials(exp), key=lambda t: t["sequence"])
    assert [t["parameters"]["x"] for t in trials] == [0, 1, 2]
    assert [t["status"] for t in trials] == ["SUCCEEDED", "EARLY_STOPPED", "SUCCEEDED"]
    assert trials[1]["reason"] == "stopped by Medianstop at step 1"
    assert trials[2]["finalMetric"] == -5 and trials[2]["exitCode"] == 0
