"""The files and environment variables shared by a trial process and the manager.

Both sides import these names, so the protocol is spelled once:

* The training service sets the variables built by :func:`trial_env` for each trial process:
  tunelab's names and NNI's names, with the same values. The trial side reads tunelab's
  names first and NNI's as a fallback.
* Before the process starts, the manager writes ``<trial dir>/parameters.json`` atomically
  (:func:`write_parameters`): ``{"parameter_id": int, "parameter_source": "algorithm" |
  "customized" | "resumed", "parameters": {...}}``.
* The trial appends its metrics to ``<trial dir>/metrics.jsonl``, one JSON object a line:
  ``{"seq": int, "type": "INTERMEDIATE" | "FINAL", "value": metric, "time": unix float}``.
  ``seq`` is the line's index in the file (both types count). NaN and infinities are written
  as JSON's non-standard ``NaN``, ``Infinity`` and ``-Infinity``, which :func:`json.loads`
  reads back. The manager reads the file incrementally with :func:`read_metrics`.

Standard library only: this module is shipped with the trial code to hosts without tunelab.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Literal, TypedDict

__all__ = [
    "ENV_EXPERIMENT_ID",
    "ENV_PLATFORM",
    "ENV_SEQUENCE_ID",
    "ENV_TRIAL_DIR",
    "ENV_TRIAL_ID",
    "METRICS_FILE",
    "NNI_ENV_CODE_DIR",
    "NNI_ENV_EXPERIMENT_ID",
    "NNI_ENV_OUTPUT_DIR",
    "NNI_ENV_PLATFORM",
    "NNI_ENV_SEQUENCE_ID",
    "NNI_ENV_SYS_DIR",
    "NNI_ENV_TRIAL_ID",
    "PARAMETERS_FILE",
    "MetricRecord",
    "ParameterRecord",
    "read_metrics",
    "read_parameters",
    "trial_env",
    "write_parameters",
]

logger = logging.getLogger("tunelab.trial")

PARAMETERS_FILE = "parameters.json"
METRICS_FILE = "metrics.jsonl"

ENV_EXPERIMENT_ID = "TUNELAB_EXPERIMENT_ID"
ENV_TRIAL_ID = "TUNELAB_TRIAL_ID"
ENV_SEQUENCE_ID = "TUNELAB_SEQUENCE_ID"
ENV_TRIAL_DIR = "TUNELAB_TRIAL_DIR"
ENV_PLATFORM = "TUNELAB_PLATFORM"

NNI_ENV_PLATFORM = "NNI_PLATFORM"
NNI_ENV_EXPERIMENT_ID = "NNI_EXP_ID"
NNI_ENV_TRIAL_ID = "NNI_TRIAL_JOB_ID"
NNI_ENV_SEQUENCE_ID = "NNI_TRIAL_SEQ_ID"
NNI_ENV_SYS_DIR = "NNI_SYS_DIR"
NNI_ENV_OUTPUT_DIR = "NNI_OUTPUT_DIR"
NNI_ENV_CODE_DIR = "NNI_CODE_DIR"

METRIC_TYPES = ("INTERMEDIATE", "FINAL")

_READ_CHUNK = 1 << 20


class ParameterRecord(TypedDict):
    """The content of ``parameters.json``."""

    parameter_id: int
    parameter_source: Literal["algorithm", "customized", "resumed"]
    parameters: dict[str, Any]


class MetricRecord(TypedDict):
    """One line of ``metrics.jsonl``."""

    seq: int
    type: Literal["INTERMEDIATE", "FINAL"]
    value: Any
    time: float


def trial_env(
    *,
    experiment_id: str,
    trial_id: str,
    sequence_id: int,
    trial_dir: str | os.PathLike[str],
    platform: str = "local",
    code_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Build the environment variables a training service sets for one trial process.

    Args:
        experiment_id: the experiment's id.
        trial_id: the trial's short id.
        sequence_id: the trial's number in the experiment ("Trial No.").
        trial_dir: absolute path of the trial's own output folder.
        platform: the training service's platform name (``local``, ``remote``, ``ray``).
        code_dir: the folder the trial command runs in; ``NNI_CODE_DIR`` is omitted when None.

    Returns:
        tunelab's and NNI's variable names mapped to their values, ready to update an
        environment with.
    """
    folder = os.fspath(trial_dir)
    env = {
        ENV_PLATFORM: platform,
        ENV_EXPERIMENT_ID: experiment_id,
        ENV_TRIAL_ID: trial_id,
        ENV_SEQUENCE_ID: str(sequence_id),
        ENV_TRIAL_DIR: folder,
        NNI_ENV_PLATFORM: platform,
        NNI_ENV_EXPERIMENT_ID: experiment_id,
        NNI_ENV_TRIAL_ID: trial_id,
        NNI_ENV_SEQUENCE_ID: str(sequence_id),
        NNI_ENV_SYS_DIR: folder,
        NNI_ENV_OUTPUT_DIR: folder,
    }
    if code_dir is not None:
        env[NNI_ENV_CODE_DIR] = os.fspath(code_dir)
    return env


