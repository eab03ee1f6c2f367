"""Helpers shared by the example tests: where the examples are, and a clean environment."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

# Variables that would make a trial think an experiment started it.
_EXPERIMENT_PREFIXES = ("TUNELAB_", "NNI_")


def standalone_env(**extra: str) -> dict[str, str]:
    """This process's environment without any experiment variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_EXPERIMENT_PREFIXES)}
    env.update(extra)
    return env


def nni_shim_path() -> str:
    """The folder holding tunelab's ``nni`` module, as training services put on PYTHONPATH."""
    from tunelab.compat import nni_path

    return nni_path()


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None
