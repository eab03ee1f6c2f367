"""One SQLite file per experiment: the experiment's config and state, its trials and metrics.

The manager is the only writer (DESIGN.md rule 2). Every state change is committed before it is
acted on (rule 3), so after a crash the store is the truth. The CLI reads a stopped
experiment's file read-only.

Values that JSON cannot hold as numbers (NaN, +inf, -inf) are kept in the database as Python's
JSON literals (``NaN``, ``Infinity``); :func:`tunelab.store.encode_json_value` turns them into
the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` wherever tunelab speaks JSON to the
outside (REST API, export).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ExperimentStore", "MetricRecord", "TrialRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiment (
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    used_seconds REAL NOT NULL DEFAULT 0,
    next_sequence INTEGER NOT NULL DEFAULT 0,
    optimize_mode TEXT NOT NULL DEFAULT 'maximize',
    error TEXT
);
CREATE TABLE IF NOT EXISTS trials (
    sequence INTEGER PRIMARY KEY,
    trial_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    parameters TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT,
    submit_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    final TEXT,
    final_default TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    placement TEXT,
    handle TEXT,
    requeue INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS metrics (
    sequence INTEGER NOT NULL,
    line INTEGER NOT NULL,
    type TEXT NOT NULL,
    step INTEGER NOT NULL,
    value TEXT NOT NULL,
    default_value TEXT,
    time REAL NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (sequence, line)
);
CREATE TABLE IF NOT EXISTS imported (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    parameters TEXT NOT NULL,
    value TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    sequence INTEGER,
    kind TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS trials_status ON trials (status);
"""

_TRIAL_COLUMNS = (
    "sequence, trial_id, status, parameters, source, reason, submit_time, start_time, "
    "end_time, final, final_default, attempts, exit_code, placement, handle, requeue"
)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass
class TrialRecord:
    """A trial as the store holds it. ``final`` is the raw final metric (number or dict)."""

    sequence: int
    trial_id: str
    status: str
    parameters: dict[str, Any]
    source: str = "algorithm"
    reason: str | None = None
    submit_time: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    final: Any = None
    final_default: float | None = None
    attempts: int = 0
    exit_code: int | None = None
    placement: dict[str, Any] | None = None
    handle: dict[str, Any] | None = None
    requeue: bool = False

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> TrialRecord:
        return cls(
            sequence=row[0],
            trial_id=row[1],
            status=row[2],
            parameters=json.loads(row[3]),
            source=row[4],
            reason=row[5],
            submit_time=row[6],
            start_time=row[7],
            end_time=row[8],
            final=_loads(row[9]),
            final_default=_loads(row[10]),
            attempts=row[11],
            exit_code=row[12],
            placement=_loads(row[13]),
            handle=_loads(row[14]),
            requeue=bool(row[15]),
        )


@dataclass
class MetricRecord:
    """One reported metric. ``line`` is the trial's metrics-file line number (its dedup key);
    ``step`` counts the intermediate results of one attempt from 0 (0 for the final result);
    ``attempt`` is the run of the trial that reported it (a trial runs again after a crash
    or a stop)."""

    sequence: int
    line: int
    type: str
    step: int
    value: Any
    default: float | None
    time: float
    attempt: int = 1


