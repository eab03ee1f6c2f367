"""An NNI v1 config through the CLI: a valid one shows its v2 form; a refused one gets its
one-line error only, not the v2 form of a config that cannot run."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import Lab

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nni-trial-unchanged"


def test_a_valid_v1_config_shows_its_v2_form(lab: Lab) -> None:
    result = lab.cli("config", "check", str(EXAMPLE / "config_v1.yml"))
    assert result.code == 0, result.stderr
    assert "The v2 form is:" in result.stderr and "trialCommand: python3 trial.py" in result.stderr


def test_a_refused_v1_config_gets_one_line(lab: Lab, tmp_path: Path) -> None:
    folder = tmp_path / "v1"
    shutil.copytree(EXAMPLE, folder)
    config = folder / "config_v1.yml"
    text = config.read_text(encoding="utf-8").replace(
        "builtinTunerName: Random", "builtinTunerName: SMAC"
    )
    config.write_text(text, encoding="utf-8")
    for command in ("create", "config check"):
        result = lab.cli(
            *command.split(), *(["--config"] if command == "create" else []), str(config)
        )
        assert result.code == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "SMAC" in result.stderr and "v2 form" not in result.stderr
