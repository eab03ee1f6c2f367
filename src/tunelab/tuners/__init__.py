"""Tuners: the Tuner contract, NNI's built-in names, one module per algorithm.

``create_tuner(name, class_args)`` builds a tuner from a config's ``tuner`` section; see
:class:`Tuner` for the contract every tuner follows.
"""

from tunelab.tuners._base import Observation, Tuner
from tunelab.tuners._custom import (
    NniTunerAdapter,
    register_algorithm,
    registered_algorithms,
    unregister_algorithm,
)
from tunelab.tuners._grid import GridSearchTuner
from tunelab.tuners._random import RandomTuner
from tunelab.tuners._registry import (
    available_tuners,
    builtin_names,
    create_tuner,
    custom_tuner,
    register_tuner,
)
from tunelab.tuners._tpe import TpeArguments, TpeTuner

__all__ = [
    "GridSearchTuner",
    "NniTunerAdapter",
    "Observation",
    "RandomTuner",
    "TpeArguments",
    "TpeTuner",
    "Tuner",
    "available_tuners",
    "builtin_names",
    "create_tuner",
    "custom_tuner",
    "register_algorithm",
    "register_tuner",
    "registered_algorithms",
    "unregister_algorithm",
]
