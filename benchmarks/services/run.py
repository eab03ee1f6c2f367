"""Per-trial overhead on each training service, and tunelab on Ray beside Ray Tune.

Every arm runs the same no-op trial (``benchmarks/overhead/trial.py``: read the parameters,
report ``x``, exit) ``--trials`` times, ``--concurrency`` at a time, in one run of this script:

* ``local``: ``tunelab create --foreground`` with ``platform: local``.
* ``remote``: the same with ``platform: remote`` on two OpenSSH servers that this script starts
  on loopback (users tl-alpha by key and tl-beta by password, as the tests do; needs root).
* ``ray``: the same with ``platform: ray`` on a local two-node Ray cluster (a head with 2 CPUs
  and a worker with 1, started by this script), one CPU per trial.
* ``raytune``: Ray Tune on the same cluster, running the same trial script as a subprocess of
  a function trainable (parameters written where the script reads them, its final result
  passed to ``tune.report``), one CPU per trial, random search, Ray Tune's defaults otherwise
  (``pip install 'ray[tune]'``).

Each arm is timed from the start of its command to its end, start-up included (the tunelab
manager, Ray Tune's ``ray.init``), and divided by the trial count. The cluster and the sshd
servers are started before the arms and shared; their start-up is not counted.

Run from the repository root (as root, for the sshd users)::

    python3 benchmarks/services/run.py --trials 200 --concurrency 2 --arms local,remote,ray,raytune

Results go to ``benchmarks/.work/services/results.json`` and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TRIAL_DIR = REPO / "benchmarks" / "overhead"
WORK = REPO / "benchmarks" / ".work" / "services"
ARMS = ("local", "remote", "ray", "raytune")

sys.path.insert(0, str(REPO))


def main() -> None:
    args = _parse_args()
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise SystemExit(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    run_dir = WORK / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)

    ssh_lab = cluster = None
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "nproc": os.cpu_count(),
            "load_before": os.getloadavg(),
        },
        "settings": {"trials": args.trials, "concurrency": args.concurrency, "arms": arms},
        "arms": {},
    }
    try:
        if "remote" in arms:
            from tests.services.sshd import start_lab

            ssh_lab = start_lab()
        if "ray" in arms or "raytune" in arms:
            from tests.services.ray_cluster import start_cluster

            cluster = start_cluster()
        for arm in arms:
            folder = run_dir / arm
            folder.mkdir()
            print(f"{arm}: {args.trials} trials ...", flush=True)
            if arm == "raytune":
                assert cluster is not None
                measured = _run_raytune(args, folder, cluster.address)
            else:
                section = _service_section(arm, ssh_lab, cluster)
                measured = _run_tunelab(args, folder, section)
            measured["per_trial"] = measured["wall"] / args.trials
            results["arms"][arm] = measured
            print(
                f"  {arm}: {measured['wall']:.2f} s, {measured['per_trial']:.4f} s per trial",
                flush=True,
            )
    finally:
        if cluster is not None:
            from tests.services.ray_cluster import stop_cluster

            stop_cluster(cluster)
        if ssh_lab is not None:
            ssh_lab.close()

    _summarize(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(_table(results))
    print(f"\nresults: {out}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="trials per arm (200)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time (2)")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms")
    parser.add_argument("--out", default=str(WORK / "results.json"), help="results JSON")
    return parser.parse_args()


def _service_section(arm: str, ssh_lab: Any, cluster: Any) -> dict[str, Any]:
    if arm == "local":
        return {"platform": "local"}
    if arm == "remote":
        return {
            "platform": "remote",
            "machineList": [
                {
                    "host": "127.0.0.1",
                    "port": ssh_lab.alpha.port,
                    "user": "tl-alpha",
                    "sshKeyFile": str(ssh_lab.plain_key),
                },
                {
                    "host": "127.0.0.1",
                    "port": ssh_lab.beta.port,
                    "user": "tl-beta",
                    "password": ssh_lab.password,
                },
            ],
        }
    return {"platform": "ray", "address": cluster.address, "trialCpuNumber": 1}


def _run_tunelab(
    args: argparse.Namespace, folder: Path, section: dict[str, Any]
) -> dict[str, Any]:
    config = {
        "experimentName": f"services-{section['platform']}",
        "searchSpace": {"x": {"_type": "uniform", "_value": [0, 1]}},
        "trialCommand": "python3 trial.py"
        if section["platform"] == "remote"
        else f"{sys.executable} trial.py",
        "trialCodeDirectory": str(TRIAL_DIR),
        "trialConcurrency": args.concurrency,
        "maxTrialNumber": args.trials,
        "tuner": {"name": "Random"},
        "trainingService": section,
    }
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNELAB_", "NNI_"))}
    env["TUNELAB_HOME"] = str(folder / "home")
    env.pop("SSH_AUTH_SOCK", None)
    command = [
        sys.executable,
        "-m",
        "tunelab",
        "create",
        "--config",
        str(path),
        "--port",
        str(_free_port()),
        "--foreground",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (folder / "create.out").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode:
        raise RuntimeError(f"tunelab create exited {done.returncode}:\n{done.stderr[-2000:]}")
    experiment = done.stdout.split()[1]
    listed = subprocess.run(
        [sys.executable, "-m", "tunelab", "trial", "ls", experiment, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    trials = json.loads(listed.stdout)
    succeeded = sum(1 for t in trials if t["status"] == "SUCCEEDED")
    if section["platform"] == "remote":
        _remove_remote_folders(experiment)
    return {"wall": wall, "trials": len(trials), "succeeded": succeeded}


def _remove_remote_folders(experiment: str) -> None:
    import pwd
    import shutil

    for user in ("tl-alpha", "tl-beta"):
        home = Path(pwd.getpwnam(user).pw_dir)
        shutil.rmtree(home / "tunelab-experiments" / experiment, ignore_errors=True)


def _run_raytune(args: argparse.Namespace, folder: Path, address: str) -> dict[str, Any]:
    command = [
        sys.executable,
        str(HERE / "raytune_arm.py"),
        "--address",
        address,
        "--trials",
        str(args.trials),
        "--concurrency",
        str(args.concurrency),
        "--folder",
        str(folder),
        "--trial-dir",
        str(TRIAL_DIR),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (folder / "raytune.out").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode:
        raise RuntimeError(f"the Ray Tune arm exited {done.returncode}:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall": wall, **report}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _summarize(results: dict[str, Any]) -> None:
    arms = results["arms"]
    ratios = {}
    if "local" in arms:
        for arm in ("remote", "ray"):
            if arm in arms:
                ratios[f"{arm} / local"] = arms[arm]["per_trial"] / arms["local"]["per_trial"]
    if "ray" in arms and "raytune" in arms:
        ratios["ray / raytune"] = arms["ray"]["per_trial"] / arms["raytune"]["per_trial"]
    results["ratios"] = ratios


def _table(results: dict[str, Any]) -> str:
    lines = ["| arm | trials | succeeded | wall | per trial |", "|---|---|---|---|---|"]
    for arm, measured in results["arms"].items():
        lines.append(
            f"| {arm} | {measured['trials']} | {measured['succeeded']} | "
            f"{measured['wall']:.1f} s | {measured['per_trial']:.4f} s |"
        )
    for name, ratio in results["ratios"].items():
        lines.append(f"\n{name}: {ratio:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
