"""``nni.retiarii`` is not provided: importing it raises ImportError."""

from ._unsupported import unsupported

unsupported(
    __name__,
    "neural architecture search is not part of tunelab yet",
)
