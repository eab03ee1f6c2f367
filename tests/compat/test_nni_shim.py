"""The ``nni`` shim: unchanged NNI trial code runs on tunelab without NNI installed."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tunelab
from tunelab.compat import nni as shim
from tunelab.compat import nni_path
from tunelab.compat.nni import utils as shim_utils
from tunelab.trial import METRICS_FILE, read_metrics

RunScript = Callable[..., subprocess.CompletedProcess[str]]

# An NNI example in the usual shape (argparse defaults overridden by the tuner), as a user
# would have it: nothing in it knows about tunelab.
NNI_STYLE_TRIAL = """
import argparse
import logging

import nni
from nni.utils import merge_parameter

logger = logging.getLogger("mnist_AutoML")


@nni.trace
class Model:
    def __init__(self, hidden):
        self.hidden = hidden


def get_params():
    parser = argparse.ArgumentParser(description="PyTorch MNIST Example")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=3)
    args, _ = parser.parse_known_args()
    return args


def main(args):
    model = Model(args["hidden"])
    accuracy = 0.0
    for epoch in range(args["epochs"]):
        accuracy = 0.5 + 0.1 * epoch + args["lr"]
        nni.report_intermediate_result(accuracy)
        logger.debug("epoch %d: %s", epoch, accuracy)
    nni.report_final_result({"default": accuracy, "hidden": model.hidden})
    print(nni.get_experiment_id(), nni.get_trial_id(), nni.get_sequence_id(), nni.__file__)
    print(args["batch_size"], type(args["batch_size"]).__name__)


if __name__ == "__main__":
    try:
        tuner_params = nni.get_next_parameter()
        logger.debug(tuner_params)
        params = vars(merge_parameter(get_params(), tuner_params))
        main(params)
    except Exception as exception:
        logger.exception(exception)
        raise
