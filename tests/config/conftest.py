"""Fixtures for config tests: an experiment folder with a search space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from config_support import SPACE, Project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "search_space.json").write_text(json.dumps(SPACE), encoding="utf-8")
    (folder / "trial.py").write_text("print('trial')\n", encoding="utf-8")
    return Project(folder)
