"""``nni.experiment`` is not provided: importing it raises ImportError."""

from ._unsupported import unsupported

unsupported(
    __name__,
    "start experiments with the tunelab CLI (tunelab create --config config.yml) or, in a "
    "launch script, with 'from tunelab import Experiment' (NNI's Experiment API), not from "
    "inside a trial",
)
