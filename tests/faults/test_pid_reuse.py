"""A trial's pid outlives the trial: a manager that re-attaches long after must not kill the
process that got the same pid since.

The local service finds a re-attached trial by its supervisor's pid and start time. When the
trial ended while no manager ran, that pid may belong to another process by the time a new
manager looks; ending "the trial's processes" must then leave that process alone.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tunelab.services import LocalTrainingService, Placement, TrialSpec


def _spec(trial_dir: Path) -> TrialSpec:
    return TrialSpec(
        experiment_id="reuse",
        trial_id="Ab1cD",
        sequence=0,
        command="true",
        code_dir=trial_dir,
        trial_dir=trial_dir,
        parameters={},
    )


@pytest.mark.parametrize("own_group", [True, False], ids=["group-leader", "group-member"])
def test_ending_a_reattached_trial_spares_a_process_that_reused_its_pid(
    tmp_path: Path, own_group: bool
) -> None:
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    (trial_dir / ".exitcode").write_text("0\n")  # the trial ended while no manager ran
    # Another process now holds the pid the store remembers (leading a group, or not).
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=own_group
    )
    try:
        started = psutil.Process(stranger.pid).create_time()
        state = {"pid": stranger.pid, "createTime": started - 3600}  # the trial's, an hour ago

        async def reattach_and_wait() -> None:
            service = LocalTrainingService(kill_grace=0.5)
            handle = await service.reattach(_spec(trial_dir), Placement(), state)
            assert handle is not None  # its exit code is there to read
            exit_info = await service.wait(handle)
            assert exit_info.exit_code == 0
            await service.cancel(handle)

        asyncio.run(reattach_and_wait())
        assert stranger.poll() is None, "the process that reused the trial's pid was killed"
    finally:
        stranger.kill()
        stranger.wait()
