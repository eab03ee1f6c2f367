"""Search-space semantics: the rules a space must follow, and what sampling gives.

Expected values follow NNI's semantics (reference/nni_inventory.md section 2) and the field
cases B01, B03, B04, B06 and B07.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from tunelab.errors import SearchSpaceError
from tunelab.space import SearchSpace, quantize


def draws(space: dict, count: int = 400, seed: int = 0) -> list[dict]:
    built = SearchSpace.from_json(space)
    rng = np.random.default_rng(seed)
    return [built.to_parameters(built.sample(rng)) for _ in range(count)]


# -- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"l1": {"_type": "loguniform", "_value": [-2, 5]}}, r"l1: loguniform needs 0 < low"),
        ({"l1": {"_type": "loguniform", "_value": [0, 5]}}, r"l1: loguniform needs 0 < low"),
        ({"l": {"_type": "qloguniform", "_value": [0, 5, 1]}}, r"l: qloguniform needs 0 < low"),
        ({"lr": {"_type": "uniform", "_value": [0.05, 0.001]}}, r"lr: uniform needs low < high"),
        ({"lr": {"_type": "uniform", "_value": [1, 1]}}, r"lr: uniform needs low < high"),
        ({"n": {"_type": "randint", "_value": [1, 4, 2]}}, r"n: randint takes 2 values"),
        ({"m": {"_type": "randint", "_value": [0.5, 3.5]}}, r"m: randint bounds must be integers"),
        ({"m": {"_type": "randint", "_value": [4, 4]}}, r"m: randint needs low < high"),
        ({"q": {"_type": "quniform", "_value": [0, 1]}}, r"q: quniform takes 3 values"),
        ({"q": {"_type": "quniform", "_value": [0, 1, 0]}}, r"q: quniform needs q > 0"),
        ({"s": {"_type": "normal", "_value": [0, 0]}}, r"s: normal needs sigma > 0"),
        ({"s": {"_type": "qlognormal", "_value": [0, -1, 1]}}, r"s: qlognormal needs sigma"),
        ({"b": {"_type": "uniform", "_value": [True, 2]}}, r"b: uniform values .* finite"),
        ({"b": {"_type": "uniform", "_value": [0, float("inf")]}}, r"must be finite numbers"),
        ({"b": {"_type": "uniform", "_value": [0, "1"]}}, r"must be finite numbers"),
        ({"t": {"_type": "unifrom", "_value": [0, 1]}}, r"t: unknown _type .*'uniform'"),
        ({"t": {"_type": "uniform", "_values": [0, 1]}}, r"did you mean '_value'"),
        ({"t": {"_value": [0, 1]}}, r"t: missing _type"),
        ({"t": [0, 1]}, r"t: must be \{'_type'"),
        ({"c": {"_type": "choice", "_value": []}}, r"c: choice needs at least one option"),
        ({"c": {"_type": "choice", "_value": ["a", "a"]}}, r"choice options must be distinct"),
        ({"c": {"_type": "choice", "_value": "ab"}}, r"c: choice needs a list"),
        ([1, 2], r"searchSpace: must be a JSON object"),
    ],
)
def test_bad_parameters_are_refused_with_their_rule(space: object, message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        SearchSpace.from_json(space)


def test_b07_nested_option_without_name_is_refused() -> None:
    space = {
        "opt": {
            "_type": "choice",
            "_value": [
                {"_name": "sgd", "momentum": {"_type": "uniform", "_value": [0.5, 0.99]}},
                {"beta1": {"_type": "uniform", "_value": [0.8, 0.95]}},
            ],
        }
    }
    with pytest.raises(SearchSpaceError, match=r"opt\._value\[1\]: .*needs a string '_name'"):
        SearchSpace.from_json(space)


def test_every_bad_parameter_is_named_once() -> None:
    space = {
        "lr": {"_type": "uniform", "_value": [0.05, 0.001]},
        "n": {"_type": "randint", "_value": [1, 4, 2]},
        "ok": {"_type": "uniform", "_value": [0, 1]},
        "nested": {
            "_type": "choice",
            "_value": [{"_name": "a", "x": {"_type": "loguniform", "_value": [0, 1]}}],
        },
    }
    with pytest.raises(SearchSpaceError) as caught:
        SearchSpace.from_json(space)
    assert [issue.where for issue in caught.value.issues] == ["lr", "n", "nested[a].x"]
    assert "\n" not in str(caught.value)


def test_empty_space_has_one_point() -> None:
    space = SearchSpace.from_json({})
    assert space.size == 1
    assert space.to_parameters(space.point_at(0)) == {}


# -- sampling semantics -----------------------------------------------------------------------


def test_b01_quniform_values_clipped_on_grid_and_all_reachable() -> None:
    widths = {p["w"] for p in draws({"w": {"_type": "quniform", "_value": [3, 17, 7]}}, 60)}
    drops = {
        round(p["d"], 9)
        for p in draws({"d": {"_type": "quniform", "_value": [0.15, 0.95, 0.4]}}, 60)
    }
    assert widths == {3.0, 7.0, 14.0}
    assert drops == {0.15, 0.4, 0.8}


def test_randint_excludes_upper_bound_and_gives_ints() -> None:
    values = [p["n"] for p in draws({"n": {"_type": "randint", "_value": [150, 153]}}, 300)]
    assert set(values) == {150, 151, 152}
    assert all(type(v) is int for v in values)


def test_q_types_give_floats_even_with_integer_q() -> None:
    values = [p["x"] for p in draws({"x": {"_type": "quniform", "_value": [0, 10, 1]}}, 50)]
    assert all(type(v) is float and v.is_integer() for v in values)


def test_quniform_uses_round_half_to_even() -> None:
    # 2.5 / 1 rounds to 2 with Python's round (NNI's), not to 3.
    assert quantize(2.5, 1) == 2
    assert quantize(3.5, 1) == 4
    assert quantize(0.6000000000000001, 0.2) == 0.6


def test_loguniform_is_uniform_in_log_space() -> None:
    values = np.array(
        [p["x"] for p in draws({"x": {"_type": "loguniform", "_value": [1e-4, 1]}}, 4000)]
    )
    logs = np.log10(values)
    assert values.min() >= 1e-4 and values.max() <= 1
    # A quarter of the log range holds about a quarter of the draws.
    assert 0.2 < np.mean(logs < -3) < 0.3


def test_normal_family_is_unbounded_and_qnormal_not_clipped() -> None:
    values = [p["x"] for p in draws({"x": {"_type": "qnormal", "_value": [0, 10, 5]}}, 400)]
    assert all(v % 5 == 0 for v in values)
    assert min(values) < -10 and max(values) > 10
    lognormal = [p["x"] for p in draws({"x": {"_type": "lognormal", "_value": [0, 1]}}, 200)]
    assert all(v > 0 for v in lognormal)


def test_nested_choice_gives_name_and_only_the_chosen_sub_space() -> None:
    space = {
        "opt": {
            "_type": "choice",
            "_value": [
                {"_name": "sgd", "momentum": {"_type": "uniform", "_value": [0.5, 0.99]}},
                {"_name": "adam", "beta1": {"_type": "uniform", "_value": [0.8, 0.95]}},
                "plain",
            ],
        }
    }
    seen = {}
    for params in draws(space, 200):
        opt = params["opt"]
        key = opt["_name"] if isinstance(opt, dict) else opt
        seen[key] = opt
    assert set(seen) == {"sgd", "adam", "plain"}
    assert set(seen["sgd"]) == {"_name", "momentum"}
    assert 0.5 <= seen["sgd"]["momentum"] <= 0.99
    assert set(seen["adam"]) == {"_name", "beta1"}


# -- finite spaces ----------------------------------------------------------------------------


def test_finite_space_size_and_index_order_cover_every_point_once() -> None:
    space = SearchSpace.from_json(
        {
            "w": {"_type": "quniform", "_value": [3, 17, 7]},
            "n": {"_type": "randint", "_value": [0, 2]},
            "opt": {
                "_type": "choice",
                "_value": [{"_name": "a", "k": {"_type": "choice", "_value": [1, 2, 3]}}, "b"],
            },
        }
    )
    assert space.size == 3 * 2 * (3 + 1)
    points = list(space.points())
    rendered = {repr(space.to_parameters(p)) for p in points}
    assert len(rendered) == space.size
    assert [space.index_of(p) for p in points] == list(range(space.size))


def test_continuous_space_is_infinite() -> None:
    space = SearchSpace.from_json(
        {"c": {"_type": "choice", "_value": [1, 2]}, "x": {"_type": "uniform", "_value": [0, 1]}}
    )
    assert space.size is None and not space.is_finite


def test_parameters_round_trip_and_foreign_parameters_do_not_fit() -> None:
    space = SearchSpace.from_json(
        {
            "act": {"_type": "choice", "_value": ["relu", "tanh"]},
            "n": {"_type": "randint", "_value": [1, 5]},
            "x": {"_type": "uniform", "_value": [0, 1]},
        }
    )
    for params in draws(space.raw, 20):
        point = space.from_parameters(params)
        assert point is not None and space.to_parameters(point) == params
    assert space.from_parameters({"act": "gelu", "n": 1, "x": 0.5}) is None
    assert space.from_parameters({"act": "relu", "n": 5, "x": 0.5}) is None
    assert space.from_parameters({"act": "relu", "n": 1, "x": 1.5}) is None
    assert space.from_parameters({"act": "relu", "n": 1}) is None
    assert space.from_parameters({"act": "relu", "n": True, "x": 0.5}) is None


# -- property: every drawn value lies in its domain and on its q grid -------------------------

finite = hs.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = hs.floats(min_value=1e-6, max_value=1e6)
steps = hs.floats(min_value=1e-3, max_value=1e3)


@hs.composite
def bounded(draw: hs.DrawFn, positive_low: bool = False) -> tuple[float, float]:
    low = draw(positive if positive_low else finite)
    width = draw(hs.floats(min_value=1e-3, max_value=1e6))
    return low, low + width


@hs.composite
def parameters(draw: hs.DrawFn) -> dict:
    kind = draw(
        hs.sampled_from(
            [
                "choice",
                "randint",
                "uniform",
                "quniform",
                "loguniform",
                "qloguniform",
                "normal",
                "qnormal",
                "lognormal",
                "qlognormal",
            ]
        )
    )
    if kind == "choice":
        options = draw(
            hs.lists(hs.integers() | hs.text(max_size=3), min_size=1, max_size=5, unique_by=repr)
        )
        return {"_type": kind, "_value": options}
    if kind == "randint":
        low = draw(hs.integers(-1000, 1000))
        return {"_type": kind, "_value": [low, low + draw(hs.integers(1, 1000))]}
    if kind in ("uniform", "quniform", "loguniform", "qloguniform"):
        low, high = draw(bounded(positive_low=kind.endswith("loguniform")))
        values = [low, high]
    else:
        values = [draw(hs.floats(-5, 5)), draw(hs.floats(0.01, 3))]
    if kind.startswith("q"):
        values.append(draw(steps))
    return {"_type": kind, "_value": values}


def on_grid(value: float, q: float) -> bool:
    steps_taken = value / q
    return math.isclose(steps_taken, round(steps_taken), rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=300, deadline=None)
@given(spec=parameters(), seed=hs.integers(0, 2**32 - 1))
def test_every_drawn_value_lies_in_its_domain_and_on_its_grid(spec: dict, seed: int) -> None:
    space = SearchSpace.from_json({"p": spec})
    rng = np.random.default_rng(seed)
    kind, values = spec["_type"], spec["_value"]
    for _ in range(20):
        point = space.sample(rng)
        value = space.to_parameters(point)["p"]
        assert space.from_parameters({"p": value}) == point
        if kind == "choice":
            assert value in values
            continue
        if kind == "randint":
            assert type(value) is int and values[0] <= value < values[1]
            continue
        assert type(value) is float and math.isfinite(value)
        if kind in ("uniform", "quniform", "loguniform", "qloguniform"):
            assert values[0] <= value <= values[1]
        if kind in ("lognormal",):
            assert value > 0
        if kind.startswith("q"):
            q = values[2]
            clipped = kind in ("quniform", "qloguniform") and value in (values[0], values[1])
            assert clipped or on_grid(value, q), (value, q)
