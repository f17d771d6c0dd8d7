"""The execution store in the events' SQLite file: one connection, writes serialised."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from promptrecord.projections.executions import (
    EXECUTION_COLUMNS,
    EXECUTIONS_TABLE,
    FEEDBACK_TABLE,
    IMMUTABLE_MESSAGE,
    JUDGE,
    LATENCY_TABLE,
    ROLLUP_SUMS,
    ROLLUPS_TABLE,
    SCORES_TABLE,
    Execution,
    ExecutionStore,
    JudgeCandidate,
    Rollup,
    RollupDelta,
    RollupKey,
    StoredExecution,
    assemble,
    column_values,
    rollup_deltas,
)

KEY_COLUMNS = "workspace, prompt, version, environment, hour"


def stamp(moment: datetime) -> str:
    """A UTC time as fixed-width ISO text, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unstamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def row_of(execution: Execution, received_at: str) -> tuple[Any, ...]:
    return column_values(execution, stamp(execution.started_at), received_at)


SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {EXECUTIONS_TABLE} (started_at TEXT NOT NULL, id TEXT NOT NULL, "
    "workspace TEXT NOT NULL, prompt TEXT NOT NULL, version INTEGER NOT NULL, environment TEXT "
    "NOT NULL, tenant TEXT, request_id TEXT, resolve_reason TEXT, model TEXT, provider TEXT, "
    "latency_ms REAL NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, "
    "cost_usd REAL, status TEXT NOT NULL, error TEXT, score REAL, input TEXT, output TEXT, "
    "metadata TEXT, sample REAL NOT NULL, received_at TEXT NOT NULL, "
    "PRIMARY KEY (started_at, id)) WITHOUT ROWID",
    f"CREATE INDEX IF NOT EXISTS {EXECUTIONS_TABLE}_id ON {EXECUTIONS_TABLE} (id)",
    f"CREATE INDEX IF NOT EXISTS {EXECUTIONS_TABLE}_tenant ON {EXECUTIONS_TABLE} "
    "(workspace, tenant, started_at) WHERE tenant IS NOT NULL",
    f"CREATE TABLE IF NOT EXISTS {FEEDBACK_TABLE} (execution_id TEXT NOT NULL, workspace TEXT "
    "NOT NULL, rating TEXT NOT NULL, comment TEXT, created_at TEXT NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {FEEDBACK_TABLE}_execution ON {FEEDBACK_TABLE} (execution_id)",
    f"CREATE TABLE IF NOT EXISTS {SCORES_TABLE} (execution_id TEXT NOT NULL, source TEXT NOT "
    "NULL, workspace TEXT NOT NULL, score REAL NOT NULL, created_at TEXT NOT NULL, "
    "PRIMARY KEY (execution_id, source))",
    f"CREATE TABLE IF NOT EXISTS {ROLLUPS_TABLE} (workspace TEXT NOT NULL, prompt TEXT NOT NULL, "
    "version INTEGER NOT NULL, environment TEXT NOT NULL, hour INTEGER NOT NULL, "
    + ", ".join(f"{name} REAL NOT NULL DEFAULT 0" for name in ROLLUP_SUMS)
    + f", PRIMARY KEY ({KEY_COLUMNS}))",
    f"CREATE TABLE IF NOT EXISTS {LATENCY_TABLE} (workspace TEXT NOT NULL, prompt TEXT NOT NULL, "
    "version INTEGER NOT NULL, environment TEXT NOT NULL, hour INTEGER NOT NULL, bucket INTEGER "
    f"NOT NULL, count INTEGER NOT NULL, PRIMARY KEY ({KEY_COLUMNS}, bucket))",
    *(
        f"CREATE TRIGGER IF NOT EXISTS {table}_append_only_{operation.lower()} BEFORE "
        f"{operation} ON {table} BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE}'); END"
        for table in (EXECUTIONS_TABLE, FEEDBACK_TABLE, SCORES_TABLE)
        for operation in ("UPDATE", "DELETE")
    ),
)

