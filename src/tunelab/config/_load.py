"""``load_config``: an experiment config file (YAML or JSON, NNI v1 or v2) read and validated.

A file whose name ends in ``.json`` is read as JSON, any other as YAML (``safe_load`` rules; a
key given twice in one mapping is an error). Files are UTF-8 whatever the locale. Relative
paths in the config are read from the config file's folder, not from the current folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from tunelab.config._files import FileProblem, read_structured
from tunelab.config._models import ExperimentConfig
from tunelab.errors import ConfigError, Issue

__all__ = ["load_config"]


def load_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read, convert (if NNI v1) and validate an experiment config file.

    Raises:
        ConfigError: the file is missing, empty, not a mapping, not valid YAML/JSON (the issue
            names the file and line), or the config breaks a rule (one issue per problem).
    """
    file = Path(path).absolute()
    try:
        data = read_structured(file, json_first=False)
    except FileProblem as problem:
        raise problem.error() from None
    if data is None:
        raise ConfigError(
            Issue(
                str(file),
                "the config file is empty",
                fix="write the experiment's fields in it",
                show_value=False,
            )
        )
    if not isinstance(data, dict):
        raise ConfigError(
            Issue(
                str(file),
                "must hold a mapping of field names to values",
                type(data).__name__,
                "write the config as 'field: value' lines",
            )
        )
    config = ExperimentConfig.from_dict(data, base_dir=file.parent)
    config.validate()
    return config
