"""Stopping what a command started when the command is told to end.

A foreground run (``tunelab create --foreground``, ``Experiment.run()``) owns its experiment:
when the run ends, so does the experiment. Ctrl-C raises KeyboardInterrupt; SIGTERM (sent by
``timeout``, job schedulers, ``kill``) and SIGHUP (the terminal closed) would end the process
at once and leave the experiment running unseen. Within :func:`signals_raise` they raise
:class:`Signalled` instead, so that the run stops its experiment first.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["Signalled", "raise_pending", "signals_raise"]

_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# The signal last raised as Signalled within signals_raise(): a raise that lands inside a
# callback Python runs for itself (an import lock's, a finalizer) is printed and dropped
# there, so loops call raise_pending() to raise it again.
_pending: list[int] = []


class Signalled(BaseException):
    """SIGTERM or SIGHUP arrived (a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The code a shell reports for a process this signal ended."""
        return 128 + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    _pending[:] = [signum]
    raise Signalled(signum)


def raise_pending() -> None:
    """Raise again a signal whose Signalled was dropped on its way (see ``_pending``)."""
    if _pending:
        signum = _pending.pop()
        raise Signalled(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Signalled`.

    Only in the main thread (the only one signals reach in Python), and only for a signal whose
    handler is the default one: a program that set its own keeps it.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in _SIGNALS:
            if signal.getsignal(signum) == signal.SIG_DFL:
                previous[signum] = signal.signal(signum, _raise)
    _pending.clear()
    try:
        yield
    except Signalled:
        _pending.clear()  # it got through: nothing to raise again
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
