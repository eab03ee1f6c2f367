"""``nni.assessor`` is not provided: importing it raises ImportError."""

from ._unsupported import unsupported

unsupported(
    __name__,
    "assessors run in the tunelab manager, not in trials: see tunelab.assessors for the "
    "Assessor contract",
)
