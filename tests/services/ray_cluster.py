"""A real local Ray cluster for the tests: a head and one worker node on loopback.

The head has 2 CPUs and no GPU, the worker 1 CPU and one GPU that exists only as a resource
label (``ray start --num-gpus=1`` on a machine without GPUs), each with a 100 MB object store,
so that the cluster fits a 2-core machine. Each node has a temporary folder of its own, and
the cluster is stopped by ending exactly the processes that name those folders (and their
children): ``ray stop`` would end every Ray process on the machine.

Starting Ray costs several seconds of CPU, so one cluster serves the whole session; under
pytest-xdist the workers share it (a lock file and a count of users in the session's shared
temporary folder), and the last one to finish stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

OBJECT_STORE_BYTES = 100 * 1000 * 1000
HEAD_CPUS = 2
WORKER_CPUS = 1
WORKER_GPUS = 1
# Ray 2.5x turns token authentication on for a head when ~/.ray/auth_token exists (a local
# ray.init() writes one) but not for the nodes joining it: say the mode everywhere.
AUTH_MODE = "disabled"


@dataclass
class RayCluster:
    address: str
    temp_dirs: list[str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        ["ray", "start", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def start_cluster() -> RayCluster:
    # Short folders: Ray's socket paths live inside them and must stay under ~100 characters.
    head_dir = tempfile.mkdtemp(prefix="tlray-head-", dir="/tmp")
    worker_dir = tempfile.mkdtemp(prefix="tlray-node-", dir="/tmp")
    cluster = RayCluster("", [head_dir, worker_dir])
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE=AUTH_MODE)
    port = _free_port()
    common = ["--node-ip-address=127.0.0.1", f"--object-store-memory={OBJECT_STORE_BYTES}"]
    try:
        _ray_start(
            [
                "--head",
                f"--port={port}",
                f"--num-cpus={HEAD_CPUS}",
                "--num-gpus=0",
                "--include-dashboard=false",
                f"--ray-client-server-port={_free_port()}",
                f"--dashboard-port={_free_port()}",
                f"--temp-dir={head_dir}",
                "--disable-usage-stats",
                *common,
            ],
            env,
        )
        cluster.address = f"127.0.0.1:{port}"
        _ray_start(
            [
                f"--address={cluster.address}",
                f"--num-cpus={WORKER_CPUS}",
                f"--num-gpus={WORKER_GPUS}",
                f"--temp-dir={worker_dir}",
                "--disable-usage-stats",
                *common,
            ],
            env,
        )
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def cluster_processes(cluster: RayCluster) -> list[psutil.Process]:
    """The cluster's processes: those naming one of its folders, and their descendants."""
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if any(folder in cmdline for folder in cluster.temp_dirs):
            found[process.pid] = process
            with contextlib.suppress(psutil.Error):
                for child in process.children(recursive=True):
                    found[child.pid] = child
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_cluster(cluster: RayCluster) -> None:
    processes = cluster_processes(cluster)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    for folder in cluster.temp_dirs:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _alive(cluster: RayCluster) -> bool:
    host, _, port = cluster.address.partition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """The session's Ray cluster (skipped when Ray is not installed)."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'tunelab[ray]'")
    saved_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = AUTH_MODE  # the tests' own connections to the cluster
    # Under xdist, the workers' temporary folders share a parent that is this session's own.
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    state_file = shared / "tunelab-ray-cluster.json"
    with _locked(shared / "tunelab-ray-cluster.lock"):
        state = json.loads(state_file.read_text()) if state_file.exists() else None
        cluster = RayCluster(state["address"], state["tempDirs"]) if state else None
        if cluster is None or not _alive(cluster):
            started = time.monotonic()
            cluster = start_cluster()
            print(
                f"Ray cluster at {cluster.address} started in {time.monotonic() - started:.1f} s"
            )
            state = {"address": cluster.address, "tempDirs": cluster.temp_dirs, "users": 0}
        state["users"] += 1
        state_file.write_text(json.dumps(state))
    try:
        yield cluster
    finally:
        with _locked(shared / "tunelab-ray-cluster.lock"):
            state = json.loads(state_file.read_text())
            state["users"] -= 1
            if state["users"] <= 0:
                stop_cluster(cluster)
                state_file.unlink()
            else:
                state_file.write_text(json.dumps(state))
        if saved_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_mode
