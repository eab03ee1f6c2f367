"""tunelab: hyper-parameter tuning experiments, NNI-compatible.

Importing ``tunelab`` loads only the trial API (standard library only), so a trial script that
does ``import tunelab`` starts in milliseconds. Everything else (``Experiment``, the config
models, tuners) loads on first use.
"""

from __future__ import annotations

from tunelab.trial import (
    get_current_parameter,
    get_experiment_id,
    get_next_parameter,
    get_next_parameters,
    get_sequence_id,
    get_trial_id,
    report_final_result,
    report_intermediate_result,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "get_current_parameter",
    "get_experiment_id",
    "get_next_parameter",
    "get_next_parameters",
    "get_sequence_id",
    "get_trial_id",
    "report_final_result",
    "report_intermediate_result",
]
