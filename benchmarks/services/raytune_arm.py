"""The Ray Tune arm of benchmarks/services/run.py, in a process of its own.

Ray Tune runs the same trial script as tunelab does, as a subprocess of a function trainable:
the trainable writes the parameters where the script reads them (tunelab's trial protocol,
with tunelab's ``nni`` module on ``PYTHONPATH``, as a tunelab training service would), runs it,
reads its final result back and reports it to Tune. Random search (Tune's default), one CPU per
trial, ``max_concurrent_trials`` set to the concurrency, everything else as Tune sets it.
Prints one JSON line: the trial count and how many reported a result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

from tunelab.compat import nni_path
from tunelab.trial import METRICS_FILE, read_metrics, trial_env, write_parameters


def trainable(config: dict[str, Any]) -> None:
    trial_dir = tempfile.mkdtemp(prefix="raytune-trial-")
    write_parameters(trial_dir, {"x": config["x"]}, parameter_id=0)
    env = dict(os.environ)
    env.update(
        trial_env(experiment_id="raytune", trial_id="t", sequence_id=0, trial_dir=trial_dir)
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (nni_path(), env.get("PYTHONPATH")) if p)
    subprocess.run(
        [config["python"], "trial.py"],
        cwd=config["code_dir"],
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    records, _ = read_metrics(Path(trial_dir) / METRICS_FILE)
    final = [r["value"] for r in records if r["type"] == "FINAL"]
    tune.report({"x": final[0] if final else float("nan")})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--trial-dir", required=True)
    args = parser.parse_args()

    ray.init(address=args.address, log_to_driver=False)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={
            "x": tune.uniform(0, 1),
            "python": sys.executable,
            "code_dir": args.trial_dir,
        },
        tune_config=tune.TuneConfig(
            num_samples=args.trials, max_concurrent_trials=args.concurrency
        ),
        run_config=tune.RunConfig(
            storage_path=str(Path(args.folder).resolve() / "ray_results"),
            name="raytune",
            verbose=0,
        ),
    )
    results = tuner.fit()
    reported = sum(1 for result in results if result.metrics and "x" in result.metrics)
    print(json.dumps({"trials": len(results), "succeeded": reported}))


if __name__ == "__main__":
    main()
