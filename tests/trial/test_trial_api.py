"""The trial API as trial code sees it: real trial processes writing to a real trial folder."""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tunelab
import tunelab.trial
from tunelab.trial import (
    METRICS_FILE,
    PARAMETERS_FILE,
    read_metrics,
    read_parameters,
    trial_env,
    write_parameters,
)

RunScript = Callable[..., subprocess.CompletedProcess[str]]
EnvFor = Callable[..., dict[str, str]]


def _lines(trial_dir: Path) -> list[dict[str, Any]]:
    text = (trial_dir / METRICS_FILE).read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# -- names and protocol helpers ---------------------------------------------------------------


def test_public_names_do_not_drift() -> None:
    assert sorted(tunelab.trial.__all__) == sorted(
        [
            "ENV_EXPERIMENT_ID",
            "ENV_PLATFORM",
            "ENV_SEQUENCE_ID",
            "ENV_TRIAL_DIR",
            "ENV_TRIAL_ID",
            "METRICS_FILE",
            "NNI_ENV_CODE_DIR",
            "NNI_ENV_EXPERIMENT_ID",
            "NNI_ENV_OUTPUT_DIR",
            "NNI_ENV_PLATFORM",
            "NNI_ENV_SEQUENCE_ID",
            "NNI_ENV_SYS_DIR",
            "NNI_ENV_TRIAL_ID",
            "PARAMETERS_FILE",
            "MetricRecord",
            "ParameterRecord",
            "get_current_parameter",
            "get_experiment_id",
            "get_next_parameter",
            "get_next_parameters",
            "get_sequence_id",
            "get_trial_id",
            "read_metrics",
            "read_parameters",
            "report_final_result",
            "report_intermediate_result",
            "trial_env",
            "write_parameters",
        ]
    )
    for name in tunelab.trial.__all__:
        assert hasattr(tunelab.trial, name)
    for name in tunelab.__all__:
        if name != "__version__":
            assert getattr(tunelab, name) is getattr(tunelab.trial, name)
    assert PARAMETERS_FILE == "parameters.json"
    assert METRICS_FILE == "metrics.jsonl"


def test_trial_env_sets_tunelab_and_nni_names(tmp_path: Path) -> None:
    env = trial_env(
        experiment_id="e1",
        trial_id="t1",
        sequence_id=4,
        trial_dir=tmp_path,
        platform="remote",
        code_dir="/code",
    )

    assert env == {
        "TUNELAB_PLATFORM": "remote",
        "TUNELAB_EXPERIMENT_ID": "e1",
        "TUNELAB_TRIAL_ID": "t1",
        "TUNELAB_SEQUENCE_ID": "4",
        "TUNELAB_TRIAL_DIR": str(tmp_path),
        "NNI_PLATFORM": "remote",
        "NNI_EXP_ID": "e1",
        "NNI_TRIAL_JOB_ID": "t1",
        "NNI_TRIAL_SEQ_ID": "4",
        "NNI_SYS_DIR": str(tmp_path),
        "NNI_OUTPUT_DIR": str(tmp_path),
        "NNI_CODE_DIR": "/code",
    }


def test_write_parameters_writes_the_record_atomically(tmp_path: Path) -> None:
    params = {"lr": 0.1, "model": {"_name": "cnn", "channels": 32}}

    write_parameters(tmp_path, params, parameter_id=12, parameter_source="customized")

    assert json.loads((tmp_path / PARAMETERS_FILE).read_text()) == {
        "parameter_id": 12,
        "parameter_source": "customized",
        "parameters": params,
    }
    assert read_parameters(tmp_path)["parameters"] == params
    assert sorted(p.name for p in tmp_path.iterdir()) == [PARAMETERS_FILE]


# -- parameters --------------------------------------------------------------------------------

PRINT_PARAMETERS = """
import json, tunelab
params = tunelab.get_next_parameter()
same = tunelab.get_next_parameters() is params
print(json.dumps({
    "params": params,
    "same": same,
    "lr": tunelab.get_current_parameter("lr"),
    "ids": [tunelab.get_experiment_id(), tunelab.get_trial_id(), tunelab.get_sequence_id()],
}))
"""


def test_parameters_come_from_the_parameters_file(
    trial_dir: Path, run_script: RunScript, env_for: EnvFor
) -> None:
    params = {"lr": 0.5, "opt": {"_name": "sgd", "momentum": 0.9}, "act": "relu", "n": 4}
    write_parameters(trial_dir, params, parameter_id=3)

    done = run_script(PRINT_PARAMETERS, env_for(trial_dir, sequence_id=3))

    out = json.loads(done.stdout)
    assert out == {"params": params, "same": True, "lr": 0.5, "ids": ["exp01", "Ab3xZ", 3]}
    assert done.stderr == ""