def write_parameters(
    trial_dir: str | os.PathLike[str],
    parameters: dict[str, Any],
    *,
    parameter_id: int,
    parameter_source: Literal["algorithm", "customized", "resumed"] = "algorithm",
) -> None:
    """Write ``parameters.json`` into a trial folder atomically (temporary file, then rename).

    Args:
        trial_dir: the trial's folder; it must exist.
        parameters: the trial's parameters, plain JSON values.
        parameter_id: the id the tuner knows these parameters by.
        parameter_source: where the parameters came from.
    """
    record: ParameterRecord = {
        "parameter_id": parameter_id,
        "parameter_source": parameter_source,
        "parameters": parameters,
    }
    path = os.path.join(os.fspath(trial_dir), PARAMETERS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump(record, file)
    # No fsync: the rename keeps readers from ever seeing half a file, and a machine that
    # crashes takes the trial with it; the trial runs again on resume, with this file written
    # anew. An fsync here cost about a millisecond of the manager's loop for every trial.
    os.replace(tmp, path)


def read_parameters(trial_dir: str | os.PathLike[str]) -> ParameterRecord:
    """Read ``parameters.json`` from a trial folder.

    Args:
        trial_dir: the trial's folder.

    Returns:
        The parameter record.

    Raises:
        RuntimeError: the file is missing, is not JSON, or has no ``parameters`` object.
    """
    path = os.path.join(os.fspath(trial_dir), PARAMETERS_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            record = json.load(file)
    except FileNotFoundError as error:
        raise RuntimeError(
            f"get_next_parameter: the parameters file {path} does not exist; the training "
            f"service writes it before the trial starts, so check that {ENV_TRIAL_DIR} "
            "(or NNI_OUTPUT_DIR) points at the trial's folder"
        ) from error
    except (OSError, ValueError) as error:
        raise RuntimeError(
            f"get_next_parameter: cannot read the parameters file {path}: {error}"
        ) from error

    if not isinstance(record, dict) or not isinstance(record.get("parameters"), dict):
        raise RuntimeError(
            f"get_next_parameter: the parameters file {path} must hold a JSON object with a "
            f"'parameters' object (got {_short_repr(record)})"
        )
    return record  # type: ignore[return-value]


def read_metrics(
    path: str | os.PathLike[str], start_offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Parse the complete lines of a metrics file from a byte offset.

    A partial last line (a trial writing it right now) is left for the next call. A line that
    is not a valid metric record is skipped with a logged warning; this function never raises
    for the file's content. A missing file reads as empty.

    Args:
        path: the ``metrics.jsonl`` file.
        start_offset: where the previous call stopped (0 the first time).

    Returns:
        The records (shaped as :class:`MetricRecord`) in file order, and the offset just
        after the last complete line, to pass as ``start_offset`` next time.
    """
    try:
        with open(path, "rb") as file:
            file.seek(start_offset)
            data = file.read()
    except FileNotFoundError:
        return [], start_offset

    end = data.rfind(b"\n") + 1
    records: list[dict[str, Any]] = []
    offset = start_offset
    for raw in data[:end].splitlines(keepends=True):
        record = _parse_metric_line(raw)
        if record is not None:
            records.append(record)
        elif raw.strip():
            logger.warning(
                "Metrics file %s: skipped a corrupt line at byte %d: %s",
                os.fspath(path),
                offset,
                _short_repr(raw),
            )
        offset += len(raw)
    return records, start_offset + end


def count_lines(fd: int, start: int, end: int) -> tuple[int, bool]:
    """Count the newlines between two offsets of an open file.

    Returns:
        The number of ``\\n`` bytes in ``[start, end)``, and whether the byte before ``end`` is
        a newline (True for an empty range at the start of the file).
    """
    count = 0
    last = b"\n"
    os.lseek(fd, start, os.SEEK_SET)
    position = start
    while position < end:
        chunk = os.read(fd, min(_READ_CHUNK, end - position))
        if not chunk:
            break
        count += chunk.count(b"\n")
        last = chunk[-1:]
        position += len(chunk)
    return count, last == b"\n"


def _parse_metric_line(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None

    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return None
    if record.get("type") not in METRIC_TYPES or "value" not in record:
        return None
    if not isinstance(record.get("time"), (int, float)):
        return None
    return record


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
