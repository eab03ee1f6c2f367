"""``nni.mutable`` is not provided: importing it raises ImportError."""

from ._unsupported import unsupported

unsupported(
    __name__,
    "for neural architecture search use tunelab.nas (installed with tunelab's torch extra)",
)