INSERT_EXECUTION = (
    f"INSERT INTO {EXECUTIONS_TABLE} ({', '.join(EXECUTION_COLUMNS)}) VALUES "
    f"({', '.join('?' for _ in EXECUTION_COLUMNS)}) ON CONFLICT DO NOTHING"
)
UPSERT_ROLLUP = (
    f"INSERT INTO {ROLLUPS_TABLE} AS r ({KEY_COLUMNS}, {', '.join(ROLLUP_SUMS)}) VALUES "
    f"(?, ?, ?, ?, ?, {', '.join('?' for _ in ROLLUP_SUMS)}) ON CONFLICT ({KEY_COLUMNS}) "
    "DO UPDATE SET " + ", ".join(f"{name} = r.{name} + excluded.{name}" for name in ROLLUP_SUMS)
)
UPSERT_LATENCY = (
    f"INSERT INTO {LATENCY_TABLE} AS h ({KEY_COLUMNS}, bucket, count) VALUES (?, ?, ?, ?, ?, ?, ?) "
    f"ON CONFLICT ({KEY_COLUMNS}, bucket) DO UPDATE SET count = h.count + excluded.count"
)
SELECT_STORED = (
    "SELECT id, workspace, prompt, version, environment, started_at FROM "
    f"{EXECUTIONS_TABLE} WHERE workspace = ? AND id = ? ORDER BY started_at LIMIT 1"
)


def _sums_only(name: str, value: float) -> dict[str, float]:
    sums = dict.fromkeys(ROLLUP_SUMS, 0.0)
    sums[name] = value
    return sums


