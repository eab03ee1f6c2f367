"""``nni.tuner`` is not provided: importing it raises ImportError."""

from ._unsupported import unsupported

unsupported(
    __name__,
    "tuners run in the tunelab manager, not in trials: see tunelab.tuners for the Tuner contract",
)
