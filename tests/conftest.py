"""Fixtures shared by the whole suite: a private TUNELAB_HOME, time scaling, and a helper
that writes an experiment (config, search space, trial script) and runs the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# Durations in experiments under test are multiplied by this (see tunelab.engine.time_scale).
TIME_SCALE = 0.01


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Lab:
    """A private tunelab home and helpers to write and run experiments in it."""

    home: Path
    root: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TUNELAB_HOME"] = str(self.home)
        env["TUNELAB_TIME_SCALE"] = str(TIME_SCALE)
        return env

    def cli(self, *args: str, timeout: float = 120) -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "tunelab.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    def write(
        self,
        search_space: Any,
        trial: str,
        name: str = "exp",
        **config: Any,
    ) -> Path:
        """Write an experiment folder; returns the config path. ``config`` uses NNI keys."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "trial.py").write_text(textwrap.dedent(trial), encoding="utf-8")
        (folder / "search_space.json").write_text(json.dumps(search_space), encoding="utf-8")
        full: dict[str, Any] = {
            "searchSpaceFile": "search_space.json",
            "trialCommand": f"{sys.executable} trial.py",
            "trialCodeDirectory": ".",
            "trialConcurrency": 2,
            "tuner": {"name": "Random"},
            "trainingService": {"platform": "local"},
        }
        full.update(config)
        path = folder / "config.yml"
        path.write_text(yaml.safe_dump(full, allow_unicode=True), encoding="utf-8")
        return path

    def run(self, config: Path, *extra: str, timeout: float = 180) -> tuple[CliResult, str]:
        """``tunelab create --foreground``; returns the result and the experiment id."""
        result = self.cli(
            "create", "--config", str(config), "--foreground", *extra, timeout=timeout
        )
        experiment_id = ""
        for line in result.stdout.splitlines():
            if line.startswith("Experiment ") and " started: " in line:
                experiment_id = line.split()[1]
        return result, experiment_id

    def trials(self, experiment_id: str) -> list[dict[str, Any]]:
        result = self.cli("trial", "ls", experiment_id, "--json")
        assert result.code == 0, result.stderr
        trials: list[dict[str, Any]] = result.json()
        return trials

    def status(self, experiment_id: str) -> dict[str, Any]:
        result = self.cli("experiment", "status", experiment_id)
        assert result.code == 0, result.stderr
        status: dict[str, Any] = result.json()
        return status


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    home = tmp_path / "home"
    monkeypatch.setenv("TUNELAB_HOME", str(home))
    monkeypatch.setenv("TUNELAB_TIME_SCALE", str(TIME_SCALE))
    the_lab = Lab(home=home, root=tmp_path)
    yield the_lab
    # Leave nothing running: stop whatever a failed test left behind.
    if home.exists():
        the_lab.cli("stop", "--all", timeout=120)
