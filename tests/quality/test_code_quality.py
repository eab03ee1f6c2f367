"""The code passes its own linters: ruff's format and checks, and mypy --strict on src/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (test extra)")
def test_ruff_format_leaves_everything_as_it_is() -> None:
    done = run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples")

    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (test extra)")
def test_ruff_check_finds_nothing() -> None:
    done = run("ruff", "check", "src", "tests", "benchmarks", "examples")

    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_mypy_strict_passes_on_the_package() -> None:
    done = run(sys.executable, "-m", "mypy")

    assert done.returncode == 0, done.stdout + done.stderr
