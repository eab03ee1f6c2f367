"""``nni.experiment`` is not provided: importing it raises ImportError."""

from ._unsupported import unsupported

unsupported(
    __name__,
    "start experiments with the tunelab CLI (tunelab create --config config.yml), not "
    "from inside a trial",
)