def test_nni_variable_names_are_a_fallback(
    trial_dir: Path, run_script: RunScript, env_for: EnvFor
) -> None:
    env = {key: value for key, value in env_for(trial_dir).items() if key.startswith("NNI_")}

    done = run_script(PRINT_PARAMETERS, env)

    out = json.loads(done.stdout)
    assert out["params"] == {"lr": 0.01, "layers": 3}
    assert out["ids"] == ["exp01", "Ab3xZ", 7]


def test_missing_parameters_file_is_a_clear_error(managed: Path) -> None:
    (managed / PARAMETERS_FILE).unlink()

    with pytest.raises(RuntimeError, match=r"parameters file .*parameters\.json does not exist"):
        tunelab.get_next_parameter()


def test_current_parameter_before_and_after(managed: Path) -> None:
    assert tunelab.get_current_parameter() is None

    params = tunelab.get_next_parameter()

    assert tunelab.get_current_parameter() is params
    assert tunelab.get_current_parameter("layers") == 3
    with pytest.raises(KeyError, match=r"no parameter named 'depth'; the parameters are"):
        tunelab.get_current_parameter("depth")


# -- metrics file ------------------------------------------------------------------------------


def test_metric_lines_are_exactly_as_specified(
    trial_dir: Path, run_script: RunScript, env_for: EnvFor
) -> None:
    script = """
    import tunelab
    tunelab.get_next_parameter()
    tunelab.report_intermediate_result(0.25)
    tunelab.report_intermediate_result(3)
    tunelab.report_final_result(0.75)
    """
    before = time.time()

    run_script(script, env_for(trial_dir))

    lines = _lines(trial_dir)
    assert [list(line) for line in lines] == [["seq", "type", "value", "time"]] * 3
    assert [(x["seq"], x["type"], x["value"]) for x in lines] == [
        (0, "INTERMEDIATE", 0.25),
        (1, "INTERMEDIATE", 3),
        (2, "FINAL", 0.75),
    ]
    assert isinstance(lines[1]["value"], int)
    assert all(before <= x["time"] <= time.time() for x in lines)
    records, offset = read_metrics(trial_dir / METRICS_FILE)
    assert records == lines
    assert offset == (trial_dir / METRICS_FILE).stat().st_size


def test_report_before_get_next_parameter_is_recorded(managed: Path) -> None:
    tunelab.report_intermediate_result(1.5)

    assert _lines(managed)[0]["value"] == 1.5


def test_seq_continues_after_an_earlier_attempt(
    trial_dir: Path, run_script: RunScript, env_for: EnvFor
) -> None:
    script = """
    import tunelab
    tunelab.report_intermediate_result(1.0)
    tunelab.report_final_result(2.0)
    """

    run_script(script, env_for(trial_dir))
    run_script(script, env_for(trial_dir))

    assert [x["seq"] for x in _lines(trial_dir)] == [0, 1, 2, 3]


def test_a_half_written_line_from_a_crash_stays_apart(managed: Path) -> None:
    path = managed / METRICS_FILE
    path.write_bytes(
        b'{"seq": 0, "type": "INTERMEDIATE", "value": 1, "time": 1.0}\n{"seq": 1, "ty'
    )

    tunelab.report_final_result(0.5)

    records, _ = read_metrics(path)
    assert [(x["seq"], x["type"], x["value"]) for x in records] == [
        (0, "INTERMEDIATE", 1),
        (2, "FINAL", 0.5),
    ]


def test_concurrent_processes_never_interleave(
    trial_dir: Path, run_script: RunScript, env_for: EnvFor
) -> None:
    # Two writers (a parent and a forked child, then a second process) report long lines at
    # the same time; every line must stay whole and the seq numbers must stay the line index.
    script = """
    import os, sys, tunelab
    payload = "x" * 3000
    tunelab.report_intermediate_result(0.0)
    pid = os.fork()
    who = "child" if pid == 0 else "parent"
    for i in range(300):
        tunelab.report_intermediate_result({"default": float(i), "who": who, "pad": payload})
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    """

    run_script(script, env_for(trial_dir))

    lines = _lines(trial_dir)
    assert len(lines) == 601
    assert [x["seq"] for x in lines] == list(range(601))
    for who in ("parent", "child"):
        mine = [x["value"]["default"] for x in lines if x["seq"] and x["value"]["who"] == who]
        assert mine == [float(i) for i in range(300)]