"""


def test_real_nni_is_not_installed() -> None:
    assert importlib.util.find_spec("nni") is None
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("nni")


def test_nni_path_is_the_folder_holding_the_shim() -> None:
    folder = Path(nni_path())

    assert folder.is_absolute()
    assert (folder / "nni" / "__init__.py").is_file()
    assert folder == Path(shim.__file__).parent.parent


def test_nni_style_trial_runs_unchanged(
    run_nni_script: RunScript, trial_dir: Path, trial_vars: dict[str, str]
) -> None:
    done = run_nni_script(NNI_STYLE_TRIAL, trial_vars)

    ids, batch = done.stdout.splitlines()
    assert ids.split()[:3] == ["expNNI", "Qm7Rt", "2"]
    assert ids.split()[3] == str(Path(nni_path()) / "nni" / "__init__.py")
    # quniform gives 32.0; merge_parameter turns it into the argparse default's int.
    assert batch == "32 int"
    records, _ = read_metrics(trial_dir / METRICS_FILE)
    assert [(r["seq"], r["type"]) for r in records] == [
        (0, "INTERMEDIATE"),
        (1, "INTERMEDIATE"),
        (2, "INTERMEDIATE"),
        (3, "FINAL"),
    ]
    assert records[3]["value"] == {"default": pytest.approx(0.75), "hidden": 128}


def test_nni_style_trial_runs_standalone(run_nni_script: RunScript) -> None:
    done = run_nni_script(NNI_STYLE_TRIAL)

    assert done.stdout.splitlines()[0].split()[:3] == ["STANDALONE", "STANDALONE", "0"]
    assert "running standalone" in done.stderr


def test_shim_runs_where_only_the_trial_side_is_shipped(
    run_nni_script: RunScript, tmp_path: Path, trial_dir: Path, trial_vars: dict[str, str]
) -> None:
    # What a remote host gets: tunelab/__init__.py, tunelab/trial/ and the shim, no install and
    # no third-party package (python -S skips site-packages, and with it tunelab's own install).
    source = Path(tunelab.__file__).parent
    shipped = tmp_path / "shipped" / "tunelab"
    shipped.mkdir(parents=True)
    shutil.copy(source / "__init__.py", shipped / "__init__.py")
    shutil.copytree(source / "trial", shipped / "trial", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copytree(source / "compat", shipped / "compat", ignore=shutil.ignore_patterns("*.pyc"))
    script = NNI_STYLE_TRIAL.replace(
        "print(nni.get_experiment_id()", "import tunelab; print(tunelab.__file__)\n    print(0"
    )

    done = run_nni_script(
        script,
        trial_vars,
        python=(sys.executable, "-S"),
        pythonpath=str(shipped / "compat"),
    )

    assert done.stdout.splitlines()[0] == str(shipped / "__init__.py")
    records, _ = read_metrics(trial_dir / METRICS_FILE)
    assert [r["type"] for r in records] == ["INTERMEDIATE"] * 3 + ["FINAL"]


def test_shim_names_do_not_drift() -> None:
    assert sorted(shim.__all__) == sorted(
        [
            "NoMoreTrialError",
            "__version__",
            "get_current_parameter",
            "get_experiment_id",
            "get_next_parameter",
            "get_next_parameters",
            "get_sequence_id",
            "get_trial_id",
            "report_final_result",
            "report_intermediate_result",
            "trace",
            "typehint",
            "utils",
        ]
    )
    for name in shim.__all__:
        assert hasattr(shim, name)
    assert shim.report_final_result is tunelab.report_final_result
    assert issubclass(shim.NoMoreTrialError, Exception)
    assert shim.__version__.startswith("3.")
    trial_module = importlib.import_module("tunelab.compat.nni.trial")
    assert trial_module.get_next_parameter is tunelab.get_next_parameter


@pytest.mark.parametrize(
    ("module", "advice"),
    [
        ("nas", "neural architecture search is not part of tunelab yet"),
        ("retiarii", "neural architecture search is not part of tunelab yet"),
        ("mutable", "neural architecture search is not part of tunelab yet"),
        ("compression", "model compression is not part of tunelab yet"),
        (
            "experiment",
            "tunelab create --config config.yml) or, in a launch script, with "
            "'from tunelab import Experiment'",
        ),
        ("algorithms", "name them in config.yml"),
        ("feature_engineering", "not part of tunelab"),
    ],
)
def test_parts_outside_the_trial_api_say_what_to_use(module: str, advice: str) -> None:
    with pytest.raises(ImportError, match=r"covers the trial API only") as raised:
        importlib.import_module(f"tunelab.compat.nni.{module}")

    assert str(raised.value).startswith(f"nni.{module} is not available: tunelab's nni ")
    assert advice in str(raised.value)


def test_unsupported_submodule_from_a_trial(run_nni_script: RunScript) -> None:
    done = run_nni_script("from nni.nas.pytorch import mutables\n", check=False)

    assert done.returncode == 1
    assert "ImportError: nni.nas is not available: tunelab's nni compatibility" in done.stderr


def test_trace_returns_its_target() -> None:
    class Model:
        pass

    def build() -> int:
        return 1

    assert shim.trace(Model) is Model
    assert shim.trace(build) is build
    assert shim.trace(kw_only=False)(Model) is Model
    assert shim.trace()(build) is build


# -- nni.utils ---------------------------------------------------------------------------------


def _namespace(**values: Any) -> argparse.Namespace:
    return argparse.Namespace(**values)


def test_merge_parameter_into_a_namespace() -> None:
    base = _namespace(lr=0.01, batch_size=64, optimizer="sgd", seed=None, momentum=0.9)

    merged = shim_utils.merge_parameter(
        base, {"lr": 0.1, "batch_size": 32.0, "optimizer": "adam", "seed": 7, "momentum": 1}
    )

    assert merged is base
    assert vars(base) == {
        "lr": 0.1,
        "batch_size": 32,
        "optimizer": "adam",
        "seed": 7,
        "momentum": 1.0,
    }
    assert type(base.batch_size) is int
    assert type(base.momentum) is float


def test_merge_parameter_into_a_dict() -> None:
    base = {"lr": 0.01, "layers": 2}

    assert shim_utils.merge_parameter(base, {"layers": 4}) is base
    assert base == {"lr": 0.01, "layers": 4}
    assert shim_utils.merge_parameter(base, None) is base


@pytest.mark.parametrize("base", [{"lr": 0.01}, _namespace(lr=0.01)])
def test_merge_parameter_rejects_an_unknown_key(base: Any) -> None:
    with pytest.raises(
        ValueError,
        match=r"^merge_parameter: parameter 'dropout' is not in the base parameters "
        r"\(they are \['lr'\]\); add it to the argument parser",
    ):
        shim_utils.merge_parameter(base, {"dropout": 0.5})


@pytest.mark.parametrize(
    ("default", "value", "message"),
    [
        (64, 32.5, r"parameter 'x' must be a int like its default 64 \(got 32.5, a float\)"),
        (64, "32", r"parameter 'x' must be a int like its default 64 \(got '32', a str\)"),
        ("relu", 3, r"parameter 'x' must be a str like its default 'relu' \(got 3, a int\)"),
        (True, 1, r"parameter 'x' must be a bool like its default True \(got 1, a int\)"),
        (1, True, r"parameter 'x' must be a int like its default 1 \(got True, a bool\)"),
    ],
)
def test_merge_parameter_rejects_an_incompatible_type(
    default: object, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        shim_utils.merge_parameter({"x": default}, {"x": value})


def test_extract_scalar_reward() -> None:
    assert shim_utils.extract_scalar_reward(0.5) == 0.5
    assert shim_utils.extract_scalar_reward({"default": 3, "loss": 1.0}) == 3
    assert shim_utils.extract_scalar_reward({"acc": 0.9}, scalar_key="acc") == 0.9
    assert shim_utils.extract_scalar_history([1.0, {"default": 2.0}]) == [1.0, 2.0]
    for bad in ("0.5", None, True, {"loss": 1.0}, {"default": "x"}):
        with pytest.raises(RuntimeError, match=r"^extract_scalar_reward: the metric must be"):
            shim_utils.extract_scalar_reward(bad)


def test_optimize_mode_values() -> None:
    assert shim_utils.OptimizeMode("maximize") is shim_utils.OptimizeMode.Maximize
    assert shim_utils.OptimizeMode.Minimize.value == "minimize"


def test_typehint_names_exist(run_nni_script: RunScript) -> None:
    script = """
    from nni.typehint import Parameters, TrialMetric
    import json, nni
    print(json.dumps([Parameters.__name__ if hasattr(Parameters, "__name__") else "x", 1]))
    """

    done = run_nni_script(script)

    assert json.loads(done.stdout)[1] == 1
