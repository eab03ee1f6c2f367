"""What the operating system refuses (a missing folder, a file where a folder should be) is a
worded one-line error with exit code 2, not Python's ``[Errno N]`` text."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import Lab

SPACE = {"x": {"_type": "uniform", "_value": [0, 1]}}
TRIAL = "import tunelab\ntunelab.get_next_parameter()\ntunelab.report_final_result(1.0)\n"


def test_a_tunelab_home_that_is_a_file(lab: Lab) -> None:
    config = lab.write(SPACE, TRIAL)
    home = lab.root / "home-file"
    home.write_text("not a folder", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "tunelab", "create", "--config", str(config)],
        env={**os.environ, "TUNELAB_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "[Errno" not in done.stderr, done.stderr
    assert f"{home}/" in done.stderr and "not a directory; check the path" in done.stderr


def test_an_export_into_a_missing_folder(lab: Lab) -> None:
    result, exp = lab.run(lab.write(SPACE, TRIAL, maxTrialNumber=1))
    assert result.code == 0, result.stderr
    target = lab.root / "no" / "such" / "export.json"
    done = lab.cli("experiment", "export", exp, "--type", "json", "--filename", str(target))
    assert done.code == 2
    assert done.stderr.count("\n") == 1 and "[Errno" not in done.stderr, done.stderr
    assert f"{target}: no such file or directory; check the path" in done.stderr