class SQLiteExecutionStore(ExecutionStore):
    """In the events' SQLite file, through one connection guarded by a lock."""

    def __init__(self, path: str) -> None:
        # A long busy timeout: the event store writes to the same file from other threads.
        self._connection = sqlite3.connect(
            path,
            timeout=30,
            isolation_level=None,
            check_same_thread=False,
            uri=path.startswith("file:"),
        )
        self._lock = threading.Lock()

    def create_tables(self) -> None:
        with self._lock:
            for statement in SCHEMA:
                self._connection.execute(statement)

    def _write(self, work: Any) -> Any:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                result = work(cursor)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            return result

    def ingest(self, executions: Iterable[Execution]) -> list[bool]:
        executions = list(executions)  # checked before the write lock is taken
        if not executions:
            return []
        received_at = stamp(datetime.now(UTC))

        def work(cursor: sqlite3.Cursor) -> list[bool]:
            new: list[bool] = []
            for execution in executions:
                cursor.execute(INSERT_EXECUTION, row_of(execution, received_at))
                new.append(cursor.rowcount == 1)
            inserted = [e for e, is_new in zip(executions, new, strict=True) if is_new]
            self._upsert(cursor, rollup_deltas(inserted))
            return new

        result: list[bool] = self._write(work)
        return result

    @staticmethod
    def _upsert(cursor: sqlite3.Cursor, deltas: list[tuple[RollupKey, RollupDelta]]) -> None:
        cursor.executemany(
            UPSERT_ROLLUP, [(*key, *(d.sums[n] for n in ROLLUP_SUMS)) for key, d in deltas]
        )
        cursor.executemany(
            UPSERT_LATENCY,
            [(*key, bucket, count) for key, d in deltas for bucket, count in d.latency.items()],
        )

    def find(self, workspace: str, execution_id: str) -> StoredExecution | None:
        with self._lock:
            row = self._connection.execute(SELECT_STORED, (workspace, execution_id)).fetchone()
        return _stored(row)

    def add_feedback(
        self, workspace: str, execution_id: str, rating: str, comment: str | None, at: datetime
    ) -> StoredExecution | None:
        def work(cursor: sqlite3.Cursor) -> StoredExecution | None:
            stored = _stored(cursor.execute(SELECT_STORED, (workspace, execution_id)).fetchone())
            if stored is None:
                return None
            cursor.execute(
                f"INSERT INTO {FEEDBACK_TABLE} VALUES (?, ?, ?, ?, ?)",
                (execution_id, workspace, rating, comment, stamp(at)),
            )
            delta = RollupDelta(sums=_sums_only(f"feedback_{rating}", 1))
            self._upsert(cursor, [(stored.rollup_key, delta)])
            return stored

        result: StoredExecution | None = self._write(work)
        return result

    def add_scores(self, workspace: str, scores: Sequence[tuple[str, float, str]]) -> int:
        created_at = stamp(datetime.now(UTC))

        def work(cursor: sqlite3.Cursor) -> int:
            deltas: dict[RollupKey, RollupDelta] = {}
            for execution_id, score, source in scores:
                row = cursor.execute(SELECT_STORED, (workspace, execution_id)).fetchone()
                stored = _stored(row)
                if stored is None:
                    continue
                cursor.execute(
                    f"INSERT INTO {SCORES_TABLE} VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (execution_id, source, workspace, score, created_at),
                )
                if cursor.rowcount == 1:
                    deltas.setdefault(stored.rollup_key, RollupDelta()).add_score(score)
            self._upsert(cursor, sorted(deltas.items(), key=lambda item: item[0]))
            return sum(int(d.sums["score_count"]) for d in deltas.values())

        result: int = self._write(work)
        return result

    def judge_candidates(
        self, workspace: str, prompt: str, sample_rate: float, since: datetime, limit: int
    ) -> list[JudgeCandidate]:
        query = (
            "SELECT e.id, e.prompt, e.version, e.environment, e.started_at, e.input, e.output, "
            f"e.model, e.sample FROM {EXECUTIONS_TABLE} e WHERE e.started_at >= ? AND "
            "e.workspace = ? AND e.prompt = ? AND e.output IS NOT NULL AND e.sample < ? AND "
            f"NOT EXISTS (SELECT 1 FROM {SCORES_TABLE} s WHERE s.execution_id = e.id AND "
            "s.source = ?) ORDER BY e.started_at, e.id LIMIT ?"
        )
        with self._lock:
            rows = self._connection.execute(
                query, (stamp(since), workspace, prompt, sample_rate, JUDGE, limit)
            ).fetchall()
        return [
            JudgeCandidate(
                id=r[0],
                prompt=r[1],
                version=int(r[2]),
                environment=r[3],
                started_at=unstamp(r[4]),
                input=None if r[5] is None else json.loads(r[5]),
                output=r[6],
                model=r[7],
                sample=float(r[8]),
            )
            for r in rows
        ]

    def rollups(
        self,
        workspace: str,
        prompt: str,
        environment: str,
        start_hour: int,
        end_hour: int,
        versions: Sequence[int] | None = None,
    ) -> list[Rollup]:
        where = "workspace = ? AND prompt = ? AND environment = ? AND hour >= ? AND hour < ?"
        params: list[Any] = [workspace, prompt, environment, start_hour, end_hour]
        if versions is not None:
            where += f" AND version IN ({', '.join('?' for _ in versions)})"
            params += list(versions)
        with self._lock:
            rows = self._connection.execute(
                f"SELECT version, hour, {', '.join(ROLLUP_SUMS)} FROM {ROLLUPS_TABLE} "
                f"WHERE {where}",
                params,
            ).fetchall()
            buckets = self._connection.execute(
                f"SELECT version, hour, bucket, count FROM {LATENCY_TABLE} WHERE {where}", params
            ).fetchall()
        return assemble(prompt, environment, rows, buckets)

    def version_counts(
        self,
        workspace: str,
        tenant: str,
        prompt: str,
        environment: str,
        start: datetime,
        end: datetime,
    ) -> dict[int, int]:
        with self._lock:
            rows = self._connection.execute(
                f"SELECT version, count(*) FROM {EXECUTIONS_TABLE} WHERE workspace = ? AND "
                "tenant = ? AND started_at >= ? AND started_at < ? AND prompt = ? AND "
                "environment = ? GROUP BY version ORDER BY version",
                (workspace, tenant, stamp(start), stamp(end), prompt, environment),
            ).fetchall()
        return {int(version): int(count) for version, count in rows}

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _stored(row: Any) -> StoredExecution | None:
    if row is None:
        return None
    started_at = row[5] if isinstance(row[5], datetime) else unstamp(row[5])
    return StoredExecution(str(row[0]), row[1], row[2], int(row[3]), row[4], started_at)
