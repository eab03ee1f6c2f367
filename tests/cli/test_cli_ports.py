"""Many experiments on one machine: ports, folders, ``stop --all``, and field case B26."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Lab, process_gone

SPACE = {"x": {"_type": "uniform", "_value": [0, 1]}}
REPORT = "import tunelab\ntunelab.get_next_parameter()\ntunelab.report_final_result({k})\n"


def _free_port() -> int:
    """A random free port away from 8080-8180, where other tests' experiments listen."""
    while True:
        port = random.randint(20000, 60000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_b26_failed_create_frees_its_port_and_a_real_conflict_is_named(lab: Lab) -> None:
    port = _free_port()  # stands for 8080 (a fixed port would collide with parallel tests)
    broken = lab.write(
        SPACE,
        REPORT.format(k=1),
        name="broken",
        trainingService={"platform": "local", "maxTrialNumberPerGpu": "many"},
    )
    result = lab.cli("create", "--config", str(broken), "--port", str(port))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "trainingService" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _port_is_free(port)
    assert not lab.home.exists() or not list(lab.home.iterdir())

    result = lab.cli("stop", "--all")
    assert result.code == 0 and result.stdout.strip() == "No experiment is running."

    good = lab.write(SPACE, REPORT.format(k=1), name="good", maxTrialNumber=1)
    result = lab.cli("create", "--config", str(good), "--port", str(port))
    assert result.code == 0, result.stderr
    exp = result.stdout.split()[1]
    assert f"http://127.0.0.1:{port}" in result.stdout

    # A real conflict: the port is taken (by that experiment, or by anything else).
    result = lab.cli("create", "--config", str(good), "--port", str(port))
    assert result.code == 2
    assert result.stderr.strip() == f"tunelab: port {port} is busy; choose another with --port"
    other = _free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", other))
        squatter.listen(1)
        result = lab.tl("create", "--config", str(good), "--port", str(other))
    assert result.stderr.strip() == f"tunelab: port {other} is busy; choose another with --port"
    assert [client.id for client in _experiments()] == [exp]

    result = lab.cli("stop", "--all")
    assert result.stdout.splitlines() == [
        f"Experiment {exp} stopped (DONE).",
        f"Stopped 1 experiment: {exp}",
    ]
    assert _port_is_free(port)


def _experiments() -> list:
    from tunelab.client import all_experiments

    return all_experiments()


@pytest.mark.slow
def test_five_experiments_at_once_keep_to_their_own_ports_and_folders(lab: Lab) -> None:
    configs = [
        lab.write(
            SPACE,
            REPORT.format(k=k),
            name=f"e{k}",
            maxTrialNumber=3,
            trialConcurrency=1,
            experimentName=f"e{k}",
        )
        for k in range(5)
    ]
    # All five start at the same moment: the managers race for 8080 and the ports after it.
    starts = [
        subprocess.Popen(
            [sys.executable, "-m", "tunelab", "create", "--config", str(config)],
            env=lab.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for config in configs
    ]
    outputs = [start.communicate(timeout=120) for start in starts]
    assert [start.returncode for start in starts] == [0] * 5, outputs
    ids = [stdout.split()[1] for stdout, _ in outputs]
    assert len(set(ids)) == 5

    ports = [lab.client(exp).port for exp in ids]
    assert len(set(ports)) == 5
    for k, exp in enumerate(ids):
        profile = lab.wait_status(exp, ["DONE"])
        assert profile["name"] == f"e{k}" and profile["trialCount"] == 3
        trials = lab.client(exp).trials()
        # Each ran its own trial code, in its own folder.
        assert {t["default"] for t in trials} == {float(k)}
        folders = {p.name for p in (lab.home / exp / "trials").iterdir()}
        assert folders == {t["id"] for t in trials}

    # stop --all stops exactly the experiments whose manager runs, and says which.
    assert lab.tl("stop", f"{ids[0]}*").stdout == f"Experiment {ids[0]} stopped (DONE).\n"
    result = lab.cli("stop", "--all")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines[:-1]) == sorted(f"Experiment {exp} stopped (DONE)." for exp in ids[1:])
    assert lines[-1] == "Stopped 4 experiments: " + ", ".join(sorted(ids[1:]))
    pids = [int(p.read_text().strip()) for p in Path(lab.home).glob("*/trials/*/.pid")]
    assert all(process_gone(pid) for pid in pids)
    assert all(not client.running for client in _experiments())
