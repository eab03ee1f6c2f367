"""The REST API of a real manager: what it answers, what it refuses, and the field cases whose
REST half lives here (B14: NaN and infinities listed; B33: the export is one valid document).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Lab
from tunelab.store import find_experiment, read_manager_info

API = "/api/v1"

SLOW_TRIAL = """
import os, time, tunelab
scale = float(os.environ["TUNELAB_TIME_SCALE"])
p = tunelab.get_next_parameter()
values = [0.7, 0.4, float("-inf"), float("nan"), 0.9, 0.1]
seq = tunelab.get_sequence_id()
tunelab.report_intermediate_result(0.5)
print("out of", tunelab.get_trial_id())
if p.get("hold"):
    time.sleep(3000 * scale)
tunelab.report_final_result(values[seq % len(values)])
"""


class Live:
    """A running experiment: its REST base URL and token."""

    def __init__(self, lab: Lab, experiment_id: str) -> None:
        found = find_experiment(experiment_id)
        assert found is not None
        self.id, self.dir = found
        info = None
        for _ in range(100):
            info = read_manager_info(self.dir)
            if info is not None:
                break
            time.sleep(0.05)
        assert info is not None
        self.url = info.url + API
        self.token = info.token

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params, timeout=30)

    def send(
        self, method: str, path: str, token: str | None = "own", **kwargs: Any
    ) -> httpx.Response:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'own' else token}"
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def wait_for(self, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self.get("/experiment").json()
            if predicate(view):
                return dict(view)
            time.sleep(0.1)
        raise AssertionError(f"timed out; last state {view['status']} {view['trialCounts']}")


def start(lab: Lab, space: dict[str, Any], **config: Any) -> Live:
    path = lab.write(space, SLOW_TRIAL, **config)
    result = lab.cli("create", "--config", str(path))
    assert result.code == 0, result.stderr
    return Live(lab, result.stdout.split()[1])


@pytest.fixture
def finished(lab: Lab) -> Live:
    """A six-trial experiment that has ended (DONE) with a manager still serving it."""
    live = start(
        lab,
        {"x": {"_type": "choice", "_value": [1, 2, 3, 4, 5, 6]}},
        maxTrialNumber=6,
        trialConcurrency=1,
        tuner={"name": "GridSearch", "classArgs": {"optimize_mode": "maximize"}},
    )
    live.wait_for(lambda view: view["status"] == "DONE")
    return live


def test_b14_trial_list_holds_nan_and_infinities_as_strings(finished: Live) -> None:
    trials = sorted(finished.get("/trials").json(), key=lambda t: t["sequence"])

    assert [t["default"] for t in trials] == [0.7, 0.4, "-Infinity", "NaN", 0.9, 0.1]
    assert finished.get("/experiment").json()["best"]["default"] == 0.9
    metrics = finished.get(f"/trials/{trials[3]['id']}/metrics").json()
    assert [(m["type"], m["value"]) for m in metrics] == [("INTERMEDIATE", 0.5), ("FINAL", "NaN")]


def test_b33_export_is_one_strict_json_document_and_csv_matches(finished: Live) -> None:
    response = finished.get("/export", format="json", intermediate=True)

    document = json.loads(response.text, parse_constant=lambda name: pytest.fail(name))
    assert document["experiment"]["id"] == finished.id
    assert len(document["trials"]) == 6
    assert all(t["intermediate"] == [0.5] for t in document["trials"])
    csv_text = finished.get("/export", format="csv").text
    assert csv_text.splitlines()[0].startswith("id,sequence,status,default,param.x")
    assert "NaN" in csv_text and "-Infinity" in csv_text


def test_reads_from_loopback_need_no_token_but_changes_do(finished: Live) -> None:
    assert finished.get("/check-status").json() == {"status": "DONE", "errors": []}

    for method, path, body in [
        ("PATCH", "/experiment", {"trialConcurrency": 2}),
        ("POST", "/trials", {"parameters": {"x": 1}}),
        ("DELETE", "/experiment", None),
    ]:
        refused = finished.send(method, path, token=None, json=body)
        assert refused.status_code == 401, (method, path)
        wrong = finished.send(method, path, token="not-the-token", json=body)
        assert wrong.status_code == 401
        assert "token" in refused.json()["detail"]


def test_trial_files_stay_inside_the_trial_folder(finished: Live) -> None:
    trial = finished.get("/trials").json()[0]
    stdout = finished.get(f"/trials/{trial['id']}/files/stdout")
    assert stdout.status_code == 200 and f"out of {trial['id']}" in stdout.text

    for path in ["../../manager.json", "..%2F..%2Fmanager.json", "/etc/passwd", "%2Fetc%2Fpasswd"]:
        response = finished.get(f"/trials/{trial['id']}/files/{path}")
        assert response.status_code in (400, 404), path
        assert "token" not in response.text
    assert finished.get("/logs/manager.log").status_code == 200
    assert finished.get("/logs/..%2Fmanager.json").status_code == 404


def test_the_manager_json_is_readable_by_its_owner_only(finished: Live) -> None:
    assert (finished.dir / "manager.json").stat().st_mode & 0o077 == 0


def test_updates_are_checked_and_take_effect(lab: Lab) -> None:
    live = start(
        lab,
        {"x": {"_type": "uniform", "_value": [0, 1]}, "hold": {"_type": "choice", "_value": [1]}},
        maxTrialNumber=3,
        trialConcurrency=1,
    )
    live.wait_for(lambda view: view["trialCounts"].get("RUNNING") == 1)

    for body, words in [
        ({"trialConcurrency": 0}, "trialConcurrency must be an integer from 1"),
        ({"trialConcurrency": True}, "trialConcurrency must be an integer"),
        ({"maxTrialNumber": "5"}, "maxTrialNumber must be an integer"),
        ({"maxExperimentDuration": "10x"}, "unknown time unit"),
        ({"searchSpace": {"x": {"_type": "uniform", "_value": [1, 0]}}}, "x: uniform needs"),
        ({"trialConcurency": 2}, "an update changes one of"),
    ]:
        response = live.send("PATCH", "/experiment", json=body)
        assert response.status_code == 400, body
        assert words in response.json()["detail"], response.json()

    changed = live.send("PATCH", "/experiment", json={"trialConcurrency": 3, "maxTrialNumber": 5})
    assert changed.status_code == 200
    view = live.wait_for(lambda view: view["trialCounts"].get("RUNNING") == 3)
    assert view["trialConcurrency"] == 3 and view["maxTrialNumber"] == 5

    running = [t for t in live.get("/trials").json() if t["status"] == "RUNNING"]
    killed = live.send("DELETE", f"/trials/{running[0]['id']}")
    assert killed.status_code == 200
    after = live.get(f"/trials/{running[0]['id']}").json()
    assert after["status"] == "USER_CANCELED" and after["reason"] == "killed by user"
    stopped = live.send("DELETE", "/experiment")
    assert stopped.json()["status"] == "STOPPED"


def test_user_added_trials_and_reruns_count_against_the_budget(finished: Live) -> None:
    first = finished.get("/trials").json()[0]

    refused = finished.send("POST", f"/trials/{first['id']}/rerun")
    assert refused.status_code == 400
    assert "maxTrialNumber 6 is reached" in refused.json()["detail"]

    assert finished.send("PATCH", "/experiment", json={"maxTrialNumber": 8}).status_code == 200
    rerun = finished.send("POST", f"/trials/{first['id']}/rerun")
    added = finished.send("POST", "/trials", json={"parameters": {"x": 4}})
    assert rerun.status_code == 201 and added.status_code == 201
    assert rerun.json()["parameters"] == first["parameters"]
    assert rerun.json()["parameterSource"] == "rerun"
    view = finished.wait_for(lambda view: view["status"] == "DONE" and view["trialCount"] == 8)
    assert view["trialCounts"] == {"SUCCEEDED": 8}


def test_unknown_trials_are_404_and_import_checks_its_items(finished: Live) -> None:
    assert finished.get("/trials/nope").status_code == 404
    assert finished.send("DELETE", "/trials/nope").status_code == 404

    bad = finished.send("POST", "/import", json=[{"parameter": {"x": 1}, "value": "high"}])
    assert bad.status_code == 400 and "import item 0" in bad.json()["detail"]
    good = finished.send(
        "POST",
        "/import",
        json=[
            {"parameter": {"x": 2}, "value": "0.5"},
            {"parameter": {"x": 3}, "value": {"default": 1}},
        ],
    )
    assert good.json() == {"imported": 2, "outsideSpace": 0}


def wait_gone(live: Live) -> None:
    for _ in range(200):
        info = read_manager_info(live.dir)
        if info is None or not info.is_alive():
            return
        time.sleep(0.05)
    raise AssertionError("the manager did not end")


def test_a_viewed_experiment_refuses_every_change(finished: Live, lab: Lab) -> None:
    assert finished.send("DELETE", "/experiment").status_code == 200
    wait_gone(finished)
    command = [sys.executable, "-m", "tunelab.engine.manager", "--exp-dir", str(finished.dir)]
    command += ["--id", finished.id, "--port", "0", "--explicit-port", "--action", "view"]
    manager = subprocess.Popen(command, env=lab.env, stdin=subprocess.DEVNULL)
    try:
        for _ in range(200):
            info = read_manager_info(finished.dir)
            if info is not None and info.pid == manager.pid:
                break
            time.sleep(0.05)
        viewed = Live(lab, finished.id)
        assert viewed.get("/experiment").json()["status"] == "VIEWED"
        assert len(viewed.get("/trials").json()) == 6
        refused = viewed.send("PATCH", "/experiment", json={"trialConcurrency": 2})
        assert refused.status_code == 409 and "read-only" in refused.json()["detail"]
        assert viewed.send("POST", "/trials", json={"parameters": {"x": 1}}).status_code == 409
        assert viewed.send("DELETE", "/experiment").status_code == 200
        manager.wait(30)
    finally:
        if manager.poll() is None:
            manager.kill()


def test_openapi_document_lists_every_endpoint(finished: Live) -> None:
    spec = httpx.get(finished.url.removesuffix(API) + "/openapi.json", timeout=30).json()
    paths = set(spec["paths"])
    for path in [
        "/experiment",
        "/check-status",
        "/trials",
        "/trials/{trial_id}",
        "/trials/{trial_id}/rerun",
        "/trials/{trial_id}/metrics",
        "/export",
        "/import",
    ]:
        assert API + path in paths, path
