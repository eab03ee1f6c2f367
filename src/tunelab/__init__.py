"""tunelab: hyper-parameter tuning experiments, NNI-compatible.

Importing ``tunelab`` loads only the trial API (standard library only), so a trial script that
does ``import tunelab`` starts in milliseconds. Everything else (``Experiment``, the config
models, tuners) loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from tunelab.experiment import Experiment  # noqa: F401 - loaded by __getattr__

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


def __getattr__(name: str) -> Any:
    # ``from tunelab import Experiment`` loads the experiment API (httpx, the client) only when
    # it is asked for, so that trials keep importing tunelab in milliseconds.
    if name == "Experiment":
        from tunelab.experiment import Experiment

        return Experiment
    raise AttributeError(f"module 'tunelab' has no attribute {name!r}")
