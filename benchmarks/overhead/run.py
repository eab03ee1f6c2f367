"""Per-trial overhead: tunelab and NNI 3.0 against the cost of starting the trial by hand.

Every arm runs ``trial.py`` (read the parameters, report ``x``, exit) ``--trials`` times,
``--concurrency`` at a time, in one run of this script, so that the ratios between arms hold
on a noisy machine:

* ``floor``: the trial started standalone by this script, with no experiment, using the
  interpreter and ``PYTHONPATH`` of tunelab's trialCommand; beside it the bare interpreter,
  ``python -c pass`` and ``python -c 'import json'``. With the ``nni`` arm, also ``nni-floor``:
  the same script standalone with NNI's venv interpreter, which imports the real NNI. The
  floors run before and after each experiment arm; an experiment's ratio is taken against the
  mean of the floors on either side of it.
* ``tunelab``: ``tunelab create --config ... --foreground``, timed from start to exit.
* ``nni``: ``nnictl create`` in a separate venv (made here when missing), timed from the
  start of ``nnictl create`` until ``check-status`` says DONE; ``nnictl stop`` is timed apart.

Run from the repository root::

    python3 benchmarks/overhead/run.py --trials 200 --concurrency 2 --arms floor,tunelab,nni

Results go to ``--out`` (JSON) and a Markdown table to stdout. Scratch files (configs,
experiment folders, the NNI venv) live under ``benchmarks/.work/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORK = REPO / "benchmarks" / ".work"
DEFAULT_NNI_VENV = WORK / "nni-venv"
ARMS = ("floor", "tunelab", "nni")
# NNI 3.0's nnictl imports pkg_resources, which setuptools 81 removed.
NNI_REQUIREMENTS = ["nni==3.0", "setuptools<81"]
NNI_FINAL = ("DONE", "ERROR", "STOPPED")


def main() -> None:
    args = _parse_args()
    arms = _arms(args.arms)
    run_dir = WORK / "overhead" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)

    nni_python = None
    if "nni" in arms:
        nni_python = _ensure_nni_venv(Path(args.nni_venv))

    results: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": _machine(),
        "settings": {
            "trials": args.trials,
            "concurrency": args.concurrency,
            "arms": arms,
            "repeat": args.repeat,
            "nni_floor_trials": args.nni_floor_trials,
            "interpreter": sys.executable,
            "nni_interpreter": str(nni_python) if nni_python else None,
        },
        "rounds": [],
    }
    for round_index in range(args.repeat):
        results["rounds"].append(_run_round(round_index, arms, args, run_dir, nni_python))
        _summarize(results)
        _write(Path(args.out), results)

    results["machine"]["load_after"] = os.getloadavg()
    _write(Path(args.out), results)
    print(_table(results))
    print(f"\nresults: {args.out}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="trials per arm (200)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time (2)")
    parser.add_argument(
        "--arms", default=",".join(ARMS), help=f"comma-separated, from {','.join(ARMS)}"
    )
    parser.add_argument(
        "--nni-venv",
        default=str(DEFAULT_NNI_VENV),
        help="venv holding NNI 3.0; created with pip when missing (%(default)s)",
    )
    parser.add_argument(
        "--nni-floor-trials",
        type=int,
        default=50,
        help="standalone runs for nni-floor; each pays NNI's 1-2 s import (50)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; each runs every arm once (1)"
    )
    parser.add_argument(
        "--out", default=str(WORK / "overhead" / "results.json"), help="JSON results file"
    )
    args = parser.parse_args()
    if args.trials < 1 or args.concurrency < 1 or args.repeat < 1:
        parser.error("--trials, --concurrency and --repeat must be at least 1")
    return args


def _arms(text: str) -> list[str]:
    arms = [arm.strip() for arm in text.split(",") if arm.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        sys.exit(f"run.py: unknown arm(s) {unknown}; choose from {list(ARMS)}")
    return arms


# -- one round --------------------------------------------------------------------------------


def _run_round(
    index: int,
    arms: list[str],
    args: argparse.Namespace,
    run_dir: Path,
    nni_python: Path | None,
) -> dict[str, Any]:
    """Run each experiment arm once, with the floors measured before and after each."""
    experiments = [arm for arm in arms if arm != "floor"]
    # Alternate the order from round to round so that neither experiment always goes first.
    if index % 2:
        experiments.reverse()
    round_dir = run_dir / f"round{index}"
    floors: list[dict[str, Any]] = []
    measured: dict[str, Any] = {}

    with_floor = "floor" in arms
    if with_floor or not experiments:
        floors.append(_floors(args, nni_python))
    for arm in experiments:
        if arm == "tunelab":
            measured[arm] = _run_tunelab(args, round_dir / "tunelab")
        else:
            assert nni_python is not None
            measured[arm] = _run_nni(args, round_dir / "nni", nni_python)
        if with_floor:
            floors.append(_floors(args, nni_python))

    return {"index": index, "floors": floors, "experiments": measured}


def _floors(args: argparse.Namespace, nni_python: Path | None) -> dict[str, Any]:
    """Start the floor commands ``--trials`` times each, ``--concurrency`` at a time."""
    python = sys.executable
    tunelab_env = _standalone_env()
    tunelab_env["PYTHONPATH"] = os.pathsep.join(
        path for path in (_nni_shim_path(), os.environ.get("PYTHONPATH", "")) if path
    )
    floors = {
        "python -c pass": _repeat([python, "-c", "pass"], _standalone_env(), args),
        "python -c 'import json'": _repeat([python, "-c", "import json"], _standalone_env(), args),
        "floor": _repeat([python, "trial.py"], tunelab_env, args),
    }
    if nni_python is not None:
        floors["nni-floor"] = _repeat(
            [str(nni_python), "trial.py"], _standalone_env(), args, args.nni_floor_trials
        )
    for name, result in floors.items():
        print(f"  {name}: {result['per_trial']:.4f} s per trial", flush=True)
    return floors


def _repeat(
    command: list[str], env: dict[str, str], args: argparse.Namespace, count: int | None = None
) -> dict[str, Any]:
    """Run ``command`` ``count`` times, ``--concurrency`` at a time: a new one as one ends."""
    count = args.trials if count is None else count
    left = [count]
    lock = threading.Lock()
    failures: list[int] = []

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            done = subprocess.run(
                command,
                cwd=HERE,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if done.returncode:
                failures.append(done.returncode)

    workers = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    start = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    wall = time.perf_counter() - start

    if failures:
        raise RuntimeError(f"{command}: {len(failures)} of {count} runs failed: {failures[:5]}")
    return {"runs": count, "wall": wall, "per_trial": wall / count}


def _standalone_env() -> dict[str, str]:
    """This environment without any variable that would make a trial think it is managed."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NNI_", "TUNELAB_")) and key != "PYTHONPATH"
    }