class ExperimentStore:
    """The SQLite file of one experiment.

    Args:
        path: the database file.
        readonly: open an existing file without the right to write (the CLI on a stopped
            experiment, ``view``).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Group writes into one commit (one fsync in WAL mode)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- experiment ------------------------------------------------------------------------

    def create_experiment(
        self, experiment_id: str, config: dict[str, Any], optimize_mode: str = "maximize"
    ) -> None:
        self._db.execute(
            "INSERT INTO experiment (id, config, status, created, optimize_mode) "
            "VALUES (?, ?, ?, ?, ?)",
            (experiment_id, json.dumps(config), "INITIALIZED", time.time(), optimize_mode),
        )

    def experiment(self) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT id, config, status, created, start_time, end_time, used_seconds, "
            "next_sequence, optimize_mode, error FROM experiment"
        ).fetchone()
        if row is None:
            raise LookupError(f"{self.path} holds no experiment")
        keys = [
            "id",
            "config",
            "status",
            "created",
            "start_time",
            "end_time",
            "used_seconds",
            "next_sequence",
            "optimize_mode",
            "error",
        ]
        info = dict(zip(keys, row, strict=True))
        info["config"] = json.loads(info["config"])
        return info

    def update_experiment(self, **fields: Any) -> None:
        if "config" in fields:
            fields["config"] = json.dumps(fields["config"])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(f"UPDATE experiment SET {assignments}", tuple(fields.values()))

    def add_event(self, kind: str, data: Any = None, sequence: int | None = None) -> None:
        self._db.execute(
            "INSERT INTO events (time, sequence, kind, data) VALUES (?, ?, ?, ?)",
            (time.time(), sequence, kind, None if data is None else json.dumps(data)),
        )

    def events(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT time, sequence, kind, data FROM events ORDER BY id")
        return [{"time": t, "sequence": s, "kind": k, "data": _loads(d)} for t, s, k, d in rows]

    # -- trials ----------------------------------------------------------------------------

    def add_trial(self, trial: TrialRecord) -> None:
        self._db.execute(
            f"INSERT INTO trials ({_TRIAL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                trial.sequence,
                trial.trial_id,
                trial.status,
                json.dumps(trial.parameters),
                trial.source,
                trial.reason,
                trial.submit_time,
                trial.start_time,
                trial.end_time,
                None if trial.final is None else json.dumps(trial.final),
                None if trial.final_default is None else json.dumps(trial.final_default),
                trial.attempts,
                trial.exit_code,
                None if trial.placement is None else json.dumps(trial.placement),
                None if trial.handle is None else json.dumps(trial.handle),
                int(trial.requeue),
            ),
        )

    def update_trial(self, sequence: int, **fields: Any) -> None:
        for name in ("final", "final_default", "placement", "parameters", "handle"):
            if name in fields and fields[name] is not None:
                fields[name] = json.dumps(fields[name])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(
            f"UPDATE trials SET {assignments} WHERE sequence = ?", (*fields.values(), sequence)
        )

    def trials(
        self,
        *,
        statuses: Iterable[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[TrialRecord]:
        query = f"SELECT {_TRIAL_COLUMNS} FROM trials"
        args: list[Any] = []
        if statuses is not None:
            wanted = list(statuses)
            query += f" WHERE status IN ({','.join('?' * len(wanted))})"
            args.extend(wanted)
        query += " ORDER BY sequence LIMIT ? OFFSET ?"
        args.extend([-1 if limit is None else limit, offset])
        return [TrialRecord.from_row(row) for row in self._db.execute(query, args)]

    def trial(self, key: int | str) -> TrialRecord | None:
        column = "sequence" if isinstance(key, int) else "trial_id"
        row = self._db.execute(
            f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE {column} = ?", (key,)
        ).fetchone()
        return None if row is None else TrialRecord.from_row(row)

    def count_trials(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM trials GROUP BY status")
        return {status: count for status, count in rows}

    # -- metrics ---------------------------------------------------------------------------

    def add_metrics(self, records: Iterable[MetricRecord]) -> None:
        """Store metrics; a record whose (trial, line) is already stored is ignored."""
        self._db.executemany(
            "INSERT OR IGNORE INTO metrics (sequence, line, type, step, value, default_value, "
            "time, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.sequence,
                    r.line,
                    r.type,
                    r.step,
                    json.dumps(r.value),
                    None if r.default is None else json.dumps(r.default),
                    r.time,
                    r.attempt,
                )
                for r in records
            ],
        )

    def metrics(
        self, sequence: int | None = None, metric_type: str | None = None
    ) -> list[MetricRecord]:
        query = (
            "SELECT sequence, line, type, step, value, default_value, time, attempt FROM metrics"
        )
        clauses: list[str] = []
        args: list[Any] = []
        if sequence is not None:
            clauses.append("sequence = ?")
            args.append(sequence)
        if metric_type is not None:
            clauses.append("type = ?")
            args.append(metric_type)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY sequence, line"
        return [
            MetricRecord(s, line, t, step, json.loads(v), _loads(d), tm, a)
            for s, line, t, step, v, d, tm, a in self._db.execute(query, args)
        ]

    def latest_intermediates(self, sequence: int | None = None) -> dict[int, tuple[Any, int, int]]:
        """For each trial (or the one numbered ``sequence``): the latest intermediate value of
        its latest attempt, that value's step, and how many that attempt reported."""
        only = "" if sequence is None else " AND i.sequence = ?"
        rows = self._db.execute(
            "SELECT m.sequence, m.value, m.step, x.n FROM metrics m JOIN ("
            " SELECT i.sequence, MAX(i.line) AS last, COUNT(*) AS n FROM metrics i"
            " JOIN trials t ON t.sequence = i.sequence AND i.attempt = t.attempts"
            f" WHERE i.type = 'INTERMEDIATE'{only} GROUP BY i.sequence"
            ") x ON m.sequence = x.sequence AND m.line = x.last",
            () if sequence is None else (sequence,),
        )
        return {seq: (json.loads(value), step, n) for seq, value, step, n in rows}

    def last_metric_lines(self) -> dict[int, int]:
        """The highest metrics-file line stored for each trial (what to skip on re-read)."""
        rows = self._db.execute("SELECT sequence, MAX(line) FROM metrics GROUP BY sequence")
        return {sequence: line for sequence, line in rows}

    def attempt_metric_counts(self, sequence: int, attempt: int) -> int:
        """How many intermediate results an attempt of a trial has stored."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM metrics WHERE sequence = ? AND attempt = ? "
            "AND type = 'INTERMEDIATE'",
            (sequence, attempt),
        ).fetchone()
        return int(row[0])

    # -- imported results ------------------------------------------------------------------

    def add_imported(self, records: Iterable[tuple[dict[str, Any], Any]]) -> list[int]:
        """Store results imported from elsewhere (parameters, value); returns their ids."""
        ids = []
        for parameters, value in records:
            cursor = self._db.execute(
                "INSERT INTO imported (time, parameters, value) VALUES (?, ?, ?)",
                (time.time(), json.dumps(parameters), json.dumps(value)),
            )
            assert cursor.lastrowid is not None
            ids.append(cursor.lastrowid)
        return ids

    def imported(self) -> list[tuple[int, dict[str, Any], Any]]:
        rows = self._db.execute("SELECT id, parameters, value FROM imported ORDER BY id")
        return [(i, json.loads(p), _loads(v)) for i, p, v in rows]
