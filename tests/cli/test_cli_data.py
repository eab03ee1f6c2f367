"""Experiment data through the real CLI: export (JSON and CSV, intermediate results), import
into another experiment's tuner, save and load, delete."""

from __future__ import annotations

import csv
import io
import json
import shutil
from typing import Any

import pytest

from tests.conftest import Lab, gated_trial, process_gone

SPACE = {"x": {"_type": "uniform", "_value": [0, 1]}}
LETTERS = {"c": {"_type": "choice", "_value": ["a", "b", "c", "d"]}}
SCORE_LETTER = """
import tunelab
p = tunelab.get_next_parameter()
tunelab.report_final_result({"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}[p["c"]])
"""


def _refuse(name: str) -> float:
    raise AssertionError(f"not strict JSON: {name}")


def _error(result: Any) -> str:
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    return str(line)


def test_export_json_and_csv_write_nan_and_infinity_the_same_way(lab: Lab) -> None:
    trial = """
import tunelab
p = tunelab.get_next_parameter()
tunelab.report_intermediate_result(0.25)
tunelab.report_intermediate_result(float("nan"))
tunelab.report_final_result({"default": p["x"], "loss": float("nan"), "big": float("inf")})
"""
    config = lab.write(SPACE, trial, maxTrialNumber=3)
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    json_path, csv_path = lab.root / "e.json", lab.root / "e.csv"

    result = lab.cli("experiment", "export", exp, "-t", "json", "-f", str(json_path), "-i")
    assert result.code == 0 and result.stdout.strip() == f"Exported to {json_path}"
    document = json.loads(json_path.read_text(), parse_constant=_refuse)
    assert document["experiment"]["id"] == exp and len(document["trials"]) == 3
    for row in document["trials"]:
        assert row["value"] == {"default": row["default"], "loss": "NaN", "big": "Infinity"}
        assert row["intermediate"] == [0.25, "NaN"]
        assert row["default"] == row["parameters"]["x"]

    assert lab.tl("experiment", "export", exp, "-t", "csv", "-f", str(csv_path), "-i").code == 0
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert len(rows) == 3
    by_id = {row["id"]: row for row in document["trials"]}
    for row in rows:
        exported = by_id[row["id"]]
        assert float(row["default"]) == exported["default"]
        assert float(row["param.x"]) == exported["parameters"]["x"]
        # The same words for the same values in both formats.
        assert (row["metric.loss"], row["metric.big"]) == ("NaN", "Infinity")
        assert json.loads(row["intermediate"]) == exported["intermediate"]

    plain = lab.root / "plain.csv"
    assert lab.tl("experiment", "export", exp, "-t", "csv", "-f", str(plain)).code == 0
    assert "intermediate" not in plain.read_text().splitlines()[0]
    assert "Invalid value for '--type'" in lab.tl("experiment", "export", exp, "-t", "xml",
                                                   "-f", str(plain)).stderr  # fmt: skip


def _letters_done(lab: Lab, name: str, tuner: str, trials: int) -> str:
    config = lab.write(
        LETTERS,
        SCORE_LETTER,
        name=name,
        maxTrialNumber=trials,
        trialConcurrency=1,
        tuner={"name": tuner},
    )
    exp = lab.start(config)
    lab.wait_status(exp, ["DONE"])
    return exp


