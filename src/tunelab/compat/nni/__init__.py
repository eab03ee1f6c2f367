"""A package named ``nni`` that runs NNI trial code on tunelab.

The training service puts the folder holding this package first on a trial's ``PYTHONPATH``
(see :func:`tunelab.compat.nni_path`), so that ``import nni`` in unchanged trial code lands
here. It covers NNI's trial API (``get_next_parameter``, ``report_*``, the ids), ``nni.trace``,
``nni.utils`` (``merge_parameter``, ``extract_scalar_reward``) and ``nni.typehint``, each mapped
onto :mod:`tunelab.trial`. Importing a part of NNI that trials do not use (``nni.nas``,
``nni.compression``, ``nni.experiment``, ...) raises an ImportError that says what to use
instead.

Standard library only, and fast to import: NNI's own ``import nni`` takes over a second.

When this folder is shipped without a tunelab install (``<root>/tunelab/compat/nni``), the
shim finds its ``tunelab`` package through its own location.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar, overload


def _make_tunelab_importable() -> None:
    try:
        import tunelab.trial  # noqa: F401
    except ModuleNotFoundError as error:
        if error.name not in ("tunelab", "tunelab.trial"):
            raise
        # <root>/tunelab/compat/nni/__init__.py: <root> holds the tunelab package.
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(here))))


_make_tunelab_importable()

from tunelab.trial import (  # noqa: E402
    get_current_parameter,
    get_experiment_id,
    get_next_parameter,
    get_next_parameters,
    get_sequence_id,
    get_trial_id,
    report_final_result,
    report_intermediate_result,
)

from . import typehint, utils  # noqa: E402

__all__ = [
    "NoMoreTrialError",
    "__version__",
    "get_current_parameter",
    "get_experiment_id",
    "get_next_parameter",
    "get_next_parameters",
    "get_sequence_id",
    "get_trial_id",
    "report_final_result",
    "report_intermediate_result",
    "trace",
    "typehint",
    "utils",
]

# The NNI release whose trial API this shim follows, marked as tunelab's.
__version__ = "3.0+tunelab"

_T = TypeVar("_T")


class NoMoreTrialError(Exception):
    """Raised by a tuner that has nothing left to suggest (kept for code that imports it)."""


@overload
def trace(
    cls_or_func: None = None, *, kw_only: bool = True, inheritable: bool = False
) -> Callable[[_T], _T]: ...


@overload
def trace(cls_or_func: _T, *, kw_only: bool = True, inheritable: bool = False) -> _T: ...


def trace(cls_or_func: Any = None, *, kw_only: bool = True, inheritable: bool = False) -> Any:
    """Return the class or function unchanged.

    NNI's ``trace`` records a call's arguments so that NAS and compression can rebuild the
    object; plain HPO trials only need ``@nni.trace`` and ``nni.trace(cls)`` to work, with or
    without arguments.
    """
    if cls_or_func is None:
        return lambda target: target
    return cls_or_func
