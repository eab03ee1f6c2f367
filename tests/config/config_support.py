"""Helpers shared by the config tests: a valid config and an experiment folder to write it in."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunelab.config import ExperimentConfig, load_config

SPACE = {
    "lr": {"_type": "loguniform", "_value": [0.0001, 0.1]},
    "act": {"_type": "choice", "_value": ["relu", "tanh"]},
}

VALID: dict[str, Any] = {
    "experimentName": "demo",
    "searchSpaceFile": "search_space.json",
    "trialCommand": "python3 trial.py",
    "trialCodeDirectory": ".",
    "trialConcurrency": 2,
    "maxTrialNumber": 10,
    "tuner": {"name": "TPE", "classArgs": {"optimize_mode": "maximize"}},
    "trainingService": {"platform": "local"},
}


def valid(**changes: Any) -> dict[str, Any]:
    """A copy of the valid config with top-level fields changed (None removes a field)."""
    data = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@dataclass
class Project:
    """An experiment folder (search space, trial script) and helpers to write configs in it."""

    folder: Path

    def write(self, data: Any, name: str = "config.yml") -> Path:
        path = self.folder / name
        if name.endswith(".json"):
            path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return path

    def load(self, data: Any, name: str = "config.yml") -> ExperimentConfig:
        return load_config(self.write(data, name))

    def json(self, data: Any) -> dict[str, Any]:
        return self.load(data).to_json()