def test_two_separate_processes_never_interleave(
    trial_dir: Path, run_script: RunScript, env_for: EnvFor
) -> None:
    script = """
    import subprocess, sys, tunelab
    child = [sys.executable, "-c", '''
    import tunelab
    for i in range(300):
        tunelab.report_intermediate_result({"default": i, "pad": "y" * 5000})
    ''']
    procs = [subprocess.Popen(child) for _ in range(2)]
    assert [p.wait() for p in procs] == [0, 0]
    """

    run_script(script, env_for(trial_dir))

    lines = _lines(trial_dir)
    assert [x["seq"] for x in lines] == list(range(600))
    assert sorted(x["value"]["default"] for x in lines) == sorted(list(range(300)) * 2)


def test_nan_and_infinity_are_written_and_read_back(
    trial_dir: Path, run_script: RunScript, env_for: EnvFor
) -> None:
    # B14 / B16: finals -inf, nan and a normal value, each recorded.
    script = """
    import math, tunelab
    tunelab.report_intermediate_result(float("nan"))
    tunelab.report_intermediate_result(math.inf)
    tunelab.report_final_result({"default": -math.inf, "loss": float("nan")})
    """

    run_script(script, env_for(trial_dir))

    text = (trial_dir / METRICS_FILE).read_text()
    assert '"value": NaN' in text
    assert '"value": Infinity' in text
    assert '{"default": -Infinity, "loss": NaN}' in text
    records, _ = read_metrics(trial_dir / METRICS_FILE)
    assert math.isnan(records[0]["value"])
    assert records[1]["value"] == math.inf
    assert records[2]["value"]["default"] == -math.inf
    assert math.isnan(records[2]["value"]["loss"])


def test_b12_dict_metric_keeps_extra_keys(managed: Path) -> None:
    tunelab.report_final_result({"default": 0.83, "loss": 0.41})

    assert _lines(managed)[0]["value"] == {"default": 0.83, "loss": 0.41}


def test_dict_metric_extras_become_plain_json(managed: Path) -> None:
    metric = {
        "default": np.float32(0.5),
        "epoch": np.int64(3),
        "per_class": [np.float64(0.25), 1, True],
        "nested": {"name": "cnn", "ok": np.bool_(True), "none": None, "t": (1, 2)},
        "zero_d": np.array(0.125),
    }

    tunelab.report_final_result(metric)

    assert _lines(managed)[0]["value"] == {
        "default": 0.5,
        "epoch": 3,
        "per_class": [0.25, 1, True],
        "nested": {"name": "cnn", "ok": True, "none": None, "t": [1, 2]},
        "zero_d": 0.125,
    }


class _ZeroDimTensor:
    """Behaves like a 0-d torch tensor: not a number itself, but ``item()`` gives one."""

    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("metric", "written"),
    [
        (np.float32(0.5), 0.5),
        (np.float64(0.125), 0.125),
        (np.int64(42), 42),
        (np.array(0.75), 0.75),
        (_ZeroDimTensor(0.5), 0.5),
        ({"default": _ZeroDimTensor(2.0)}, {"default": 2.0}),
    ],
)
def test_numpy_scalars_and_item_objects_are_numbers(
    managed: Path, metric: object, written: object
) -> None:
    tunelab.report_intermediate_result(metric)

    line = _lines(managed)[0]
    assert line["value"] == written
    assert type(line["value"]) is type(written)


RULE = r"the metric must be a number or a dict with a numeric 'default' key"


