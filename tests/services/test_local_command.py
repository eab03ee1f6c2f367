"""The local service runs a trial command that is only words without a second bash; bash must
split every such command exactly as it would have, and keep every other command for itself."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.services._local import _plain_argv


def bash_words(command: str) -> list[str]:
    """The words bash makes of ``command`` (each printed NUL-terminated by printf)."""
    done = subprocess.run(
        ["/bin/bash", "-c", "printf '%s\\0' " + command],
        capture_output=True,
        check=True,
        cwd="/",
    )
    return done.stdout.decode("utf-8").split("\0")[:-1]


@pytest.mark.parametrize(
    "command, words",
    [
        ("python3 train.py", ["python3", "train.py"]),
        ('python3 "train v2.py" --tag "a b"', ["python3", "train v2.py", "--tag", "a b"]),
        (
            "python3 -u ./t.py --lr=0.1 --name 'x y'",
            ["python3", "-u", "./t.py", "--lr=0.1", "--name", "x y"],
        ),
        ("python3 é.py", ["python3", "é.py"]),
    ],
)
def test_plain_commands_run_as_their_words(command: str, words: list[str]) -> None:
    assert _plain_argv(command) == words
    assert bash_words(command) == words


@pytest.mark.parametrize(
    "command",
    [
        "python3 $HOME/t.py",
        "cd sub && python3 t.py",
        "python3 *.py",
        "A=1 python3 t.py",
        "python3 t.py > out.txt",
        "python3 t.py # a comment",
        "python3 ~/t.py",
        "exit 3",
        "exec python3 t.py",
        "time python3 t.py",
        "source env.sh",
        "python3 t.py; echo done",
        'python3 "unclosed',
        "python3 `pwd`/t.py",
        'python3 "a\\"b"',
        "python3 {a,b}.py",
        "",
    ],
)
def test_commands_that_need_bash_stay_with_bash(command: str) -> None:
    assert _plain_argv(command) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab -_./='\"\\$*?~#;&|<>(){}`!\t", max_size=24))
def test_bash_agrees_with_every_command_taken_as_words(command: str) -> None:
    words = _plain_argv(command)
    if words is not None:
        assert bash_words(command) == words
