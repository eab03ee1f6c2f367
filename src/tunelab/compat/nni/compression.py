"""``nni.compression`` is not provided: importing it raises ImportError."""

from ._unsupported import unsupported

unsupported(
    __name__,
    "model compression is not part of tunelab yet",
)
