"""The trial side of tunelab: what trial code calls, and the files it shares with the manager.

Trial code asks for its parameters and reports metrics::

    import tunelab

    params = tunelab.get_next_parameter()
    for epoch in range(10):
        tunelab.report_intermediate_result(train_one_epoch(params))
    tunelab.report_final_result({"default": accuracy, "loss": loss})

The manager and the training services import the protocol names from here
(:data:`PARAMETERS_FILE`, :data:`METRICS_FILE`, :func:`trial_env`, :func:`write_parameters`,
:func:`read_metrics`), so the file formats and variable names are spelled once.

This package uses the standard library only and imports nothing else from tunelab: it is
shipped with the trial code (with ``tunelab/__init__.py`` and the ``nni`` shim) to hosts that
have no tunelab installed.
"""

from __future__ import annotations

from tunelab.trial._api import (
    get_current_parameter,
    get_experiment_id,
    get_next_parameter,
    get_next_parameters,
    get_sequence_id,
    get_trial_id,
    report_final_result,
    report_intermediate_result,
)
from tunelab.trial._protocol import (
    ENV_EXPERIMENT_ID,
    ENV_PLATFORM,
    ENV_SEQUENCE_ID,
    ENV_TRIAL_DIR,
    ENV_TRIAL_ID,
    METRICS_FILE,
    NNI_ENV_CODE_DIR,
    NNI_ENV_EXPERIMENT_ID,
    NNI_ENV_OUTPUT_DIR,
    NNI_ENV_PLATFORM,
    NNI_ENV_SEQUENCE_ID,
    NNI_ENV_SYS_DIR,
    NNI_ENV_TRIAL_ID,
    PARAMETERS_FILE,
    MetricRecord,
    ParameterRecord,
    read_metrics,
    read_parameters,
    trial_env,
    write_parameters,
)

__all__ = [
    "ENV_EXPERIMENT_ID",
    "ENV_PLATFORM",
    "ENV_SEQUENCE_ID",
    "ENV_TRIAL_DIR",
    "ENV_TRIAL_ID",
    "METRICS_FILE",
    "NNI_ENV_CODE_DIR",
    "NNI_ENV_EXPERIMENT_ID",
    "NNI_ENV_OUTPUT_DIR",
    "NNI_ENV_PLATFORM",
    "NNI_ENV_SEQUENCE_ID",
    "NNI_ENV_SYS_DIR",
    "NNI_ENV_TRIAL_ID",
    "PARAMETERS_FILE",
    "MetricRecord",
    "ParameterRecord",
    "get_current_parameter",
    "get_experiment_id",
    "get_next_parameter",
    "get_next_parameters",
    "get_sequence_id",
    "get_trial_id",
    "read_metrics",
    "read_parameters",
    "report_final_result",
    "report_intermediate_result",
    "trial_env",
    "write_parameters",
]
