"""Fixtures for the trial side: a trial folder, trial scripts run as real processes, and an
in-process trial environment with fresh module state."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tunelab.trial import _api, trial_env, write_parameters

RunScript = Callable[..., subprocess.CompletedProcess[str]]


def clean_environ() -> dict[str, str]:
    """This process's environment without any trial variables or PYTHONPATH."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TUNELAB_", "NNI_")) and key != "PYTHONPATH"
    }


def managed_env(trial_dir: Path, sequence_id: int = 7) -> dict[str, str]:
    """The variables the training service sets for the trial in ``trial_dir``."""
    return trial_env(
        experiment_id="exp01",
        trial_id="Ab3xZ",
        sequence_id=sequence_id,
        trial_dir=trial_dir,
        code_dir=trial_dir.parent,
    )


@pytest.fixture
def env_for() -> Callable[..., dict[str, str]]:
    """``env_for(trial_dir, sequence_id=7)``: a managed trial's variables."""
    return managed_env


@pytest.fixture
def trial_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "trials" / "Ab3xZ"
    folder.mkdir(parents=True)
    write_parameters(folder, {"lr": 0.01, "layers": 3}, parameter_id=7)
    return folder


@pytest.fixture
def run_script(tmp_path: Path) -> RunScript:
    """Run a Python script in a fresh process; ``env`` is added to a clean environment."""

    def run(
        script: str,
        env: dict[str, str] | None = None,
        *,
        python_args: tuple[str, ...] = (),
        name: str = "trial.py",
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        path = tmp_path / name
        path.write_text(textwrap.dedent(script), encoding="utf-8")
        full_env = clean_environ()
        full_env.update(env or {})
        done = subprocess.run(
            [sys.executable, *python_args, str(path)],
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


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clear trial variables from this process and give the trial API fresh module state."""
    for key in list(os.environ):
        if key.startswith(("TUNELAB_", "NNI_")):
            monkeypatch.delenv(key)
    monkeypatch.setattr(_api, "_parameters", {})
    monkeypatch.setattr(_api, "_current", None)
    monkeypatch.setattr(_api, "_warned", set())
    monkeypatch.setattr(_api, "_finals_reported", 0)
    monkeypatch.setattr(_api, "_writers", {})


@pytest.fixture
def managed(trial_dir: Path, fresh_state: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in-process code as a managed trial; returns the trial folder."""
    for key, value in managed_env(trial_dir).items():
        monkeypatch.setenv(key, value)
    return trial_dir
