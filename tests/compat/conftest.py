"""Fixtures for the nni shim: trial scripts run as real processes with the shim on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tunelab.compat import nni_path
from tunelab.trial import trial_env, write_parameters


@pytest.fixture
def trial_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "trials" / "Qm7Rt"
    folder.mkdir(parents=True)
    write_parameters(folder, {"lr": 0.05, "batch_size": 32.0, "hidden": 128}, parameter_id=2)
    return folder


@pytest.fixture
def trial_vars(trial_dir: Path) -> dict[str, str]:
    return trial_env(
        experiment_id="expNNI",
        trial_id="Qm7Rt",
        sequence_id=2,
        trial_dir=trial_dir,
        code_dir=trial_dir.parent,
    )


@pytest.fixture
def run_nni_script(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a script as the training service does: the shim's folder first on PYTHONPATH."""

    def run(
        script: str,
        env: dict[str, str] | None = None,
        *,
        python: tuple[str, ...] = (sys.executable,),
        pythonpath: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "trial.py"
        path.write_text(textwrap.dedent(script), encoding="utf-8")
        full_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TUNELAB_", "NNI_")) and key != "PYTHONPATH"
        }
        full_env["PYTHONPATH"] = pythonpath or nni_path()
        full_env.update(env or {})
        done = subprocess.run(
            [*python, str(path)],
            env=full_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done

    return run
