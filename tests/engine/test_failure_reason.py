"""A failed Python trial's reason carries its error: the last line of its traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.engine._engine import _python_error


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
    assert _python_error(path) == error


def test_no_stderr_file_gives_no_error(tmp_path: Path) -> None:
    assert _python_error(tmp_path / "missing") is None
