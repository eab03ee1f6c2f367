"""Fixtures shared by the whole suite: a private TUNELAB_HOME, time scaling, and a helper
that writes an experiment (config, search space, trial script) and runs the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
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
            [sys.executable, "-m", "tunelab", *args],
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

    # -- helpers added for the management commands (tests/cli, tests/api) ------------------

    def tl(self, *args: str) -> CliResult:
        """The CLI's own entry point run in this process: the same code as ``cli`` without
        the second or two a new interpreter costs; for the many follow-up commands a test
        runs. Errors still go through ``main``'s one-line handling."""
        import contextlib
        import io

        from tunelab.cli import main

        stdout, stderr = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main(list(args))
            except SystemExit as end:
                code = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
        return CliResult(code, stdout.getvalue(), stderr.getvalue())

    def start(self, config: Path, *extra: str) -> str:
        """``tunelab create`` without --foreground; returns the experiment id."""
        result = self.cli("create", "--config", str(config), *extra)
        assert result.code == 0, result.stderr
        return result.stdout.split()[1]

    def client(self, experiment_id: str) -> Any:
        """The experiment through tunelab.client, in this process (fast reads for waiting)."""
        from tunelab.client import resolve

        return resolve(experiment_id)

    def wait(
        self,
        experiment_id: str,
        until: Callable[[dict[str, Any], list[dict[str, Any]]], bool],
        timeout: float = 60,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Poll the experiment's profile and trials until ``until(profile, trials)``."""
        deadline = time.monotonic() + timeout
        while True:
            client = self.client(experiment_id)
            profile, trials = client.experiment(), client.trials()
            if until(profile, trials):
                return profile, trials
            assert time.monotonic() < deadline, (profile["status"], trials)
            time.sleep(0.1)

    def wait_status(
        self, experiment_id: str, states: Iterable[str], timeout: float = 60
    ) -> dict[str, Any]:
        wanted = set(states)
        profile, _ = self.wait(experiment_id, lambda p, _: p["status"] in wanted, timeout)
        return profile

    def wait_running(self, experiment_id: str, count: int, timeout: float = 60) -> list[Any]:
        """Wait until ``count`` trials run; returns the trials."""
        _, trials = self.wait(
            experiment_id,
            lambda _, ts: sum(t["status"] == "RUNNING" for t in ts) >= count,
            timeout,
        )
        return trials


# A trial that waits until its gate file exists, then reports x (or 1.0 when the space has no
# x). Tests hold trials RUNNING with it for as long as they need, without sleeping.
GATED_TRIAL = """
import pathlib, sys, time, tunelab
params = tunelab.get_next_parameter()
print("trial", tunelab.get_trial_id(), "got", params, flush=True)
print("a line on stderr", file=sys.stderr, flush=True)
gate = pathlib.Path({gate!r})
while not gate.exists():
    time.sleep(0.02)
tunelab.report_intermediate_result(0.5)
x = params.get("x", 1.0)
tunelab.report_final_result(x if isinstance(x, (int, float)) else 1.0)
"""


def gated_trial(gate: Path) -> str:
    return GATED_TRIAL.format(gate=str(gate))


def process_gone(pid: int) -> bool:
    """Whether a process has ended. A zombie counts as ended: a manager whose parent (the CLI
    that started it) has exited waits there until the machine's init reaps it."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


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
