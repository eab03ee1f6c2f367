"""Search spaces in NNI's JSON format: checked, sampled, counted and enumerated.

``SearchSpace.from_json(space)`` checks every rule and raises
:class:`~tunelab.errors.SearchSpaceError` with one message per bad parameter; a space that
passes can be sampled by any tuner. See :mod:`tunelab.space._space` for the semantics.
"""

from tunelab.space._parse import PARAMETER_TYPES, Key, Parameter, quantize
from tunelab.space._space import (
    Point,
    SearchSpace,
    finish_value,
    point_key,
    read_value,
    sample_value,
)

__all__ = [
    "PARAMETER_TYPES",
    "Key",
    "Parameter",
    "Point",
    "SearchSpace",
    "finish_value",
    "point_key",
    "quantize",
    "read_value",
    "sample_value",
]
