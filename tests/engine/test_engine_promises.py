"""Promises of the experiment core that cross its parts, checked through the real CLI and
manager: seeded experiments are reproducible, and GPU placement works end to end.

This machine has no GPU: the manager is given pretend GPUs through TUNELAB_FAKE_GPUS (the
injected device probe of tunelab.services); everything else is real.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import Lab
from tunelab.store import find_experiment, read_manager_info

REPORT = """
import os, time, tunelab
p = tunelab.get_next_parameter()
time.sleep(float(os.environ.get("HOLD", "0")))
tunelab.report_final_result({"default": p["x"], "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")})
"""

SPACE = {
    "x": {"_type": "uniform", "_value": [0, 1]},
    "n": {"_type": "randint", "_value": [0, 1000]},
    "c": {"_type": "choice", "_value": ["a", "b", "c"]},
}


def parameters_by_sequence(lab: Lab, experiment_id: str) -> list[dict]:
    trials = sorted(lab.trials(experiment_id), key=lambda t: t["sequence"])
    return [t["parameters"] for t in trials]


@pytest.mark.parametrize(("tuner", "concurrency"), [("Random", 2), ("TPE", 1)])
def test_a_seeded_experiment_is_reproducible(lab: Lab, tuner: str, concurrency: int) -> None:
    runs = []
    for name in ("first", "second", "other seed"):
        seed = 11 if name != "other seed" else 12
        config = lab.write(
            SPACE,
            REPORT,
            name=name.replace(" ", "-"),
            maxTrialNumber=24,
            trialConcurrency=concurrency,
            tuner={
                "name": tuner,
                "classArgs": {"seed": seed, "tpe_args": {"n_startup_jobs": 5}}
                if tuner == "TPE"
                else {"seed": seed},
            },
        )
        result, experiment_id = lab.run(config)
        assert result.code == 0, result.stderr
        runs.append(parameters_by_sequence(lab, experiment_id))

    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_trials_get_distinct_gpus_and_wait_with_a_reason(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNELAB_FAKE_GPUS", "0:0,1:0")
    monkeypatch.setenv("HOLD", "1.5")
    config = lab.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}},
        REPORT,
        maxTrialNumber=4,
        trialConcurrency=3,
        trialGpuNumber=1,
        trainingService={"platform": "local", "useActiveGpu": False},
    )
    created = lab.cli("create", "--config", str(config))
    assert created.code == 0, created.stderr
    experiment_id = created.stdout.split()[1]

    found = find_experiment(experiment_id)
    assert found is not None
    info = read_manager_info(found[1])
    assert info is not None
    reasons = set()
    for _ in range(400):
        trials = httpx.get(f"{info.url}/api/v1/trials", timeout=30).json()
        running = [t for t in trials if t["status"] == "RUNNING"]
        assert len(running) <= 2, "more trials than GPUs ran at once"
        reasons |= {t["reason"] for t in trials if t["status"] == "WAITING" and t["reason"]}
        if len(trials) == 4 and all(t["status"] == "SUCCEEDED" for t in trials):
            break
        time.sleep(0.05)
    trials = lab.trials(experiment_id)
    assert [t["status"] for t in trials] == ["SUCCEEDED"] * 4
    assert {t["finalMetric"]["gpus"] for t in trials} == {"0", "1"}
    assert any("GPU" in reason for reason in reasons), reasons


def test_asking_for_more_gpus_than_there_are_fails_at_create(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNELAB_FAKE_GPUS", "0:0,1:0")
    config = lab.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}},
        REPORT,
        trialGpuNumber=3,
        trainingService={"platform": "local", "useActiveGpu": True},
    )

    result = lab.cli("create", "--config", str(config))

    assert result.code == 2
    assert "trialGpuNumber: asks for 3 GPU(s) per trial" in result.stderr
    assert not lab.home.exists() or not any(lab.home.iterdir())


def test_no_gpu_asked_for_hides_every_gpu(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELAB_FAKE_GPUS", "0:0")
    config = lab.write(
        {"x": {"_type": "uniform", "_value": [0, 1]}}, REPORT, maxTrialNumber=1, trialGpuNumber=0
    )

    result, experiment_id = lab.run(config)

    assert result.code == 0, result.stderr
    (trial,) = lab.trials(experiment_id)
    assert trial["finalMetric"]["gpus"] == ""
