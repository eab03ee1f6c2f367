"""The README's two commands are the ones the project really runs."""

from __future__ import annotations

import re

from examples_support import REPO

README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"


def bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL)]


def start_commands() -> list[str]:
    readme = README.read_text(encoding="utf-8")
    start = readme.split("## Start", 1)[1].split("\n## ", 1)[0]
    return bash_blocks(start)


def test_start_has_exactly_two_one_line_commands() -> None:
    commands = start_commands()

    assert len(commands) == 2, commands
    for command in commands:
        assert "\n" not in command, command


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = start_commands()[1]
    ci_lines = [line.strip() for line in CI_RUN.read_text(encoding="utf-8").splitlines()]

    assert "pytest" in test_command
    assert any(line.startswith(test_command) for line in ci_lines), (
        f".ci/run does not run the README's test command:\n{test_command}"
    )


def test_readme_example_config_exists() -> None:
    run_example = start_commands()[0]
    config = re.search(r"--config (\S+)", run_example)

    assert config is not None, run_example
    assert (REPO / config.group(1)).is_file()
