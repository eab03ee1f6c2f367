"""``import tunelab`` must stay cheap: it is what every trial process pays before its work.

NNI's ``import nni`` takes about 1.3 s. Here the trial side loads the standard library only;
the checks below catch an accidental heavy import (numpy, pydantic, the engine) for certain
through ``sys.modules``, and a slow module through ``-X importtime``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tunelab.compat import nni_path

# Self time of tunelab's own modules, summed; a few ms in practice.
MAX_SELF_MS = 50
# Everything `import tunelab` loads, stdlib included; ~20 ms in practice, numpy alone is more
# than 60 ms and pydantic more than 100 ms.
MAX_CUMULATIVE_MS = 200
HEAVY = ["numpy", "pydantic", "yaml", "fastapi", "starlette", "uvicorn", "httpx", "click",
         "rich", "psutil", "scipy", "sklearn", "torch", "sqlite3", "asyncio"]  # fmt: skip

LIST_NEW_MODULES = """
import json, sys
before = set(sys.modules)
import {module}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _clean_environ() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TUNELAB_", "NNI_")) and key != "PYTHONPATH"
    }


def _run(code: str, *python_args: str, pythonpath: str | None = None) -> str:
    env = _clean_environ()
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, *python_args, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout + done.stderr


def _import_times(module: str, pythonpath: str | None = None) -> dict[str, tuple[int, int]]:
    """Module name → (self µs, cumulative µs), from the best of three runs."""
    best: dict[str, tuple[int, int]] = {}
    for _ in range(3):
        out = _run(f"import {module}", "-X", "importtime", pythonpath=pythonpath)
        for line in out.splitlines():
            if not line.startswith("import time:") or "|" not in line or "self" in line:
                continue
            own, cumulative, name = line[len("import time:") :].split("|")
            key = name.strip()
            sample = (int(own), int(cumulative))
            best[key] = min(best.get(key, sample), sample, key=lambda pair: pair[1])
    return best


def _new_modules(module: str, pythonpath: str | None = None) -> list[str]:
    out = _run(LIST_NEW_MODULES.format(module=module), pythonpath=pythonpath)
    modules: list[str] = json.loads(out)
    return modules


@pytest.mark.parametrize(("module", "pythonpath"), [("tunelab", None), ("nni", nni_path())])
def test_import_loads_the_standard_library_only(module: str, pythonpath: str | None) -> None:
    new = _new_modules(module, pythonpath)

    foreign = [
        name
        for name in new
        if name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] not in ("tunelab", "nni")
    ]
    assert foreign == []
    assert [name for name in new if name.split(".")[0] in HEAVY] == []
    tunelab_modules = [name for name in new if name.startswith("tunelab")]
    assert all(name in ("tunelab", "tunelab.trial") or name.startswith("tunelab.trial.")
               for name in tunelab_modules), tunelab_modules  # fmt: skip
    assert "tunelab.engine" not in new


def test_importing_tunelab_compat_does_not_import_the_shim() -> None:
    new = _new_modules("tunelab.compat")

    assert not [name for name in new if "nni" in name.split(".")]


@pytest.mark.parametrize(("module", "pythonpath"), [("tunelab", None), ("nni", nni_path())])
def test_import_takes_milliseconds(module: str, pythonpath: str | None) -> None:
    times = _import_times(module, pythonpath)

    ours = {
        name: own for name, (own, _) in times.items() if name.split(".")[0] in ("tunelab", "nni")
    }
    assert module in times
    assert sum(ours.values()) / 1000 < MAX_SELF_MS, ours
    assert times[module][1] / 1000 < MAX_CUMULATIVE_MS, times[module]
