"""Storage: one SQLite file per experiment, and the folders of experiments on this machine."""

from tunelab.store._home import (
    DB_FILE,
    MANAGER_FILE,
    ManagerInfo,
    experiment_dirs,
    find_experiment,
    new_experiment_id,
    new_trial_id,
    read_manager_info,
    tunelab_home,
    write_manager_info,
)
from tunelab.store._json import decode_json_value, encode_json_value, format_number
from tunelab.store._store import ExperimentStore, MetricRecord, TrialRecord

__all__ = [
    "DB_FILE",
    "MANAGER_FILE",
    "ExperimentStore",
    "ManagerInfo",
    "MetricRecord",
    "TrialRecord",
    "decode_json_value",
    "encode_json_value",
    "experiment_dirs",
    "find_experiment",
    "format_number",
    "new_experiment_id",
    "new_trial_id",
    "read_manager_info",
    "tunelab_home",
    "write_manager_info",
]
