"""``nni.feature_engineering`` is not provided: importing it raises ImportError."""

from ._unsupported import unsupported

unsupported(__name__, "feature engineering is not part of tunelab")
