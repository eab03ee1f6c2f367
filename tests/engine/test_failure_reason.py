"""A failed trial's reason carries its error: the last line of a Python traceback, or what the
shell said of a command it could not run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Lab
from tunelab.engine._engine import _failure_detail


@pytest.mark.parametrize(
    ("stderr", "error"),
    [
        (
            "Traceback (most recent call last):\n  File 't.py'\nValueError: bad lr\n",
            "ValueError: bad lr",
        ),
        (
            "numpy.linalg.LinAlgError: Singular matrix\n\n",
            "numpy.linalg.LinAlgError: Singular matrix",
        ),
        ("KeyboardInterrupt\n", "KeyboardInterrupt"),
        ("epoch 3 loss 0.2\n", None),  # the last line is not an error: nothing is made up
        ("", None),
        (
            "x" * 20000 + "\nRuntimeError: " + "y" * 1000 + "\n",
            "RuntimeError: " + "y" * 283 + "...",
        ),
        (b"\xff\xfe\nOSError: caf\xe9\n", "OSError: caf\ufffd"),
    ],
)
def test_the_last_line_of_a_traceback_is_the_error(
    tmp_path: Path, stderr: str | bytes, error: str | None
) -> None:
    path = tmp_path / "trial.stderr"
    path.write_bytes(stderr if isinstance(stderr, bytes) else stderr.encode("utf-8"))
    assert _failure_detail(path, 1) == error


def test_no_stderr_file_gives_no_error(tmp_path: Path) -> None:
    assert _failure_detail(tmp_path / "missing", 1) is None


@pytest.mark.parametrize(
    ("stderr", "code", "error"),
    [
        (
            "tunelab-trial: line 3: trian.py: command not found\n",
            127,
            "trian.py: command not found",
        ),
        ("bash: line 1: ./run.sh: Permission denied\n", 126, "./run.sh: Permission denied"),
        ("/bin/sh: 1: pythn: not found\n", 127, "pythn: not found"),
        # Another exit code is the trial's own: its last line is not taken as the shell's.
        ("bash: line 1: x: command not found\n", 1, None),
    ],
)
def test_the_shells_word_on_a_command_it_could_not_run(
    tmp_path: Path, stderr: str, code: int, error: str | None
) -> None:
    path = tmp_path / "trial.stderr"
    path.write_text(stderr, encoding="utf-8")
    assert _failure_detail(path, code) == error


@pytest.mark.parametrize(
    "command", ["nosuchprogram_tl --lr 0.1", "nosuchprogram_tl | cat; exit 127"]
)
def test_a_trial_command_that_does_not_exist_says_so(lab: Lab, command: str) -> None:
    space = {"x": {"_type": "uniform", "_value": [0, 1]}}
    config = lab.write(space, "", maxTrialNumber=1, trialCommand=command)
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr  # DONE, with no result
    (trial,) = lab.trials(exp)
    assert trial["status"] == "FAILED"
    assert trial["reason"] == "exit code 127: nosuchprogram_tl: command not found"
    assert "tunelab-trial" not in trial["reason"]
