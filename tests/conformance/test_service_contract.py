"""The training-service contract (tunelab.services._base), the same tests for every service.

Every check goes through what the manager sees: the handle, ``read_metrics``, ``wait`` and the
files a finished trial leaves in its trial folder. Process ids come back in the trial's own
metrics, and all test hosts are this machine (loopback), so the suite can check with psutil
that a cancelled trial left no process behind.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conformance.conftest import ServiceKit
from tunelab.engine import Engine, EngineSettings
from tunelab.errors import ConfigError
from tunelab.services import GpuInfo, Placement, TrainingService, TrialHandle
from tunelab.space import SearchSpace
from tunelab.store import ExperimentStore
from tunelab.tuners import create_tuner

ENV_TRIAL = """
import os, sys, tunelab
tunelab.get_next_parameter()
keys = ["TUNELAB_EXPERIMENT_ID", "TUNELAB_TRIAL_ID", "TUNELAB_SEQUENCE_ID", "NNI_EXP_ID",
        "NNI_TRIAL_JOB_ID", "NNI_TRIAL_SEQ_ID", "NNI_PLATFORM", "CUDA_VISIBLE_DEVICES"]
seen = {k: os.environ.get(k) for k in keys}
seen["code_here"] = os.path.exists("trial.py")
seen["output_dir_exists"] = os.path.isdir(os.environ["NNI_OUTPUT_DIR"])
tunelab.report_final_result({"default": 1.0, "env": seen})
"""

CHILD_TRIAL = """
import subprocess, time, tunelab
tunelab.get_next_parameter()
child = subprocess.Popen(["sleep", "300"])
tunelab.report_intermediate_result({"default": 0, "child": child.pid})
time.sleep(300)
"""


async def collect(
    service: TrainingService, handle: TrialHandle, until: str | None = None, timeout: float = 60
) -> list[dict[str, Any]]:
    """Read metrics until a record of type ``until`` arrives (or, with None, until the trial
    has ended)."""
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records.extend(await service.read_metrics(handle))
        if until is not None and any(r["type"] == until for r in records):
            return records
        await asyncio.sleep(0.05)
    if until is not None:
        raise AssertionError(f"no {until} metric within {timeout} s: {records}")
    return records


async def finish(service: TrainingService, handle: TrialHandle) -> tuple[Any, list[dict]]:
    exit_info = await service.wait(handle)
    return exit_info, await service.read_metrics(handle)


def write_trial(kit: ServiceKit, name: str, source: str) -> str:
    (kit.code_dir / name).write_text(source, encoding="utf-8")
    return f"{kit.python} {name}"


def test_a_trial_runs_and_its_metrics_and_logs_come_back(kit: ServiceKit) -> None:
    async def body() -> None:
        service = await kit.service()
        spec = kit.spec(0, {"x": 0.25, "steps": 3})
        placement = service.place(spec)
        assert isinstance(placement, Placement)

        handle = await service.launch(spec, placement)
        exit_info, records = await finish(service, handle)

        assert exit_info.exit_code == 0 and exit_info.signal is None
        assert [r["type"] for r in records] == ["INTERMEDIATE"] * 3 + ["FINAL"]
        assert [r["seq"] for r in records] == [0, 1, 2, 3]
        assert records[-1]["value"] == {"default": 0.75, "extra": "kept"}
        assert await service.read_metrics(handle) == []
        stdout = (spec.trial_dir / "trial.stdout").read_text()
        stderr = (spec.trial_dir / "trial.stderr").read_text()
        assert "stdout of t0000" in stdout and "stderr of t0000" in stderr

    kit.run(body)


def test_the_trial_sees_its_ids_and_runs_in_the_code_directory(kit: ServiceKit) -> None:
    async def body() -> None:
        service = await kit.service()
        spec = kit.spec(7, {})
        spec.command = write_trial(kit, "env_trial.py", ENV_TRIAL)
        handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
        exit_info, records = await finish(service, handle)

        assert exit_info.exit_code == 0, (spec.trial_dir / "trial.stderr").read_text()
        env = records[-1]["value"]["env"]
        assert env["TUNELAB_EXPERIMENT_ID"] == env["NNI_EXP_ID"] == "conform"
        assert env["TUNELAB_TRIAL_ID"] == env["NNI_TRIAL_JOB_ID"] == "t0007"
        assert env["TUNELAB_SEQUENCE_ID"] == env["NNI_TRIAL_SEQ_ID"] == "7"
        assert env["NNI_PLATFORM"] == kit.platform
        assert env["code_here"] and env["output_dir_exists"]
        assert env["CUDA_VISIBLE_DEVICES"] is None  # no GPU scheduling asked for

    kit.run(body)


def test_a_failing_trial_reports_its_exit_code(kit: ServiceKit) -> None:
    async def body() -> None:
        service = await kit.service()
        spec = kit.spec(1, {"mode": "fail", "steps": 1})
        handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
        exit_info, records = await finish(service, handle)

        assert exit_info.exit_code == 3 and exit_info.describe() == "exit code 3"
        assert [r["type"] for r in records] == ["INTERMEDIATE"]

    kit.run(body)


def test_a_command_that_cannot_start_fails_the_trial(kit: ServiceKit) -> None:
    async def body() -> None:
        service = await kit.service()
        spec = kit.spec(2, {})
        spec.command = "./no-such-program --flag"
        try:
            handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
        except OSError:
            return  # refused at launch: the engine marks the trial FAILED with the message
        exit_info = await service.wait(handle)
        assert exit_info.exit_code == 127

    kit.run(body)


def test_cancel_ends_the_whole_process_tree(kit: ServiceKit) -> None:
    async def body() -> None:
        service = await kit.service()
        spec = kit.spec(3, {})
        spec.command = write_trial(kit, "child_trial.py", CHILD_TRIAL)
        handle = await service.launch(spec, service.place(spec))  # type: ignore[arg-type]
        records = await collect(service, handle, until="INTERMEDIATE")
        child = records[0]["value"]["child"]
        assert psutil.pid_exists(child)

        started = time.monotonic()
        await service.cancel(handle)
        exit_info = await asyncio.wait_for(service.wait(handle), 30)

        assert time.monotonic() - started < 20
        assert exit_info.exit_code != 0
        await asyncio.sleep(0.3)
        assert not _running(child), f"the trial's child {child} survived the cancel"

    kit.run(body)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_trials_run_side_by_side(kit: ServiceKit) -> None:
    async def body() -> None:
        service = await kit.service()
        specs = [kit.spec(10 + i, {"x": i / 10, "steps": 2, "step_sleep": 0.2}) for i in range(4)]
        handles = [await service.launch(s, service.place(s)) for s in specs]  # type: ignore[arg-type]
        results = await asyncio.gather(*(finish(service, h) for h in handles))

        for index, (exit_info, records) in enumerate(results):
            assert exit_info.exit_code == 0
            assert records[-1]["value"]["default"] == pytest.approx(0.5 + index / 10)

    kit.run(body)


def test_gpu_placement_follows_the_injected_probe(kit: ServiceKit) -> None:
    async def body() -> None:
        service = await kit.service(gpus=[GpuInfo(0), GpuInfo(1)])
        with pytest.raises(ConfigError, match="trialGpuNumber"):
            service.check_feasible(3)
        service.check_feasible(2)  # asking for every GPU there is must be allowed

        specs = [kit.spec(20 + i, {}, gpu_number=1) for i in range(3)]
        for spec in specs:
            spec.command = write_trial(kit, "env_trial.py", ENV_TRIAL)
        first, second = service.place(specs[0]), service.place(specs[1])
        assert isinstance(first, Placement) and isinstance(second, Placement)
        assert sorted([*first.gpu_indices, *second.gpu_indices]) == [0, 1]  # type: ignore[misc]
        reason = service.place(specs[2])
        assert isinstance(reason, str) and "GPU" in reason

        handle = await service.launch(specs[0], first)
        exit_info, records = await finish(service, handle)
        assert exit_info.exit_code == 0
        assert records[-1]["value"]["env"]["CUDA_VISIBLE_DEVICES"] == str(first.gpu_indices[0])  # type: ignore[index]
        # The slot is free again as soon as the trial has ended (field case B31).
        third = service.place(specs[2])
        assert isinstance(third, Placement) and third.gpu_indices == first.gpu_indices

        none = kit.spec(30, {}, gpu_number=0)
        none.command = write_trial(kit, "env_trial.py", ENV_TRIAL)
        handle = await service.launch(none, service.place(none))  # type: ignore[arg-type]
        _, records = await finish(service, handle)
        assert records[-1]["value"]["env"]["CUDA_VISIBLE_DEVICES"] == ""

    kit.run(body)


def test_a_busy_gpu_is_refused_with_a_reason_unless_active_gpus_are_allowed(
    kit: ServiceKit,
) -> None:
    async def body() -> None:
        busy = [GpuInfo(0, foreign_processes=1)]
        strict = await kit.service(gpus=busy, use_active_gpu=False)
        reason = strict.place(kit.spec(40, {}, gpu_number=1))
        assert isinstance(reason, str) and "busy" in reason

        lenient = await kit.service(gpus=busy, use_active_gpu=True)
        assert isinstance(lenient.place(kit.spec(41, {}, gpu_number=1)), Placement)

    kit.run(body)


def test_a_restarted_manager_reattaches_a_running_trial_and_loses_no_metric(
    kit: ServiceKit,
) -> None:
    async def body() -> None:
        old = await kit.service()
        spec = kit.spec(50, {"x": 0.1, "steps": 4, "step_sleep": 0.4})
        placement = old.place(spec)
        assert isinstance(placement, Placement)
        handle = await old.launch(spec, placement)
        state = handle.state()
        await collect(old, handle, until="INTERMEDIATE")

        # A new manager knows only what the store holds: the spec, placement and state.
        new = await kit.service()
        again = await new.reattach(spec, Placement.from_json(placement.to_json()), state)
        assert again is not None
        exit_info, records = await finish(new, again)

        assert exit_info.exit_code == 0
        assert [r["seq"] for r in records] == [0, 1, 2, 3, 4]
        assert records[-1]["type"] == "FINAL"

    kit.run(body)


def test_a_trial_that_ended_while_no_manager_watched_is_found_with_its_exit_code(
    kit: ServiceKit,
) -> None:
    async def body() -> None:
        old = await kit.service()
        spec = kit.spec(51, {"mode": "fail", "steps": 1})
        placement = old.place(spec)
        handle = await old.launch(spec, placement)  # type: ignore[arg-type]
        state = handle.state()
        await collect(old, handle, until="INTERMEDIATE")
        await asyncio.sleep(1.5)  # the trial exits 3 meanwhile, unwatched

        new = await kit.service()
        again = await new.reattach(spec, placement, state)  # type: ignore[arg-type]
        assert again is not None
        exit_info, records = await finish(new, again)
        assert exit_info.exit_code == 3
        assert [r["type"] for r in records] == ["INTERMEDIATE"]

    kit.run(body)


def test_a_trial_that_is_gone_cannot_be_reattached(kit: ServiceKit) -> None:
    async def body() -> None:
        old = await kit.service()
        spec = kit.spec(52, {"mode": "sleep", "steps": 1})
        placement = old.place(spec)
        handle = await old.launch(spec, placement)  # type: ignore[arg-type]
        state = handle.state()
        await collect(old, handle, until="INTERMEDIATE")
        await old.cancel(handle)
        await old.wait(handle)

        new = await kit.service()
        again = await new.reattach(spec, placement, state)  # type: ignore[arg-type]
        if again is not None:  # a service may have recorded how the trial was ended
            exit_info = await new.wait(again)
            assert exit_info.exit_code != 0 or exit_info.signal is not None

    kit.run(body)


# -- through the engine: budgets and deadlines the engine enforces with the service ----------


def run_engine(
    kit: ServiceKit, tmp_path: Path, trials: int, parameters: dict[str, Any], **settings: Any
) -> ExperimentStore:
    space = {"x": {"_type": "choice", "_value": [round(i / 10, 1) for i in range(trials)]}}
    fixed = {k: {"_type": "choice", "_value": [v]} for k, v in parameters.items()}
    tuner = create_tuner("GridSearch")
    tuner.update_search_space(SearchSpace.from_json({**space, **fixed}))
    exp_dir = tmp_path / "experiment"
    exp_dir.mkdir()
    store = ExperimentStore(exp_dir / "experiment.db")
    store.create_experiment("conform", {"searchSpace": space})

    async def body() -> str:
        service = await kit.service()
        engine = Engine(
            "conform",
            exp_dir,
            EngineSettings(
                trial_command=f"{kit.python} trial.py",
                code_dir=kit.code_dir,
                concurrency=2,
                max_trials=trials,
                **settings,
            ),
            store,
            service,
            tuner,
        )
        return await engine.run()

    assert kit.run(body, timeout=180) == "DONE"
    return store


def test_an_experiment_runs_to_done_on_the_service(kit: ServiceKit, tmp_path: Path) -> None:
    store = run_engine(kit, tmp_path, 4, {"steps": 2})

    trials = store.trials()
    assert [t.status for t in trials] == ["SUCCEEDED"] * 4
    assert sorted(t.final_default for t in trials) == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert len(store.metrics(metric_type="INTERMEDIATE")) == 8


def test_max_trial_duration_ends_a_trial_as_early_stopped(
    kit: ServiceKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNELAB_TIME_SCALE", "0.01")
    store = run_engine(kit, tmp_path, 2, {"mode": "sleep", "steps": 1}, max_trial_duration=100.0)

    trials = store.trials()
    assert [t.status for t in trials] == ["EARLY_STOPPED"] * 2
    assert all(t.reason == "exceeded maxTrialDuration 100s" for t in trials)
    assert all(t.end_time is not None and t.end_time - t.start_time < 20 for t in trials)  # type: ignore[operator]
