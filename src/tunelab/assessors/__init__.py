"""Assessors: the Assessor contract, NNI's Medianstop, and custom NNI-style assessors.

An assessor stops a trial early when its intermediate results look poor; see
:class:`Assessor` for the contract.
"""

from tunelab.assessors._base import Assessor
from tunelab.assessors._medianstop import MedianstopAssessor
from tunelab.assessors._registry import (
    NniAssessorAdapter,
    assessor_name,
    available_assessors,
    create_assessor,
    custom_assessor,
)

__all__ = [
    "Assessor",
    "MedianstopAssessor",
    "NniAssessorAdapter",
    "assessor_name",
    "available_assessors",
    "create_assessor",
    "custom_assessor",
]