@pytest.mark.parametrize("tuner", ["GridSearch", "Random"])
@pytest.mark.parametrize("form", ["nni", "tunelab export"])
def test_import_feeds_another_experiments_tuner_which_skips_those_points(
    lab: Lab, tuner: str, form: str
) -> None:
    source = _letters_done(lab, "source", tuner, 4)
    exported = lab.root / "source.json"
    assert lab.tl("experiment", "export", source, "-t", "json", "-f", str(exported)).code == 0
    assert lab.tl("stop", source).code == 0

    # The target tried one point and is DONE with its manager still serving.
    target = _letters_done(lab, "target", tuner, 1)
    (first,) = lab.client(target).trials()
    tried = first["parameters"]["c"]
    if form == "nni":
        others = [letter for letter in "abcd" if letter != tried]
        imported, left = others[:2], others[2]
        records = [{"parameter": {"c": letter}, "value": 0.5} for letter in imported]
        # Two that do not fit the space: a value it does not hold, a parameter it lacks.
        records += [
            {"parameter": {"c": "z"}, "value": 0.9},
            {"parameter": {"c": left, "extra": 1}, "value": 0.1},
        ]
        data = lab.root / "data.json"
        data.write_text(json.dumps(records))
        expected, outside = 4, 2
    else:
        data, expected, left, outside = exported, 4, None, 0

    result = lab.cli("experiment", "import", target, "--filename", str(data))
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"Imported {expected} results into experiment {target}."
    if outside:
        assert result.stderr.startswith(
            "warning: 2 of them do not fit its search space (a parameter missing, extra or "
            "out of its range): the tuner keeps them but cannot learn from them"
        ), result.stderr
    else:
        assert result.stderr == ""
    assert lab.tl("update", "trialnum", target, "-v", "10").code == 0
    profile = lab.wait_status(target, ["DONE"])
    points = sorted(t["parameters"]["c"] for t in lab.client(target).trials())
    # The tuner ran only the point that neither the target nor the import had covered.
    assert points == sorted([tried] + ([left] if left else []))
    assert profile["trialCount"] == len(points)


def test_import_refuses_what_is_not_results(lab: Lab) -> None:
    gate = lab.root / "gate"
    exp = lab.start(lab.write(SPACE, gated_trial(gate), maxTrialNumber=1))
    bad = lab.root / "bad.json"
    bad.write_text("[{")
    assert "bad.json:1: JSON syntax error" in _error(
        lab.tl("experiment", "import", exp, "-f", str(bad))
    )
    bad.write_text(json.dumps([{"value": 1.0}]))
    assert "import item 0" in _error(lab.tl("experiment", "import", exp, "-f", str(bad)))
    bad.write_text(json.dumps([{"parameter": {"x": 0.5}, "value": "high"}]))
    assert "value must be a number" in _error(lab.tl("experiment", "import", exp, "-f", str(bad)))
    bad.write_text(json.dumps({"nothing": 1}))
    assert "NNI's format" in _error(lab.tl("experiment", "import", exp, "-f", str(bad)))
    gate.touch()


def test_save_while_running_then_load_elsewhere_and_resume(lab: Lab) -> None:
    gate = lab.root / "gate"
    config = lab.write(SPACE, gated_trial(gate), maxTrialNumber=3, trialConcurrency=1)
    code_dir = config.parent
    exp = lab.start(config)
    (running,) = lab.wait_running(exp, 1)
    saves = lab.root / "saves"
    saves.mkdir()

    result = lab.cli("experiment", "save", exp, "--path", str(saves), "--saveCodeDir")
    assert result.code == 0, result.stderr
    archive = saves / f"tunelab_experiment_{exp}.zip"
    assert result.stdout.strip() == f"Experiment {exp} saved to {archive}"
    assert "already exists" in _error(lab.tl("experiment", "save", exp, "-p", str(saves)))
    assert lab.tl("stop", exp).code == 0
    assert lab.tl("experiment", "delete", exp, "--yes").code == 0
    shutil.move(code_dir, lab.root / "code moved away")

    new_code = lab.root / "new code"
    result = lab.cli("experiment", "load", "--path", str(archive), "--codeDir", str(new_code))
    assert result.code == 0, result.stderr
    # Saved while it ran: loaded, it is a stopped experiment that resume takes up.
    assert f"Experiment {exp} loaded into {lab.home / exp} (STOPPED)." in result.stdout
    assert (new_code / "trial.py").is_file()
    config_json = lab.client(exp).config()
    assert config_json["trialCodeDirectory"] == str(new_code)
    assert config_json["trainingService"]["trialCodeDirectory"] == str(new_code)
    (loaded,) = lab.client(exp).trials()
    assert (loaded["id"], loaded["parameters"]) == (running["id"], running["parameters"])
    assert "already exists here" in _error(lab.tl("experiment", "load", "-p", str(archive)))

    gate.touch()
    assert lab.tl("resume", exp).code == 0
    lab.wait_status(exp, ["DONE"])
    trials = sorted(lab.client(exp).trials(), key=lambda t: t["sequence"])
    assert [t["status"] for t in trials] == ["SUCCEEDED"] * 3
    assert trials[0]["id"] == running["id"] and trials[0]["attempts"] == 2