@pytest.mark.parametrize(
    ("metric", "error", "message"),
    [
        (
            "nan",
            TypeError,
            r"^report_final_result: the metric must be a number or a dict with a numeric "
            r"'default' key \(got 'nan', a str\); report float\('nan'\) for a diverged result$",
        ),
        ("", TypeError, rf"{RULE} \(got '', a str\); report float\('nan'\) for a diverged"),
        ("0.9", TypeError, rf"{RULE} \(got '0.9', a str\); convert it with float\(\)"),
        (None, TypeError, rf"{RULE} \(got None\); report float\('nan'\)"),
        (True, TypeError, rf"{RULE} \(got True, a bool\); a bool is not a metric"),
        (np.bool_(False), TypeError, rf"{RULE} \(got np.False_, a bool_?\); a bool is not"),
        ([0.1, 0.2], TypeError, rf"{RULE} \(got \[0.1, 0.2\], a list\); convert it with"),
        (
            {"loss": 0.4},
            ValueError,
            rf"{RULE} \(got a dict without 'default', keys \['loss'\]\); add 'default'",
        ),
        ({"default": "0.8"}, TypeError, rf"{RULE} \(got '0.8', a str as 'default'\)"),
        ({"default": None}, TypeError, rf"{RULE} \(got None as 'default'\)"),
        (
            {"default": 1.0, "model": object()},
            TypeError,
            r"metric\['model'\] cannot be written as JSON \(got <object object",
        ),
        (
            {"default": 1.0, 3: 1.0},
            TypeError,
            r"the keys of a dict metric must be strings \(got 3, a int in metric\)",
        ),
    ],
)
def test_bad_metrics_raise_at_the_call(
    managed: Path, metric: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        tunelab.report_final_result(metric)

    assert not (managed / METRICS_FILE).exists()


def test_intermediate_errors_name_their_function(managed: Path) -> None:
    with pytest.raises(TypeError, match=r"^report_intermediate_result: the metric must be"):
        tunelab.report_intermediate_result("nan")


def test_b17_intermediates_without_final(
    trial_dir: Path, run_script: RunScript, env_for: EnvFor
) -> None:
    script = """
    import tunelab
    for value in (0.31, 0.47, 0.52):
        tunelab.report_intermediate_result(value)
    """

    run_script(script, env_for(trial_dir))

    assert [(x["type"], x["value"]) for x in _lines(trial_dir)] == [
        ("INTERMEDIATE", 0.31),
        ("INTERMEDIATE", 0.47),
        ("INTERMEDIATE", 0.52),
    ]


def test_several_final_results_are_all_written_with_one_warning(
    trial_dir: Path, run_script: RunScript, env_for: EnvFor
) -> None:
    script = """
    import tunelab
    for value in (0.1, 0.2, 0.3):
        tunelab.report_final_result(value)
    """

    done = run_script(script, env_for(trial_dir))

    assert [(x["type"], x["value"]) for x in _lines(trial_dir)] == [
        ("FINAL", 0.1),
        ("FINAL", 0.2),
        ("FINAL", 0.3),
    ]
    assert done.stderr.count("report_final_result was called more than once") == 1


# -- standalone --------------------------------------------------------------------------------

STANDALONE_SCRIPT = """
import logging, tunelab
logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
params = tunelab.get_next_parameter()
assert params == {} and tunelab.get_next_parameter() is params
assert tunelab.get_experiment_id() == "STANDALONE"
assert tunelab.get_trial_id() == "STANDALONE"
assert tunelab.get_sequence_id() == 0
tunelab.report_intermediate_result(0.5)
tunelab.report_final_result({"default": float("nan"), "loss": 1.0})
print("reached the end")
"""


@pytest.mark.parametrize(
    "env", [{}, {"NNI_PLATFORM": "unittest"}, {"NNI_EXP_ID": "x", "NNI_TRIAL_SEQ_ID": "5"}]
)
def test_standalone_runs_to_the_end(
    tmp_path: Path, run_script: RunScript, env: dict[str, str]
) -> None:
    done = run_script(STANDALONE_SCRIPT, env)

    assert done.stdout == "reached the end\n"
    assert done.stderr.count("running standalone") == 1
    assert "tunelab.trial INFO Intermediate result (standalone, not recorded): 0.5" in done.stderr
    assert "Final result (standalone, not recorded): {'default': nan" in done.stderr
    assert not list(tmp_path.rglob(METRICS_FILE))


def test_standalone_still_checks_metrics(fresh_state: None) -> None:
    with pytest.raises(TypeError, match=r"^report_final_result: the metric must be"):
        tunelab.report_final_result("")


def test_nni_platform_without_a_folder_is_a_clear_error(
    fresh_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NNI_PLATFORM", "local")

    with pytest.raises(RuntimeError, match=r"NNI_PLATFORM is set to 'local' but no trial folder"):
        tunelab.get_next_parameter()


def test_an_int_beyond_every_float_is_reported_as_infinite() -> None:
    from tunelab.trial._metric import normalize_metric

    assert normalize_metric(10**400, "report_final_result") == float("inf")
    assert normalize_metric(-(10**400), "report_final_result") == float("-inf")
    assert normalize_metric({"default": 10**400, "n": 3}, "report_final_result") == {
        "default": float("inf"),
        "n": 3,
    }
    assert normalize_metric(10**300, "report_final_result") == 10**300  # a float can hold it
