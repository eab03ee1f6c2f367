"""Fault injection at length: kill -9 the manager of real experiments 100 times, resuming each
time, and check that nothing was lost.

It runs the harness of the fault tests (``tests/faults/harness.py``, ``run_chaos``) again and
again: experiments of 20 trials (5 intermediate results each, 3 at a time, on a finite space of
24 points), each manager killed with SIGKILL at seeded random moments (a quarter of them right
after a resume, while it re-attaches its trials) and resumed with ``tunelab resume``; every
fourth kill also kills every trial process. After each experiment: all 20 trials SUCCEEDED,
ids and numbers unique and continuous, no point tried twice, every line of every trial's
metrics file stored exactly once under the attempt that wrote it, nothing left running.

Run from the repository root (``nice`` it on a shared machine)::

    nice python3 benchmarks/faults/run.py --kills 100
    nice python3 benchmarks/faults/run.py --fuzz 10    # the config fuzzer, 10x its examples

Results go to ``benchmarks/.work/faults/results.json`` (``--out``); a run that stops half-way
is taken up by the next one (finished experiments are kept, seeds go on). The figures are
printed at the end. An experiment whose checks fail keeps its folder under
``benchmarks/.work/faults/labs/`` for a look; the others are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORK = REPO / "benchmarks" / ".work" / "faults"
sys.path.insert(0, str(REPO))

from tests.faults.harness import FaultLab, run_chaos  # noqa: E402

SCALE = 0.01


def main() -> None:
    args = _parse_args()
    if args.fuzz:
        _fuzz(args.fuzz, Path(args.out).with_name("fuzz.json"))
        return
    results = _load(Path(args.out), args)
    labs = WORK / "labs"
    _clean_interrupted(labs, results)

    seed = args.seed if args.seed is not None else _next_seed(results)
    while _total(results, "kills") < args.kills:
        left = args.kills - _total(results, "kills")
        lab_dir = labs / str(seed)
        if lab_dir.exists():
            shutil.rmtree(lab_dir)
        lab_dir.mkdir(parents=True)
        lab = FaultLab(lab_dir / "home", lab_dir, SCALE)
        started = time.monotonic()
        try:
            run = run_chaos(lab, seed, min(left, args.kills_per_experiment), log=_log)
            record = run.to_json()
        except Exception as error:  # a harness failure is a finding too: keep it, go on
            record = {"seed": seed, "kills": 0, "problems": [f"{type(error).__name__}: {error}"]}
            record["seconds"] = round(time.monotonic() - started, 2)
        finally:
            left_running = lab.clean_up()
        if left_running:
            record.setdefault("problems", []).append(f"left running: {left_running}")
        results["runs"].append(record)
        _save(Path(args.out), results)
        status = "ok" if not record["problems"] else f"PROBLEMS {record['problems']}"
        _log(f"seed {seed}: {record['kills']} kills, {record.get('seconds')} s, {status}")
        if not record["problems"]:
            shutil.rmtree(lab_dir, ignore_errors=True)
        seed += 1
    _print_figures(results)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="kills in all (default 100)")
    parser.add_argument(
        "--kills-per-experiment", type=int, default=8, help="kills of one experiment at most"
    )
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: go on)")
    parser.add_argument("--out", default=str(WORK / "results.json"))
    parser.add_argument(
        "--fuzz",
        type=float,
        default=0,
        help="run the config fuzzer instead, with this many times its examples",
    )
    return parser.parse_args()


def _log(line: str) -> None:
    print(time.strftime("%H:%M:%S ") + line, flush=True)


def _load(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    if path.exists():
        results: dict[str, Any] = json.loads(path.read_text())
        _log(f"taking up {path}: {_total(results, 'kills')} kills already done")
        return results
    return {
        "command": " ".join(["benchmarks/faults/run.py", *sys.argv[1:]]),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "settings": {
            "time_scale": SCALE,
            "trials": 20,
            "concurrency": 3,
            "steps": 5,
            "kill_trials_every": 4,
            "kills_per_experiment": args.kills_per_experiment,
        },
        "runs": [],
    }


def _save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


def _next_seed(results: dict[str, Any]) -> int:
    seeds = [run["seed"] for run in results["runs"]]
    return max(seeds) + 1 if seeds else 1


def _clean_interrupted(labs: Path, results: dict[str, Any]) -> None:
    """A lab left by a run that was interrupted: end what it left running, remove it."""
    recorded = {str(run["seed"]) for run in results["runs"]}
    for lab_dir in sorted(labs.iterdir()) if labs.is_dir() else []:
        if lab_dir.name in recorded:
            continue  # a failed experiment's folder, kept on purpose
        left = FaultLab(lab_dir / "home", lab_dir, SCALE).clean_up()
        _log(f"removed the interrupted lab {lab_dir.name} ({len(left)} processes killed)")
        shutil.rmtree(lab_dir, ignore_errors=True)


def _total(results: dict[str, Any], key: str) -> int:
    return sum(int(run.get(key) or 0) for run in results["runs"])


def _figure(results: dict[str, Any], key: str) -> int:
    return sum(int((run.get("figures") or {}).get(key, 0)) for run in results["runs"])


def _print_figures(results: dict[str, Any]) -> None:
    runs = results["runs"]
    failed = [run for run in runs if run.get("problems")]
    kills = _total(results, "kills")
    survived = kills - sum(int(run.get("kills") or 0) for run in failed)
    figures = {
        "experiments": len(runs),
        "kills": kills,
        "kills survived": survived,
        "of which with every trial process killed too": _total(results, "kills_with_trials"),
        "trial processes killed": _total(results, "trial_processes_killed"),
        "trials": _figure(results, "trials"),
        "attempts (runs of a trial)": _figure(results, "attempts"),
        "metric lines checked": _figure(results, "metric_lines"),
        "experiments with a problem": len(failed),
        "hours": round(sum(float(run.get("seconds") or 0) for run in runs) / 3600, 2),
    }
    print(json.dumps(figures, indent=1))
    for run in failed:
        print(f"seed {run['seed']}: {run['problems']}")


def _fuzz(multiplier: float, out: Path) -> None:
    """The config fuzzer (tests/faults/test_config_fuzz.py) with more examples; figures."""
    report = out.with_suffix(".jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    env = dict(os.environ, TUNELAB_FUZZ_EXAMPLES=str(multiplier), TUNELAB_FUZZ_REPORT=str(report))
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:benchmark",
            "-p",
            "no:cacheprovider",
            "tests/faults/test_config_fuzz.py",
        ],
        cwd=REPO,
        env=env,
    )
    lines = (
        [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    )
    by_kind: dict[str, int] = {}
    for line in lines:
        by_kind[line["kind"]] = by_kind.get(line["kind"], 0) + 1
    figures = {
        "configs tried": len(lines),
        "through the real tunelab create": sum(1 for x in lines if "subprocess" in x["command"]),
        "exit code 2, one line, nothing left": sum(1 for x in lines if x["ok"]),
        "otherwise": sum(1 for x in lines if not x["ok"]),
        "by kind": dict(sorted(by_kind.items())),
        "pytest exit code": done.returncode,
        "seconds": round(time.monotonic() - started, 1),
    }
    out.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
