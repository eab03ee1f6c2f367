"""Property tests: whatever is done to a valid config, the answer is a ConfigError, one line long,
naming a field; never another exception."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunelab.config import ExperimentConfig
from tunelab.errors import ConfigError

BASE: dict[str, Any] = {
    "experimentName": "prop",
    "searchSpaceFile": "space.json",
    "trialCommand": "python3 trial.py",
    "trialCodeDirectory": ".",
    "trialConcurrency": 2,
    "trialGpuNumber": 0,
    "maxTrialNumber": 5,
    "maxExperimentDuration": "1h",
    "maxTrialDuration": 60,
    "logLevel": "info",
    "tuner": {"name": "TPE", "classArgs": {"optimize_mode": "maximize"}},
    "assessor": {"name": "Medianstop"},
    "trainingService": {
        "platform": "remote",
        "machineList": [{"host": "h", "user": "u", "port": 22, "gpuIndices": [0]}],
    },
}

# Where a key may be added (mappings of config fields, not user data), and the required fields.
MAPPINGS: list[tuple[str, ...]] = [
    (),
    ("tuner",),
    ("assessor",),
    ("trainingService",),
    ("trainingService", "machineList", 0),
]
REQUIRED: list[tuple[Any, ...]] = [
    ("trialCommand",),
    ("trialConcurrency",),
    ("tuner",),
    ("searchSpaceFile",),
    ("tuner", "name"),
    ("trainingService", "machineList", 0, "host"),
    ("trainingService", "machineList", 0, "user"),
    ("trainingService", "platform"),
]
# Values that break each field, whatever else is in the config.
BAD: dict[tuple[Any, ...], list[Any]] = {
    ("experimentName",): [3, True, [], {}],
    ("experimentType",): ["nas", "x", 1],
    ("searchSpaceFile",): ["missing.json", 3, "", [], "trial.py"],
    ("trialCommand",): ["", "   ", 3, None, ["a"], True],
    ("trialCodeDirectory",): ["missing", 3, "", "space.json"],
    ("trialConcurrency",): [0, -1, True, False, 1.5, 2.0, "2", None, [2], {}],
    ("trialGpuNumber",): [-1, True, 0.5, "1"],
    ("maxTrialNumber",): [0, -3, True, "5", 5.5],
    ("maxExperimentDuration",): ["10x", "-5m", 0, -1, True, "", [1], "nan", float("inf")],
    ("maxTrialDuration",): ["1y", "0s", False, {}],
    ("logLevel",): ["loud", 3, ""],
    ("debug",): ["yes", 1, None],
    ("useAnnotation",): [True, "no"],
    ("tunerGpuIndices",): [[0, 0], [-1], "a", True, 1.5],
    ("tuner",): ["TPE", 3, [], None, {}],
    ("tuner", "name"): [3, "", None, ["TPE"]],
    ("tuner", "classArgs"): [[1], "x", 3, {1: 2}, {"x": float("nan")}],
    ("assessor", "name"): [3, ""],
    ("trainingService",): ["remote", 3, [], [3], {}],
    ("trainingService", "platform"): ["openpai", "kubeflow", "remot", 3, None, ""],
    ("trainingService", "machineList"): [[], {}, "h", None, [None], [3]],
    ("trainingService", "machineList", 0): ["h", 3, None, []],
    ("trainingService", "machineList", 0, "port"): [0, 65536, -1, "22", True, 22.5],
    ("trainingService", "machineList", 0, "host"): [3, "", None],
    ("trainingService", "machineList", 0, "password"): [123, True, []],
    ("trainingService", "machineList", 0, "sshKeyFile"): ["missing_key", 3],
    ("trainingService", "machineList", 0, "gpuIndices"): [[1, 1], "x", [True]],
    ("trainingService", "machineList", 0, "useActiveGpu"): ["no", 1],
    ("trainingService", "machineList", 0, "maxTrialNumberPerGpu"): [0, 2, "1"],
    ("sharedStorage",): [{"storageType": "NFS"}, "x"],
}

KEY_TEXT = st.text(min_size=0, max_size=12)
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prop")
    (path / "space.json").write_text(json.dumps({"x": {"_type": "choice", "_value": [1]}}))
    (path / "trial.py").write_text("")
    return path


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _delete(data: Any, path: tuple[Any, ...]) -> None:
    for key in path[:-1]:
        data = data[key]
    del data[path[-1]]


@st.composite
def mutation(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], Any]:
    kind = draw(st.sampled_from(["unknown", "bad", "delete"]))
    if kind == "unknown":
        return kind, draw(st.sampled_from(MAPPINGS)), "unknown_" + draw(KEY_TEXT)
    if kind == "delete":
        return kind, draw(st.sampled_from(REQUIRED)), None
    path = draw(st.sampled_from(sorted(BAD, key=str)))
    return kind, path, draw(st.sampled_from(BAD[path]))


def _apply(data: dict[str, Any], change: tuple[str, tuple[Any, ...], Any]) -> None:
    kind, path, value = change
    try:
        if kind == "unknown":
            _set(data, (*path, value), 1)
        elif kind == "delete":
            _delete(data, path)
        else:
            _set(data, path, value)
    except (KeyError, IndexError, TypeError):
        pass  # an earlier change removed or replaced the parent: that one breaks the config


def _check(error: ConfigError) -> None:
    message = str(error)
    assert "\n" not in message and "\r" not in message
    assert error.issues
    for issue in error.issues:
        assert issue.where, issue
    assert any(issue.where in message for issue in error.issues)
    assert "pydantic" not in message.lower() and "Traceback" not in message
    assert "123" not in message or "password" not in message


def test_base_config_is_valid(folder: Path) -> None:
    ExperimentConfig.from_dict(BASE, base_dir=folder).validate()


@settings(
    max_examples=int(os.environ.get("CONFIG_PROPERTY_EXAMPLES", 300)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(changes=st.lists(mutation(), min_size=1, max_size=3))
def test_broken_configs_give_a_config_error(
    folder: Path, changes: list[tuple[str, tuple[Any, ...], Any]]
) -> None:
    data = copy.deepcopy(BASE)
    for change in changes:
        _apply(data, change)

    with pytest.raises(ConfigError) as caught:
        config = ExperimentConfig.from_dict(data, base_dir=folder)
        config.validate()

    _check(caught.value)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@settings(
    max_examples=int(os.environ.get("CONFIG_PROPERTY_EXAMPLES", 300)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_value_anywhere_is_accepted_or_a_config_error(
    folder: Path, data: st.DataObject
) -> None:
    config_data = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(config_data)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        with contextlib.suppress(KeyError, IndexError, TypeError):
            _set(config_data, path, data.draw(ANY_VALUE))

    try:
        config = ExperimentConfig.from_dict(config_data, base_dir=folder)
        canonical = config.to_json(include_secrets=True)
    except ConfigError as error:
        _check(error)
    else:
        json.dumps(canonical, allow_nan=False)
        assert ExperimentConfig.from_dict(canonical).to_json(include_secrets=True) == canonical


@settings(max_examples=int(os.environ.get("CONFIG_PROPERTY_EXAMPLES", 200)), deadline=None)
@given(tree=st.dictionaries(KEY_TEXT, ANY_VALUE, max_size=6))
def test_random_mappings_never_raise_anything_else(folder: Path, tree: dict[str, Any]) -> None:
    try:
        ExperimentConfig.from_dict(tree, base_dir=folder).validate()
    except ConfigError as error:
        _check(error)
