"""The trial every arm runs: read the parameters, report ``x`` at once, exit.

Unchanged NNI trial code. Under NNI it imports NNI; under tunelab it imports tunelab's ``nni``
shim (the training service puts it on ``PYTHONPATH``); standalone, both APIs return ``{}`` from
``get_next_parameter()`` and only log the result, which is what the floor arm runs.
"""

import nni

params = nni.get_next_parameter() or {}
nni.report_final_result(float(params.get("x", 0.5)))