def test_load_refuses_a_file_that_is_not_a_save(lab: Lab) -> None:
    junk = lab.root / "junk.zip"
    junk.write_text("not a zip")
    assert "not a zip file" in _error(lab.tl("experiment", "load", "-p", str(junk)))
    import zipfile

    with zipfile.ZipFile(junk, "w") as archive:
        archive.writestr("hello.txt", "hi")
    assert "not an experiment saved by" in _error(lab.tl("experiment", "load", "-p", str(junk)))
    assert not lab.home.exists() or not list(lab.home.iterdir())


def test_load_refuses_a_tampered_save_and_writes_nothing(lab: Lab) -> None:
    import zipfile

    config = lab.write(SPACE, SCORE_LETTER.replace('p["c"]', '"a"'), maxTrialNumber=1)
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    # A folder that does not exist yet is made, as nnictl makes it; a file is refused.
    saves = lab.root / "saves" / "tunelab"
    assert "is a file" in _error(lab.tl("experiment", "save", exp, "--path", str(config)))
    assert lab.tl("experiment", "save", exp, "--path", str(saves)).code == 0
    (good,) = saves.iterdir()
    assert lab.tl("experiment", "delete", exp, "--yes").code == 0

    def tampered(name: str, manifest: Any = None, store: bytes | None = None) -> str:
        path = lab.root / f"{name}.zip"
        with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
            for item in source.infolist():
                data = source.read(item)
                if item.filename == "tunelab-save.json" and manifest is not None:
                    data = json.dumps({**json.loads(data), **manifest}).encode()
                if item.filename == "experiment/experiment.db" and store is not None:
                    data = store
                target.writestr(item, data)
        return _error(lab.tl("experiment", "load", "--path", str(path)))

    for bad_id in ("../escape", "", "a/b", ".hidden", None, 7):
        line = tampered("id", manifest={"id": bad_id})
        assert "names no valid experiment id" in line and repr(bad_id) in line, line
    line = tampered("other", manifest={"id": "someoneelse"})
    assert f"names experiment someoneelse but its store holds experiment {exp}" in line
    line = tampered("store", store=b"this is not a database" * 100)
    assert "the saved experiment store cannot be read" in line
    line = _error(lab.tl("experiment", "load", "--path", str(lab.root / "nowhere.zip")))
    assert line.endswith("nowhere.zip: no such file; give the zip that experiment save made")
    assert not (lab.home.parent / "escape").exists()
    assert not lab.home.exists() or not list(lab.home.iterdir())

    result = lab.cli("experiment", "load", "--path", str(good))
    assert result.code == 0, result.stderr
    assert f"Experiment {exp} loaded into {lab.home / exp} (DONE)." in result.stdout


