"""The functions trial code calls: parameters in, metrics out.

A trial runs *managed* when the training service started it (``TUNELAB_TRIAL_DIR`` set, or
NNI's ``NNI_PLATFORM`` set to anything but ``unittest``) and *standalone* otherwise, for
example when a person runs the script by hand. Standalone, :func:`get_next_parameter` returns
``{}`` with one warning, metrics are checked as usual and logged at INFO on the
``tunelab.trial`` logger instead of being written, and the ids are ``"STANDALONE"`` and 0.

The environment is read at each call rather than at import, so importing costs nothing but
the module itself. See :mod:`tunelab.trial._protocol` for the files involved.

Writing metrics: each line goes out with one ``os.write`` on a file opened with ``O_APPEND``,
so a crash never leaves half a line in the middle of the file and a child process reporting
at the same time never interleaves with us. Where ``fcntl`` exists (every POSIX system), the
write also holds an exclusive ``flock`` while it counts the lines other writers appended since
our last report, so ``seq`` stays the line's index even with several writers. There is no
``fsync``: the page cache survives a crash of the trial process, which is the failure that
matters here; a crash of the whole machine loses the trial anyway.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from tunelab.trial._metric import normalize_metric
from tunelab.trial._protocol import (
    ENV_EXPERIMENT_ID,
    ENV_PLATFORM,
    ENV_SEQUENCE_ID,
    ENV_TRIAL_DIR,
    ENV_TRIAL_ID,
    METRICS_FILE,
    NNI_ENV_EXPERIMENT_ID,
    NNI_ENV_OUTPUT_DIR,
    NNI_ENV_PLATFORM,
    NNI_ENV_SEQUENCE_ID,
    NNI_ENV_SYS_DIR,
    NNI_ENV_TRIAL_ID,
    count_lines,
    read_parameters,
)

try:
    import fcntl
except ImportError:  # Windows: O_APPEND alone keeps lines whole; see _MetricsWriter.
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "get_current_parameter",
    "get_experiment_id",
    "get_next_parameter",
    "get_next_parameters",
    "get_sequence_id",
    "get_trial_id",
    "report_final_result",
    "report_intermediate_result",
]

logger = logging.getLogger("tunelab.trial")

STANDALONE = "STANDALONE"

# Parameters already read in this process, by trial folder ("" when standalone).
_parameters: dict[str, dict[str, Any]] = {}
_current: dict[str, Any] | None = None
_warned: set[str] = set()
_finals_reported = 0


def get_next_parameter() -> dict[str, Any]:
    """Return this trial's parameters.

    Managed, they come from ``parameters.json`` in the trial folder, written by the manager
    before the process started; standalone, the result is ``{}``. Calling again returns the
    same dict.

    Returns:
        Parameter names mapped to plain JSON values; a nested choice gives a dict with
        ``_name``.

    Raises:
        RuntimeError: managed, but the parameters file is missing or unreadable.
    """
    global _current

    trial_dir = _trial_dir()
    key = trial_dir or ""
    if key not in _parameters:
        if trial_dir is None:
            _warn_once(
                "standalone",
                "Trial is running standalone (neither %s nor %s is set): get_next_parameter() "
                "returns {} and metrics are only logged",
                ENV_TRIAL_DIR,
                NNI_ENV_PLATFORM,
            )
            _parameters[key] = {}
        else:
            _parameters[key] = read_parameters(trial_dir)["parameters"]
    _current = _parameters[key]
    return _current


def get_next_parameters() -> dict[str, Any]:
    """Alias of :func:`get_next_parameter`, as NNI has it."""
    return get_next_parameter()


def get_current_parameter(tag: str | None = None) -> Any:
    """Return the parameters received by :func:`get_next_parameter`, or one of them.

    Args:
        tag: a parameter name; None for the whole dict.

    Returns:
        None before :func:`get_next_parameter` was called; otherwise the dict, or the value
        of ``tag``.

    Raises:
        KeyError: ``tag`` is not one of the parameters.
    """
    if _current is None:
        return None
    if tag is None:
        return _current
    if tag not in _current:
        raise KeyError(
            f"get_current_parameter: no parameter named {tag!r}; the parameters are "
            f"{sorted(_current)}"
        )
    return _current[tag]


def report_intermediate_result(metric: Any) -> None:
    """Report a result measured during training (an epoch's accuracy, a step's loss).

    Args:
        metric: a number, or a dict whose ``default`` key holds a number (other keys are kept).
            NaN and infinities are allowed.

    Raises:
        TypeError: the metric is not a number (bool, None and strings are not numbers).
        ValueError: a dict metric has no ``default`` key.
    """
    value = normalize_metric(metric, "report_intermediate_result")
    _report("INTERMEDIATE", value)


def report_final_result(metric: Any) -> None:
    """Report the trial's final result, the value the tuner learns from.

    NNI allows more than one final result; so does tunelab: each is recorded, the first one is
    the trial's result, and a warning is logged once.

    Args:
        metric: a number, or a dict whose ``default`` key holds a number (other keys are kept).
            NaN and infinities are allowed: report ``float("nan")`` for a diverged trial.

    Raises:
        TypeError: the metric is not a number (bool, None and strings are not numbers).
        ValueError: a dict metric has no ``default`` key.
    """
    global _finals_reported

    value = normalize_metric(metric, "report_final_result")
    if _finals_reported:
        _warn_once(
            "final twice",
            "report_final_result was called more than once: every value is recorded, and the "
            "first one is the trial's final result",
        )
    _finals_reported += 1
    _report("FINAL", value)


def get_experiment_id() -> str:
    """Return the experiment's id, or ``"STANDALONE"`` outside an experiment."""
    if _trial_dir() is None:
        return STANDALONE
    return _env(ENV_EXPERIMENT_ID, NNI_ENV_EXPERIMENT_ID) or STANDALONE


