"""Manager processes started before their experiment exists, to save their start-up time.

A manager imports the server, the engine and the tuners (about half a second) before it can
run a trial. ``tunelab create`` starts one (``python -m tunelab.engine.manager --deferred``)
as its very first step, before it imports the CLI itself, so that the two start-ups overlap;
the manager then waits for its arguments on stdin. This module imports only the standard
library, so that starting the process costs the command nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import subprocess
import sys


class PendingManager:
    """A manager process waiting for its arguments (``--deferred``).

    Use as a context manager around the config checks; a manager not handed to
    ``create_experiment`` is ended when the block exits.
    """

    _prestarted: PendingManager | None = None

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "tunelab.engine.manager", "--deferred"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @classmethod
    def prestart(cls) -> None:
        """Start one for the command that runs next in this process (see :meth:`claim`)."""
        if cls._prestarted is None:
            cls._prestarted = cls()
            atexit.register(cls._cancel_prestarted)

    @classmethod
    def claim(cls) -> PendingManager:
        """The one :meth:`prestart` started, or a new one."""
        pending, cls._prestarted = cls._prestarted, None
        return pending if pending is not None else cls()

    @classmethod
    def _cancel_prestarted(cls) -> None:
        # The command ended before it needed the manager (--help, a usage error).
        pending, cls._prestarted = cls._prestarted, None
        if pending is not None:
            pending.cancel()

    def __enter__(self) -> PendingManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def take(self) -> subprocess.Popen[bytes] | None:
        """The process, now the caller's to give arguments to (None if it was taken)."""
        process, self.process = self.process, None
        return process

    def cancel(self) -> None:
        """End the process if nobody took it."""
        process = self.take()
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()


def main() -> None:
    """The ``tunelab`` command: for ``tunelab create``, its manager starts first."""
    arguments = sys.argv[1:]
    if arguments[:1] == ["create"] and not {"--help", "-h"} & set(arguments):
        PendingManager.prestart()
    from tunelab.cli import main as run_command

    run_command()