def test_delete_refuses_a_running_experiment_unless_forced_and_removes_everything(
    lab: Lab,
) -> None:
    gate = lab.root / "gate"
    work = lab.root / "work dir"
    running_exp = lab.start(lab.write(SPACE, gated_trial(gate), name="a", maxTrialNumber=1))
    (trial,) = lab.wait_running(running_exp, 1)
    manager_pid = lab.client(running_exp).manager.pid
    trial_dir = lab.home / running_exp / "trials" / trial["id"]
    trial_pid = int((trial_dir / ".pid").read_text())
    stopped_exp = lab.start(
        lab.write(SPACE, gated_trial(gate), name="b", experimentWorkingDirectory=str(work))
    )
    assert lab.tl("stop", stopped_exp).code == 0

    line = _error(lab.cli("experiment", "delete", running_exp))
    assert line.endswith(
        f"experiment {running_exp} is running; stop it first (tunelab stop {running_exp}) "
        "or add --force, which stops it before deleting"
    )
    line = _error(lab.tl("experiment", "delete", stopped_exp))
    assert "needs confirmation: add --yes" in line
    assert "not both" in _error(lab.tl("experiment", "delete", stopped_exp, "--all"))

    result = lab.cli("experiment", "delete", running_exp, "--yes", "--force")
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"Experiment {running_exp} deleted."
    assert not (lab.home / running_exp).exists()
    assert process_gone(manager_pid) and process_gone(trial_pid)

    assert (work / stopped_exp).is_dir() and (lab.home / f"{stopped_exp}.link").is_file()
    result = lab.tl("experiment", "delete", "--all", "--yes")
    assert result.stdout.strip() == f"Experiment {stopped_exp} deleted."
    assert not (work / stopped_exp).exists() and not (lab.home / f"{stopped_exp}.link").exists()
    assert lab.tl("experiment", "list", "--all", "--json").json() == []
    assert lab.tl("experiment", "delete", "--all", "--yes").stdout.strip() == (
        "No experiments to delete."
    )


class _FakeService:
    def __init__(self, calls: list[Any], fail: bool) -> None:
        self.calls, self.fail = calls, fail

    async def cleanup(self, experiment_id: str | None) -> None:
        self.calls.append(experiment_id)
        if self.fail:
            raise OSError("host unreachable")


def test_delete_and_platform_clean_call_the_services_cleanup(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tunelab.services

    calls: list[Any] = []
    failing = {"on": True}
    configs: list[dict[str, Any]] = []

    def fake_service(config: dict[str, Any]) -> _FakeService:
        configs.append(config)
        return _FakeService(calls, failing["on"])

    config = lab.write(
        SPACE, "import tunelab; tunelab.report_final_result(1.0)\n", maxTrialNumber=1
    )
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr
    monkeypatch.setattr(tunelab.services, "create_service", fake_service)

    # The service could not clean up: nothing is deleted, unless --force.
    line = _error(lab.tl("experiment", "delete", exp, "--yes"))
    assert "host unreachable" in line and "nothing was deleted" in line
    assert (lab.home / exp).is_dir() and calls == [exp]
    result = lab.tl("experiment", "delete", exp, "--yes", "--force")
    assert result.code == 0 and "host unreachable" in result.stderr
    assert not (lab.home / exp).exists() and calls == [exp, exp]
    assert configs[0]["trainingService"]["platform"] == "local"

    failing["on"] = False
    result = lab.tl("platform", "clean", "--config", str(config))
    assert result.code == 0, result.stderr
    assert calls[-1] is None


def test_delete_asks_on_a_terminal(lab: Lab) -> None:
    import os
    import pty
    import subprocess
    import sys

    config = lab.write(
        SPACE, "import tunelab; tunelab.report_final_result(1.0)\n", maxTrialNumber=1
    )
    result, exp = lab.run(config)
    assert result.code == 0, result.stderr

    def answer(text: str) -> subprocess.CompletedProcess[str]:
        leader, follower = pty.openpty()
        try:
            os.write(leader, text.encode())
            return subprocess.run(
                [sys.executable, "-m", "tunelab", "experiment", "delete", exp],
                env=lab.env,
                stdin=follower,
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            os.close(leader)
            os.close(follower)

    declined = answer("n\n")
    assert declined.returncode == 1 and "Nothing deleted." in declined.stdout
    assert f"Delete experiment {exp} and all its trials' files?" in declined.stdout
    assert (lab.home / exp).is_dir()
    accepted = answer("y\n")
    assert accepted.returncode == 0 and f"Experiment {exp} deleted." in accepted.stdout
    assert not (lab.home / exp).exists()