def get_trial_id() -> str:
    """Return this trial's id, or ``"STANDALONE"`` outside an experiment."""
    if _trial_dir() is None:
        return STANDALONE
    return _env(ENV_TRIAL_ID, NNI_ENV_TRIAL_ID) or STANDALONE


def get_sequence_id() -> int:
    """Return this trial's number in the experiment ("Trial No."), or 0 outside one.

    Raises:
        ValueError: the sequence variable is set but is not an integer.
    """
    if _trial_dir() is None:
        return 0
    text = _env(ENV_SEQUENCE_ID, NNI_ENV_SEQUENCE_ID)
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"get_sequence_id: {ENV_SEQUENCE_ID} (or {NNI_ENV_SEQUENCE_ID}) must be an integer "
            f"(got {text!r}); the training service sets it"
        ) from None


def _report(kind: str, value: float | int | dict[str, Any]) -> None:
    trial_dir = _trial_dir()
    if trial_dir is None:
        _warn_once(
            "standalone",
            "Trial is running standalone (neither %s nor %s is set): metrics are only logged",
            ENV_TRIAL_DIR,
            NNI_ENV_PLATFORM,
        )
        logger.info("%s result (standalone, not recorded): %r", kind.capitalize(), value)
        return
    _writer(os.path.join(trial_dir, METRICS_FILE)).append(kind, value)


class _MetricsWriter:
    """Appends lines to one metrics file and numbers them.

    Remembers how far into the file it has counted, so each report reads only what other
    writers appended since (normally nothing) instead of the whole file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.counted_size = 0
        self.lines = 0
        self.ends_with_newline = True

    def append(self, kind: str, value: float | int | dict[str, Any]) -> None:
        # Opened per report: a forked child must not share our open file description, or
        # flock would not keep the two apart.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._catch_up(fd)

            # After a writer that died mid-line, end its line first so that ours stays whole;
            # that cut line counts as a line (a corrupt one, which readers skip).
            prefix = b"" if self.ends_with_newline else b"\n"
            seq = self.lines + len(prefix)
            record = {"seq": seq, "type": kind, "value": value, "time": time.time()}
            data = prefix + (json.dumps(record) + "\n").encode("utf-8")
            _write_all(fd, data)

            self.counted_size += len(data)
            self.lines += data.count(b"\n")
            self.ends_with_newline = True
        finally:
            os.close(fd)  # also releases the lock

    def _catch_up(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size < self.counted_size:  # truncated behind our back: count again
            self.counted_size, self.lines, self.ends_with_newline = 0, 0, True
        if size > self.counted_size:
            added, self.ends_with_newline = count_lines(fd, self.counted_size, size)
            self.lines += added
            self.counted_size = size


_writers: dict[str, _MetricsWriter] = {}


def _writer(path: str) -> _MetricsWriter:
    writer = _writers.get(path)
    if writer is None:
        writer = _writers[path] = _MetricsWriter(path)
    return writer


def _write_all(fd: int, data: bytes) -> None:
    # A regular file takes the whole buffer in one write unless the disk is full or a signal
    # interrupts it; finishing a short write is still better than leaving the line cut.
    written = os.write(fd, data)
    while written < len(data):
        written += os.write(fd, data[written:])


def _trial_dir() -> str | None:
    """The trial folder when running managed, None when standalone."""
    platform = _env(ENV_PLATFORM, NNI_ENV_PLATFORM)
    if platform == "unittest":
        return None

    explicit = os.environ.get(ENV_TRIAL_DIR)
    if explicit:
        return explicit
    if not os.environ.get(NNI_ENV_PLATFORM):
        return None
    folder = os.environ.get(NNI_ENV_OUTPUT_DIR) or os.environ.get(NNI_ENV_SYS_DIR)
    if not folder:
        raise RuntimeError(
            f"{NNI_ENV_PLATFORM} is set to {platform!r} but no trial folder is given "
            f"({ENV_TRIAL_DIR}, {NNI_ENV_OUTPUT_DIR} and {NNI_ENV_SYS_DIR} are unset); unset "
            f"{NNI_ENV_PLATFORM} to run the trial standalone"
        )
    return folder


def _env(name: str, nni_name: str) -> str | None:
    return os.environ.get(name) or os.environ.get(nni_name)


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)
