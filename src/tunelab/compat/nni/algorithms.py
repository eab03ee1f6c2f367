"""``nni.algorithms`` is not provided: importing it raises ImportError."""

from ._unsupported import unsupported

unsupported(
    __name__,
    "built-in tuners and assessors run in the tunelab manager: name them in config.yml "
    "(tuner: name: TPE)",
)
