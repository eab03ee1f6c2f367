"""Compatibility with NNI trial code.

``compat/nni/`` is a package named ``nni`` that maps NNI's trial API onto :mod:`tunelab.trial`.
Training services put the folder returned by :func:`nni_path` first on the trial's
``PYTHONPATH``, so ``import nni`` in unchanged trial code finds it without NNI installed.
Importing this package does not import the shim.
"""

from __future__ import annotations

import os

__all__ = ["nni_path"]


def nni_path() -> str:
    """Return the folder that contains the ``nni`` shim package, for a trial's ``PYTHONPATH``."""
    return os.path.dirname(os.path.abspath(__file__))
