"""``nni.compression`` is not provided: importing it raises ImportError."""

from ._unsupported import unsupported

unsupported(
    __name__,
    "for model compression use tunelab.compression (installed with tunelab's torch extra)",
)
