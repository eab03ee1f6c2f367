"""The tuner contract, run against every built-in tuner, and each algorithm's own promises.

Tuners are driven directly, as the engine drives them: suggest, observe, trial_end, in order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tunelab.errors import ConfigError, NoMoreTrials
from tunelab.space import SearchSpace
from tunelab.tuners import Tuner, available_tuners, create_tuner

ALL = ["Random", "TPE", "GridSearch"]

D08 = {
    "opt": {"_type": "choice", "_value": ["adam", "sgd"]},
    "lr": {"_type": "choice", "_value": [0.1, 0.01, 0.001]},
}
MIXED = {
    "x": {"_type": "uniform", "_value": [-5, 10]},
    "n": {"_type": "randint", "_value": [150, 400]},
    "lr": {"_type": "loguniform", "_value": [0.005, 0.3]},
    "q": {"_type": "quniform", "_value": [0.15, 0.95, 0.4]},
    "opt": {
        "_type": "choice",
        "_value": [
            {"_name": "sgd", "momentum": {"_type": "uniform", "_value": [0.5, 0.99]}},
            {"_name": "adam"},
        ],
    },
}


def make(name: str, space: dict, **args: Any) -> Tuner:
    tuner = create_tuner(name, args)
    tuner.update_search_space(SearchSpace.from_json(space))
    return tuner


def drive(
    tuner: Tuner,
    trials: int,
    objective: Callable[[dict], float],
    concurrency: int = 1,
) -> list[dict]:
    """Run ``trials`` trials, ``concurrency`` suggested before the oldest reports."""
    suggested: list[tuple[int, dict]] = []
    done: list[dict] = []
    sequence = 0
    while len(done) < trials:
        while len(suggested) < concurrency and sequence < trials:
            try:
                suggested.append((sequence, tuner.suggest(sequence)))
            except NoMoreTrials:
                sequence = trials
                break
            sequence += 1
        if not suggested:
            break
        trial, params = suggested.pop(0)
        tuner.observe(trial, objective(params))
        tuner.trial_end(trial, True)
        done.append(params)
    return done


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


# -- the contract, for every tuner ------------------------------------------------------------


def test_the_registry_lists_every_tuner() -> None:
    assert available_tuners() == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("concurrency", [1, 2])
def test_b08_finite_space_tried_once_each_then_no_more_trials(name: str, concurrency: int) -> None:
    tuner = make(name, D08)

    done = drive(tuner, 10, lambda p: p["lr"], concurrency)

    assert len(done) == 6
    assert len({key(p) for p in done}) == 6
    with pytest.raises(NoMoreTrials):
        tuner.suggest(99)


@pytest.mark.parametrize("name", ALL)
def test_suggestions_lie_in_the_space(name: str) -> None:
    tuner = make(name, MIXED)
    space = SearchSpace.from_json(MIXED)

    done = drive(tuner, 40, lambda p: p["x"] ** 2 + p["n"] / 100, concurrency=2)

    assert len(done) == 40
    for params in done:
        assert space.contains(params), params
        assert type(params["n"]) is int and 150 <= params["n"] <= 399


@pytest.mark.parametrize("name", ALL)
def test_nan_and_infinite_results_do_not_break_a_tuner(name: str) -> None:
    tuner = make(name, MIXED)
    values = iter([math.nan, math.inf, -math.inf] * 20)

    done = drive(tuner, 45, lambda p: next(values) if p["x"] > 0 else p["x"])

    assert len(done) == 45


@pytest.mark.parametrize("name", ["Random", "TPE"])
def test_a_seeded_tuner_is_reproducible(name: str) -> None:
    def run() -> list[dict]:
        return drive(make(name, MIXED, seed=7), 30, lambda p: p["x"] ** 2, concurrency=2)

    assert run() == run()
    other = drive(make(name, MIXED, seed=8), 30, lambda p: p["x"] ** 2, concurrency=2)
    assert other != run()


@pytest.mark.parametrize("name", ALL)
def test_replaying_the_history_rebuilds_the_tuner(name: str) -> None:
    args = {} if name == "GridSearch" else {"seed": 3}
    original = make(name, MIXED, **args)
    done = drive(original, 25, lambda p: p["x"] ** 2)

    rebuilt = make(name, MIXED, **args)
    for trial, params in enumerate(done):
        rebuilt.add_trial(trial, params)
        rebuilt.observe(trial, params["x"] ** 2)
        rebuilt.trial_end(trial, True)

    assert rebuilt.suggest(25) == original.suggest(25)


@pytest.mark.parametrize("name", ALL)
def test_b11_shrunk_space_orphan_result_is_harmless(name: str) -> None:
    space = {"act": {"_type": "choice", "_value": ["relu", "tanh", "gelu"]}}
    tuner = make(name, space)
    first = [tuner.suggest(trial) for trial in range(3)]
    orphan = next(trial for trial, p in enumerate(first) if p["act"] == "gelu")

    tuner.update_search_space(
        SearchSpace.from_json({"act": {"_type": "choice", "_value": ["relu", "tanh"]}})
    )
    tuner.observe(orphan, 0.9)
    tuner.trial_end(orphan, True)
    for trial in range(3):
        if trial != orphan:
            tuner.observe(trial, 0.5)

    # Both remaining points were tried already: the shrunk space is used up.
    with pytest.raises(NoMoreTrials):
        tuner.suggest(3)


def test_a_user_added_trial_is_never_suggested_again() -> None:
    tuner = make("Random", D08, seed=1)
    tuner.add_trial(0, {"opt": "adam", "lr": 0.1})

    rest = [tuner.suggest(trial) for trial in range(1, 6)]

    assert {"opt": "adam", "lr": 0.1} not in rest
    assert len({key(p) for p in rest}) == 5
    with pytest.raises(NoMoreTrials):
        tuner.suggest(6)


# -- GridSearch -------------------------------------------------------------------------------


def test_b09_grid_reads_q_as_a_step_not_a_count() -> None:
    space = {
        "d": {"_type": "quniform", "_value": [0.2, 1.0, 0.2]},
        "act": {"_type": "choice", "_value": ["a", "b"]},
    }
    tuner = make("GridSearch", space)

    done = drive(tuner, 50, lambda p: p["d"])

    assert {(p["d"], p["act"]) for p in done} == {
        (d, a) for d in (0.2, 0.4, 0.6, 0.8, 1.0) for a in ("a", "b")
    }
    assert len(done) == 10


def test_b01_grid_enumerates_fractional_q_with_clipping() -> None:
    tuner = make("GridSearch", {"drop": {"_type": "quniform", "_value": [0.15, 0.95, 0.4]}})

    assert [p["drop"] for p in drive(tuner, 20, lambda p: 0.0)] == [0.15, 0.4, 0.8]


def test_b09_grid_refines_a_continuous_dimension_from_its_midpoint() -> None:
    space = {
        "d": {"_type": "quniform", "_value": [0.2, 1.0, 0.2]},
        "act": {"_type": "choice", "_value": ["a", "b"]},
        "w": {"_type": "uniform", "_value": [0, 8]},
    }
    done = drive(make("GridSearch", space), 30, lambda p: 0.0)

    assert len({key(p) for p in done}) == 30
    assert [p["w"] for p in done[:10]] == [4.0] * 10
    assert {p["w"] for p in done[10:30]} == {2.0, 6.0}


def test_grid_refines_log_and_normal_dimensions_in_their_own_scale() -> None:
    log_done = drive(
        make("GridSearch", {"x": {"_type": "loguniform", "_value": [1, 100]}}), 3, lambda p: 0.0
    )
    assert [round(p["x"], 9) for p in log_done] == [10.0, round(10**0.5, 9), round(10**1.5, 9)]
    normal_done = drive(
        make("GridSearch", {"x": {"_type": "normal", "_value": [5, 2]}}), 3, lambda p: 0.0
    )
    assert normal_done[0]["x"] == 5.0
    assert normal_done[1]["x"] < 5.0 < normal_done[2]["x"]


def test_grid_over_nested_choice_covers_each_option_sub_grid() -> None:
    space = {
        "opt": {
            "_type": "choice",
            "_value": [
                {"_name": "sgd", "m": {"_type": "choice", "_value": [0.5, 0.9]}},
                {"_name": "adam"},
            ],
        }
    }
    done = drive(make("GridSearch", space), 10, lambda p: 0.0)

    assert done == [
        {"opt": {"_name": "sgd", "m": 0.5}},
        {"opt": {"_name": "sgd", "m": 0.9}},
        {"opt": {"_name": "adam"}},
    ]


# -- TPE --------------------------------------------------------------------------------------


def quadratic(params: dict) -> float:
    return (params["x"] - 2.0) ** 2 + (params["y"] + 1.0) ** 2


SQUARE = {
    "x": {"_type": "uniform", "_value": [-5, 5]},
    "y": {"_type": "uniform", "_value": [-5, 5]},
}


def best_after(name: str, seed: int, trials: int = 60) -> float:
    tuner = make(name, SQUARE, seed=seed, optimize_mode="minimize")
    return min(quadratic(p) for p in drive(tuner, trials, quadratic))


def test_tpe_finds_better_points_than_random_search() -> None:
    tpe = np.median([best_after("TPE", seed) for seed in range(5)])
    random = np.median([best_after("Random", seed) for seed in range(5)])

    assert tpe < random / 3


def test_tpe_maximize_and_minimize_go_opposite_ways() -> None:
    def mean_x(mode: str) -> float:
        tuner = make(
            "TPE", {"x": {"_type": "uniform", "_value": [0, 1]}}, seed=0, optimize_mode=mode
        )
        done = drive(tuner, 60, lambda p: p["x"])
        return float(np.mean([p["x"] for p in done[30:]]))

    assert mean_x("maximize") > 0.7
    assert mean_x("minimize") < 0.3


def test_tpe_default_mode_is_minimize_as_in_nni() -> None:
    assert create_tuner("tpe").optimize_mode == "minimize"
    assert create_tuner("Random").optimize_mode == "maximize"


def test_tpe_steers_away_from_nan_results() -> None:
    tuner = make(
        "TPE", {"x": {"_type": "uniform", "_value": [0, 1]}}, seed=1, optimize_mode="maximize"
    )
    done = drive(tuner, 60, lambda p: math.nan if p["x"] > 0.6 else -abs(p["x"] - 0.2))

    late = [p["x"] for p in done[30:]]
    assert np.mean([x <= 0.6 for x in late]) > 0.8


def test_tpe_constant_liar_spreads_concurrent_suggestions() -> None:
    tuner = make(
        "TPE",
        {"x": {"_type": "uniform", "_value": [0, 1]}},
        seed=2,
        optimize_mode="minimize",
        tpe_args={"n_startup_jobs": 5},
    )
    drive(tuner, 10, lambda p: abs(p["x"] - 0.3))

    batch = [tuner.suggest(trial)["x"] for trial in range(10, 14)]

    assert len(set(batch)) == 4


# -- names and class arguments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("TPF", {}, r"tuner\.name: unknown tuner \(got 'TPF'\); did you mean 'TPE'\?"),
        ("SMAC", {}, r"tuner\.name: this NNI tuner is not available in tunelab yet"),
        ("TPE", {"optimise_mode": "maximize"}, r"classArgs\.optimise_mode.*'optimize_mode'"),
        ("TPE", {"optimize_mode": "max"}, r"optimize_mode: must be 'maximize' or 'minimize'"),
        ("Random", {"seed": -1}, r"classArgs\.seed: must be a non-negative integer"),
        ("Random", {"seed": True}, r"classArgs\.seed: must be a non-negative integer"),
        ("TPE", {"tpe_args": {"gama": 0.2}}, r"tpe_args\.gama.*did you mean 'gamma'"),
        ("TPE", {"tpe_args": {"gamma": 2}}, r"gamma must lie in \(0, 1\)"),
        ("TPE", {"tpe_args": {"constant_liar_type": "min"}}, r"constant_liar_type must be"),
        ("GridSearch", {"seed": 1}, r"unknown argument of GridSearch"),
    ],
)
def test_bad_tuner_configs_are_config_errors(name: str, args: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_tuner(name, args)


def test_tuner_names_match_case_insensitively() -> None:
    assert type(create_tuner("gridsearch")).__name__ == "GridSearchTuner"
    assert type(create_tuner("RANDOM")).__name__ == "RandomTuner"