def _nni_shim_path() -> str:
    from tunelab.compat import nni_path

    return nni_path()


# -- tunelab ----------------------------------------------------------------------------------


def _run_tunelab(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """``tunelab create --foreground`` from start to exit, and what its store says."""
    folder.mkdir(parents=True)
    config = _write_config(folder, sys.executable, args)
    env = _standalone_env()
    env["TUNELAB_HOME"] = str(folder / "home")
    tunelab = [sys.executable, "-m", "tunelab"]  # what the installed `tunelab` runs
    command = [*tunelab, "create", "--config", str(config), "--port", str(_free_port())]
    command.append("--foreground")
    print(f"tunelab: {args.trials} trials ...", flush=True)

    start = time.perf_counter()
    started_at = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (folder / "create.out").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode:
        raise RuntimeError(f"tunelab create exited {done.returncode}:\n{done.stderr[-2000:]}")

    match = re.search(r"Experiment (\w+) started", done.stdout)
    result: dict[str, Any] = {
        "wall": wall,
        "per_trial": wall / args.trials,
        "cli_started_at": started_at,
        "experiment_id": match.group(1) if match else None,
    }
    if match:
        result.update(_tunelab_store_view(tunelab, match.group(1), env, args))
    if "first_trial_start" in result:
        result["start_to_first_trial"] = result["first_trial_start"] - started_at
    print(f"  tunelab: {wall:.2f} s, {result['per_trial']:.4f} s per trial", flush=True)
    return result


def _tunelab_store_view(
    tunelab: list[str], experiment_id: str, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Status and trial times from ``tunelab experiment status`` and ``tunelab trial ls``."""
    view: dict[str, Any] = {}
    status = _json_output([*tunelab, "experiment", "status", experiment_id], env)
    trials = _json_output([*tunelab, "trial", "ls", experiment_id, "--json"], env)
    if isinstance(status, dict):
        view["status"] = status.get("status")
        start, end = (
            _first(status, "startTime", "start_time"),
            _first(status, "endTime", "end_time"),
        )
        if isinstance(start, (int, float)) and isinstance(end, (int, float)):
            view["manager_wall"] = _seconds(end) - _seconds(start)
    if isinstance(trials, list):
        view.update(_trial_times(trials, args, "startTime", "endTime"))
    return view


def _json_output(command: list[str], env: dict[str, str]) -> Any:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        print(f"  note: {' '.join(command[3:])} exited {done.returncode}", flush=True)
        return None
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return None


def _first(record: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if record.get(key) is not None:
            return record[key]
    return None


# -- NNI --------------------------------------------------------------------------------------


def _run_nni(args: argparse.Namespace, folder: Path, python: Path) -> dict[str, Any]:
    """``nnictl create`` until ``check-status`` says DONE; then ``nnictl stop``, timed apart."""
    folder.mkdir(parents=True)
    config = _write_config(folder, python, args)
    nnictl = str(python.parent / "nnictl")
    env = _standalone_env()
    env["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", "")])
    port = _free_port()
    print(f"nni: {args.trials} trials on port {port} ...", flush=True)

    start = time.perf_counter()
    started_at = time.time()
    created = subprocess.run(
        [nnictl, "create", "--config", str(config), "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
    )
    create_wall = time.perf_counter() - start
    (folder / "create.out").write_text(created.stdout + created.stderr, encoding="utf-8")
    if created.returncode:
        raise RuntimeError(f"nnictl create exited {created.returncode}:\n{created.stderr}")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", created.stdout)
    match = re.search(r"nnictl stop (\w+)", plain)
    experiment_id = match.group(1) if match else None

    status = _wait_nni(port, timeout=60 + 30 * args.trials)
    wall = time.perf_counter() - start
    trials = _nni_get(port, "trial-jobs")

    stop_start = time.perf_counter()
    if experiment_id is None:
        # Never `nnictl stop --all`: it would stop experiments that are not ours.
        raise RuntimeError(f"no experiment id in nnictl's output; stop it by hand:\n{plain}")
    subprocess.run([nnictl, "stop", experiment_id], env=env, capture_output=True)
    stop_wall = time.perf_counter() - stop_start

    result: dict[str, Any] = {
        "wall": wall,
        "per_trial": wall / args.trials,
        "status": status["status"],
        "errors": status.get("errors"),
        "experiment_id": experiment_id,
        "create_wall": create_wall,
        "stop_wall": stop_wall,
    }
    if isinstance(trials, list):
        result.update(_trial_times(trials, args, "startTime", "endTime"))
    if "first_trial_start" in result:
        result["start_to_first_trial"] = result["first_trial_start"] - started_at
    print(f"  nni: {wall:.2f} s, {result['per_trial']:.4f} s per trial", flush=True)
    return result


def _wait_nni(port: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {"status": "UNREACHABLE"}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status = _nni_get(port, "check-status")
        if status.get("status") in NNI_FINAL:
            return status
        time.sleep(0.1)
    raise RuntimeError(f"NNI did not finish within {timeout:.0f} s; last status {status}")


def _nni_get(port: int, path: str) -> Any:
    # NNI's REST server binds every interface; only ever talk to it on loopback.
    url = f"http://127.0.0.1:{port}/api/v1/nni/{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _ensure_nni_venv(venv: Path) -> Path:
    """Return the venv's python, creating the venv with NNI 3.0 when it has no nnictl."""
    python = venv / "bin" / "python"
    if (venv / "bin" / "nnictl").exists():
        return python
    print(f"creating {venv} with {' '.join(NNI_REQUIREMENTS)} (about a minute) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *NNI_REQUIREMENTS], check=True)
    return python


# -- shared -----------------------------------------------------------------------------------


def _write_config(folder: Path, python: Path | str, args: argparse.Namespace) -> Path:
    """The shared config.yml with this arm's interpreter, budget and folders filled in."""
    import yaml

    config = yaml.safe_load((HERE / "config.yml").read_text(encoding="utf-8"))
    config["searchSpaceFile"] = str(HERE / config["searchSpaceFile"])
    config["trialCommand"] = f"{python} trial.py"
    config["trialCodeDirectory"] = str(HERE)
    config["trialConcurrency"] = args.concurrency
    config["maxTrialNumber"] = args.trials
    config["experimentWorkingDirectory"] = str(folder / "experiments")
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _trial_times(
    trials: list[dict[str, Any]], args: argparse.Namespace, start_key: str, end_key: str
) -> dict[str, Any]:
    """How long trials ran and how long a slot stood idle between them."""
    spans = []
    for trial in trials:
        start, end = trial.get(start_key), trial.get(end_key)
        if isinstance(start, (int, float)) and isinstance(end, (int, float)):
            spans.append((_seconds(start), _seconds(end)))
    succeeded = sum(
        1 for trial in trials if str(trial.get("status", "")).upper() in ("SUCCEEDED", "DONE")
    )
    if not spans:
        return {"trials_recorded": len(trials), "trials_succeeded": succeeded}

    first_start = min(start for start, _ in spans)
    last_end = max(end for _, end in spans)
    busy = sum(end - start for start, end in spans)
    # Slot time not spent inside a trial, per trial: the engine's own cost between trials.
    idle = (args.concurrency * (last_end - first_start) - busy) / len(spans)
    return {
        "trials_recorded": len(trials),
        "trials_succeeded": succeeded,
        "trial_duration_mean": busy / len(spans),
        "slot_idle_per_trial": idle,
        "first_start_to_last_end": last_end - first_start,
        "first_trial_start": first_start,
    }


def _seconds(stamp: float) -> float:
    """Unix seconds from seconds or milliseconds (NNI stores milliseconds)."""
    return stamp / 1000 if stamp > 1e11 else stamp


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_before": os.getloadavg(),
        "tunelab_commit": _git("rev-parse", "--short", "HEAD"),
    }


def _git(*args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or None


# -- summary ----------------------------------------------------------------------------------


def _summarize(results: dict[str, Any]) -> None:
    """Per-trial figures and ratios, each ratio taken within a round, median over rounds."""
    per_round: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}

    def add(table: dict[str, list[float]], key: str, value: float) -> None:
        table.setdefault(key, []).append(value)

    for round_ in results["rounds"]:
        floors = round_["floors"]
        for name in floors[0] if floors else []:
            add(per_round, name, statistics.mean(f[name]["per_trial"] for f in floors))
        for arm, measured in round_["experiments"].items():
            add(per_round, arm, measured["per_trial"])
            position = list(round_["experiments"]).index(arm)
            around = floors[position : position + 2]
            if around:
                floor = statistics.mean(f["floor"]["per_trial"] for f in around)
                add(ratios, f"{arm} / floor", measured["per_trial"] / floor)
                if "nni-floor" in around[0]:
                    nni_floor = statistics.mean(f["nni-floor"]["per_trial"] for f in around)
                    add(ratios, f"{arm} / nni-floor", measured["per_trial"] / nni_floor)
        if {"tunelab", "nni"} <= set(round_["experiments"]):
            nni, tunelab = round_["experiments"]["nni"], round_["experiments"]["tunelab"]
            add(ratios, "nni / tunelab", nni["per_trial"] / tunelab["per_trial"])

    results["summary"] = {
        "per_trial": {name: statistics.median(values) for name, values in per_round.items()},
        "ratios": {name: statistics.median(values) for name, values in ratios.items()},
    }


def _table(results: dict[str, Any]) -> str:
    summary = results["summary"]
    trials = results["settings"]["trials"]
    lines = [
        "| arm | runs | wall per trial | ratio to floor |",
        "|---|---|---|---|",
    ]
    floor = summary["per_trial"].get("floor")
    for name, per_trial in summary["per_trial"].items():
        runs = results["settings"]["nni_floor_trials"] if name == "nni-floor" else trials
        ratio = summary["ratios"].get(f"{name} / floor")
        if ratio is None and floor:
            ratio = per_trial / floor
        lines.append(f"| {name} | {runs} | {per_trial:.4f} s | {ratio:.2f}x |")
    for name, ratio in summary["ratios"].items():
        lines.append(f"\n{name}: {ratio:.2f}")
    return "\n".join(lines)


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
