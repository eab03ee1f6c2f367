"""``tunelab create --foreground`` owns its experiment: ended by SIGTERM (``timeout``, a job
scheduler) or SIGHUP (the terminal closed), it stops the experiment first, as Ctrl-C does."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import Lab, gated_trial
from tests.faults.harness import lab_processes

SPACE = {"x": {"_type": "uniform", "_value": [0, 1]}}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_to_a_foreground_create_stops_its_experiment(lab: Lab, signum: int) -> None:
    gate = lab.root / "gate"  # never opened: the trials wait until they are stopped
    config = lab.write(SPACE, gated_trial(gate), maxTrialNumber=4, trialConcurrency=2)
    command = subprocess.Popen(
        [sys.executable, "-m", "tunelab", "create", "--config", str(config), "--foreground"],
        env=lab.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(list(lab.home.glob("*/trials/*/trial.stdout"))) < 2:
        assert time.monotonic() < deadline and command.poll() is None
        time.sleep(0.05)
    command.send_signal(signum)
    stdout, stderr = command.communicate(timeout=120)
    assert command.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    experiment = stdout.split()[1]
    client = lab.client(experiment)
    assert not client.running
    assert client.experiment()["status"] == "STOPPED"
    assert {t["status"] for t in client.trials()} == {"USER_CANCELED"}
    assert lab_processes(lab.home) == []


def test_a_signal_whose_raise_was_swallowed_is_raised_again() -> None:
    """A raise that lands in a callback Python runs for itself (an import lock's) is printed
    and dropped there; the loops of a foreground run raise it again."""
    import os

    from tunelab.client._signals import Signalled, raise_pending, signals_raise

    with pytest.raises(Signalled) as caught, signals_raise():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except Signalled:
            pass  # what "Exception ignored in ..." amounts to
        raise_pending()
    assert caught.value.signum == signal.SIGTERM
    raise_pending()  # nothing pending any more
