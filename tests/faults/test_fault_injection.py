"""Fault injection: kill -9 the manager of a real experiment at random moments, resume each
time, and check the final table (DESIGN.md rules 3, 4, 7 and 10; field case B24 at random).

Each test runs experiments of 20 short trials (5 intermediate results each, 3 at a time, on a
finite space of 24 points) until it has killed their managers at least ``KILLS_PER_TEST``
times; every fourth kill also kills every trial process, so that interrupted trials run again
under their ids. At the end of each experiment: every trial in a final state and SUCCEEDED,
exactly maxTrialNumber trials with unique ids and sequence numbers 0..19, no point tried twice,
every line of every trial's metrics.jsonl stored exactly once under the attempt that wrote it,
each result its last attempt's first final, nothing left running.

The moments come from a seed, printed at the start and in every failure; set
``TUNELAB_FAULT_SEED`` to run the same kills again. ``benchmarks/faults/run.py`` runs the same
harness for 100 kills.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.faults.harness import FaultLab, run_chaos

KILLS_PER_TEST = 10  # two tests: at least 20 kills in the suite


def _base_seed() -> int:
    given = os.environ.get("TUNELAB_FAULT_SEED")
    return int(given) if given else random.SystemRandom().randrange(1_000_000)


BASE_SEED = _base_seed()


@pytest.mark.slow
@pytest.mark.parametrize("part", [0, 1])
def test_kill_minus_9_at_random_moments(faults: FaultLab, part: int) -> None:
    seed = BASE_SEED * 100 + part * 10
    print(f"fault injection: TUNELAB_FAULT_SEED={BASE_SEED} (part {part}, first seed {seed})")
    kills = 0
    runs = []
    while kills < KILLS_PER_TEST:
        run = run_chaos(faults, seed, KILLS_PER_TEST - kills, name=f"chaos{part}", log=print)
        runs.append(run)
        kills += run.kills
        assert run.problems == [], (
            f"TUNELAB_FAULT_SEED={BASE_SEED}, seed {seed}: {run.problems}; kills: {run.events}"
        )
        seed += 1
    assert sum(run.figures["trials"] for run in runs) == 20 * len(runs)
