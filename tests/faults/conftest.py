"""Fixtures of the fault tests: a lab whose processes are all accounted for at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import TIME_SCALE, Lab
from tests.faults.harness import FaultLab


@pytest.fixture
def faults(lab: Lab) -> Iterator[FaultLab]:
    """A :class:`FaultLab` in the test's private home. At the end every manager is stopped,
    and a test that left any process of its lab running fails (the process is killed)."""
    the_lab = FaultLab(lab.home, lab.root, TIME_SCALE)
    yield the_lab
    left = the_lab.clean_up()
    assert not left, f"processes left running: {left}"
