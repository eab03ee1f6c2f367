"""Each example's trial script runs to the end on its own, and under a simulated experiment.

Standalone (no experiment variables), a trial must fall back to its defaults, as a person
running it by hand would see. Managed, the test plays the training service's part: it writes
``parameters.json`` with values from the example's own search space, sets the variables a
trial gets, and reads the metrics the trial wrote, so a search space whose names or types do
not fit its trial fails here rather than 30 trials into an experiment.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from examples_support import EXAMPLES, has_torch, nni_shim_path, standalone_env

import tunelab.trial

ACCURACY = re.compile(r"accuracy[= ](\d\.\d+)", re.IGNORECASE)

needs_torch = pytest.mark.skipif(
    not has_torch(),
    reason="torch is not installed: pip install torch==2.13.0 && pip install -e '.[torch]'",
)


def run_trial(
    example: str, env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    folder = EXAMPLES / example
    done = subprocess.run(
        [sys.executable, "trial.py", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{example}/trial.py failed:\n{done.stdout}\n{done.stderr}"
    return done


def printed_accuracy(done: subprocess.CompletedProcess[str]) -> float:
    found = ACCURACY.findall(done.stdout + done.stderr)
    assert found, f"no accuracy in the output:\n{done.stdout}\n{done.stderr}"
    return float(found[-1])


def sample_point(space_file: Path, pick: int) -> dict[str, Any]:
    """One point of a search space; ``pick`` moves it between the low and the high end."""
    space = json.loads(space_file.read_text(encoding="utf-8"))
    point: dict[str, Any] = {}
    for name, spec in space.items():
        kind, values = spec["_type"], spec["_value"]
        low_end = pick % 2 == 0
        if kind == "choice":
            point[name] = values[pick % len(values)]
        elif kind == "randint":
            point[name] = values[0] if low_end else values[1] - 1
        elif kind == "uniform":
            point[name] = values[0] + (values[1] - values[0]) * (0.25 if low_end else 0.75)
        elif kind == "loguniform":
            low, high = math.log(values[0]), math.log(values[1])
            point[name] = math.exp(low + (high - low) * (0.5 if low_end else 0.7))
        else:
            raise AssertionError(f"{space_file}: sample_point does not know {kind!r} yet")
    return point


def run_managed(
    example: str, tmp_path: Path, pick: int, env: dict[str, str], *args: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a trial as a training service would; returns its parameters and metric records."""
    folder = EXAMPLES / example
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    params = sample_point(folder / "search_space.json", pick)
    tunelab.trial.write_parameters(trial_dir, params, parameter_id=pick)
    env = dict(env)
    env.update(
        tunelab.trial.trial_env(
            experiment_id="EXAMPLES",
            trial_id=f"t{pick}",
            sequence_id=pick,
            trial_dir=trial_dir,
            code_dir=folder,
        )
    )

    run_trial(example, env, *args)

    records, _ = tunelab.trial.read_metrics(trial_dir / tunelab.trial.METRICS_FILE)
    return params, [dict(record) for record in records]


def check_metrics(records: list[dict[str, Any]], intermediates: int) -> float:
    kinds = [record["type"] for record in records]
    assert kinds == ["INTERMEDIATE"] * intermediates + ["FINAL"], kinds
    final = records[-1]["value"]
    assert isinstance(final, float)
    assert 0.0 <= final <= 1.0
    return final


# -- digits-sklearn ---------------------------------------------------------------------------


def test_digits_sklearn_standalone() -> None:
    done = run_trial("digits-sklearn", standalone_env())

    assert printed_accuracy(done) > 0.97


@pytest.mark.parametrize("pick", [0, 1, 2])
def test_digits_sklearn_managed(tmp_path: Path, pick: int) -> None:
    _, records = run_managed("digits-sklearn", tmp_path, pick, standalone_env())

    check_metrics(records, intermediates=3)


# -- nni-trial-unchanged ----------------------------------------------------------------------


def nni_env() -> dict[str, str]:
    return standalone_env(PYTHONPATH=nni_shim_path())


def test_nni_trial_standalone() -> None:
    done = run_trial("nni-trial-unchanged", nni_env())

    assert printed_accuracy(done) > 0.9


def test_nni_trial_standalone_takes_arguments() -> None:
    done = run_trial("nni-trial-unchanged", nni_env(), "--n_estimators", "8", "--max_depth", "4")

    assert "'n_estimators': 8" in done.stderr
    assert printed_accuracy(done) > 0.5


@pytest.mark.parametrize("pick", [0, 1])
def test_nni_trial_managed(tmp_path: Path, pick: int) -> None:
    params, records = run_managed("nni-trial-unchanged", tmp_path, pick, nni_env())

    final = check_metrics(records, intermediates=4)
    assert final > 0.5, params


def test_nni_trial_uses_only_nni() -> None:
    source = (EXAMPLES / "nni-trial-unchanged" / "trial.py").read_text(encoding="utf-8")

    imports = [line for line in source.splitlines() if re.match(r"\s*(import|from) ", line)]

    assert "import nni" in imports
    assert not [line for line in imports if "tunelab" in line], imports


# -- digits-torch -----------------------------------------------------------------------------


@pytest.mark.slow
@needs_torch
def test_digits_torch_standalone() -> None:
    done = run_trial("digits-torch", standalone_env(DIGITS_EPOCHS="2"))

    assert "epochs=2" in done.stdout
    assert printed_accuracy(done) > 0.5


@pytest.mark.slow
@needs_torch
def test_digits_torch_managed(tmp_path: Path) -> None:
    _, records = run_managed("digits-torch", tmp_path, 1, standalone_env(), "--epochs", "2")

    check_metrics(records, intermediates=2)
