"""Reading a metrics file incrementally, as the manager does while a trial writes it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tunelab.trial import read_metrics

LINE_0 = b'{"seq": 0, "type": "INTERMEDIATE", "value": 0.5, "time": 1.5}\n'
LINE_1 = b'{"seq": 1, "type": "FINAL", "value": {"default": NaN, "loss": 2}, "time": 2.5}\n'


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_metrics(tmp_path / "metrics.jsonl") == ([], 0)
    assert read_metrics(tmp_path / "metrics.jsonl", 17) == ([], 17)


def test_partial_last_line_is_left_for_next_time(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(LINE_0 + LINE_1[:20])

    records, offset = read_metrics(path)

    assert records == [{"seq": 0, "type": "INTERMEDIATE", "value": 0.5, "time": 1.5}]
    assert offset == len(LINE_0)

    with path.open("ab") as file:
        file.write(LINE_1[20:])
    records, offset = read_metrics(str(path), offset)

    assert [record["seq"] for record in records] == [1]
    assert records[0]["value"]["loss"] == 2
    assert offset == len(LINE_0 + LINE_1)
    assert read_metrics(path, offset) == ([], offset)


@pytest.mark.parametrize(
    "bad",
    [
        b"this is not json\n",
        b'{"seq": 1, "ty\n',
        b"[1, 2]\n",
        b'{"seq": "1", "type": "FINAL", "value": 1, "time": 1.0}\n',
        b'{"seq": true, "type": "FINAL", "value": 1, "time": 1.0}\n',
        b'{"seq": 1, "type": "PERIODICAL", "value": 1, "time": 1.0}\n',
        b'{"seq": 1, "type": "FINAL", "time": 1.0}\n',
        b'{"seq": 1, "type": "FINAL", "value": 1}\n',
        b"\xff\xfe\n",
    ],
)
def test_corrupt_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: bytes
) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(LINE_0 + bad + LINE_1)

    with caplog.at_level(logging.WARNING, logger="tunelab.trial"):
        records, offset = read_metrics(path)

    assert [record["seq"] for record in records] == [0, 1]
    assert offset == path.stat().st_size
    assert len(caplog.records) == 1
    assert (
        caplog.records[0]
        .getMessage()
        .startswith(f"Metrics file {path}: skipped a corrupt line at byte {len(LINE_0)}: ")
    )


def test_blank_lines_are_skipped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"\n" + LINE_0 + b"  \n")

    records, _ = read_metrics(path)

    assert [record["seq"] for record in records] == [0]
    assert caplog.records == []
