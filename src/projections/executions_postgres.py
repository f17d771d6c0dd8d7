"""The execution store on PostgreSQL: executions partitioned by day, append-only by trigger.

A batch is COPYed straight into the table as it is checked, and its rollups (histograms
included) upserted in one statement, in one transaction. When some of it is stored already (a
retried batch), the key refuses the COPY and the batch goes again through a staging table and
`INSERT … ON CONFLICT DO NOTHING RETURNING`, rolling up only the rows that statement really
inserted: a retried or concurrent duplicate batch waits on the first one's key locks, inserts
nothing and adds nothing. Day partitions are created on demand, once, under an advisory lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import orjson
import psycopg
from psycopg import postgres, sql
from psycopg.adapt import Dumper
from psycopg.conninfo import make_conninfo
from psycopg.pq import Format
from psycopg.types.json import set_json_dumps
from psycopg_pool import ConnectionPool

from promptrecord.projections.executions import (
    EXECUTIONS_TABLE,
    FEEDBACK_TABLE,
    JUDGE,
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
    rollup_deltas,
    sample_of,
)
from promptrecord.projections.executions_postgres_sql import COPY_TYPES, Statements


def row_of(e: Execution, received_at: datetime) -> tuple[Any, ...]:
    """An execution as a binary COPY row, in the order of `EXECUTION_COLUMNS`, for a connection
    set up by `configure` (the id as its text, `input` and `metadata` as they are)."""
    return (
        e.started_at,
        e.id,
        e.workspace,
        e.prompt,
        e.version,
        e.environment,
        e.tenant,
        e.request_id,
        e.resolve_reason,
        e.model,
        e.provider,
        e.latency_ms,
        e.tokens_in,
        e.tokens_out,
        e.cost_usd,
        e.status,
        e.error,
        e.score,
        e.input,
        e.output,
        e.metadata,
        sample_of(e.id),
        received_at,
    )


def dump_json(value: Any) -> bytes:
    """jsonb for COPY by orjson, a tenth of `json.dumps`'s time; an integer past 64 bits,
    which orjson refuses, by the standard library (jsonb keeps it exact)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


class UuidTextBinaryDumper(Dumper):
    """A canonical UUID text as a binary uuid, for COPY only (registered for no Python type):
    an execution's id is already that text, and parsing it into a `UUID` costs 1 µs a row."""

    format = Format.BINARY
    oid = postgres.types["uuid"].oid

    def dump(self, obj: Any) -> bytes:
        return bytes.fromhex(obj.replace("-", ""))


def configure(conn: psycopg.Connection[Any]) -> None:
    """A connection's dumpers for the executions' COPY: jsonb by orjson, ids as text."""
    set_json_dumps(dump_json, conn)
    conn.adapters.register_dumper(None, UuidTextBinaryDumper)


def _primary_key(execution: Execution) -> tuple[str, datetime]:
    return (execution.id, execution.started_at)


def _day(execution: Execution) -> date:
    """The UTC day of the partition the execution goes to."""
    at = execution.started_at
    return (at if at.tzinfo is UTC else at.astimezone(UTC)).date()


class _NewDay(Exception):
    """An execution of a day whose partition this process has not made sure of."""


class PostgresExecutionStore(ExecutionStore):
    """In the events' PostgreSQL schema, through a small pool."""

    def __init__(self, env: Mapping[str, str], pool_size: int = 4) -> None:
        self._schema = env.get("POSTGRES_SCHEMA") or "public"
        params = {
            "host": env.get("POSTGRES_HOST", "127.0.0.1"),
            "port": env.get("POSTGRES_PORT", "5432"),
            "dbname": env.get("POSTGRES_DBNAME", "postgres"),
            "user": env.get("POSTGRES_USER", "postgres"),
        }
        if env.get("POSTGRES_PASSWORD"):
            params["password"] = env["POSTGRES_PASSWORD"]
        self._pool = ConnectionPool(
            make_conninfo(**params),
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            configure=configure,
            name="promptrecord-executions",
            open=True,
            timeout=10,
        )
        self._days: set[date] = set()  # partitions known to exist
        self._sql = Statements(self._schema)

    def _table(self, name: str) -> sql.Composable:
        return self._sql.table(name)

    # ------------------------------------------------------------------ tables

    def create_tables(self) -> None:
        with self._pool.connection() as conn:
            key = "promptrecord_create:" + self._schema
            # Replicas starting together would race in the catalog otherwise.
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            try:
                for statement in self._sql.schema():
                    conn.execute(statement)
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))

    def _ensure_partitions(self, days: set[date]) -> None:
        missing = days - self._days
        if not missing:
            return
        with self._pool.connection() as conn, conn.transaction():
            key = "promptrecord_executions_partition:" + self._schema
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
            for day in sorted(missing):
                conn.execute(self._sql.partition(day))
        self._days |= missing

    # ------------------------------------------------------------------ writes

    def ingest(self, executions: Iterable[Execution]) -> list[bool]:
        """Each execution is COPYed as the iterator gives it, so PostgreSQL inserts while
        the caller checks the next one. An execution of a day with no partition known here,
        a key stored before (a retry) or a deadlock with an overlapping batch (rows go in
        arrival order) sends the batch down the sorted path instead."""
        remaining = iter(executions)
        taken: list[Execution] = []
        received_at = datetime.now(UTC)
        self._ensure_partitions({received_at.date()})  # where nearly every execution goes
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                with cursor.copy(self._sql.copy_executions) as copy:
                    copy.set_types(COPY_TYPES)
                    for execution in remaining:
                        taken.append(execution)
                        if _day(execution) not in self._days:
                            raise _NewDay
                        copy.write_row(row_of(execution, received_at))
                    deltas = rollup_deltas(taken)  # while the server takes the last rows
                self._upsert(cursor, deltas)
            return [True] * len(taken)
        except _NewDay:
            retried = False
        except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
            retried = True
        taken.extend(remaining)  # what the iterator had not given yet
        return self._ingest_sorted(taken, received_at, retried)

    def _ingest_sorted(
        self, executions: list[Execution], received_at: datetime, retried: bool
    ) -> list[bool]:
        self._ensure_partitions({_day(e) for e in executions})
        # In key order: two overlapping batches then take the key locks in the same order
        # and one waits for the other instead of deadlocking.
        ordered = sorted(executions, key=_primary_key)
        rows = [row_of(e, received_at) for e in ordered]
        if not retried and len({_primary_key(e) for e in ordered}) == len(ordered):
            try:
                with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                    self._copy(cursor, self._sql.copy_executions, rows)
                    self._upsert(cursor, rollup_deltas(executions))
                return [True] * len(executions)
            except psycopg.errors.UniqueViolation:
                pass  # some were stored before: a retry, which the next path sorts out
        return self._ingest_retried(executions, rows)

    def _ingest_retried(
        self, executions: Sequence[Execution], rows: list[tuple[Any, ...]]
    ) -> list[bool]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.execute(self._sql.create_staging)
            self._copy(cursor, self._sql.copy_staging, rows)
            cursor.execute(self._sql.insert_staged)
            inserted = {(str(id_), started_at) for id_, started_at in cursor.fetchall()}
            new: list[bool] = []
            for execution in executions:
                key = _primary_key(execution)
                new.append(key in inserted)
                inserted.discard(key)  # a duplicate later in the same batch is not new
            rolled = [e for e, is_new in zip(executions, new, strict=True) if is_new]
            self._upsert(cursor, rollup_deltas(rolled))
        return new

    @staticmethod
    def _copy(cursor: psycopg.Cursor[Any], statement: sql.Composed, rows: list[Any]) -> None:
        with cursor.copy(statement) as copy:
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)

    def _upsert(
        self, cursor: psycopg.Cursor[Any], deltas: list[tuple[RollupKey, RollupDelta]]
    ) -> None:
        """One statement for the whole batch, columns as arrays: a batch touches a few rollup
        rows but hundreds of histogram buckets. Rows go in key order, so concurrent batches
        lock them in the same order."""
        if not deltas:
            return
        rows = [(*key, *(float(d.sums[n]) for n in ROLLUP_SUMS)) for key, d in deltas]
        places: list[int] = []
        buckets: list[int] = []
        counts: list[int] = []
        for place, (_, delta) in enumerate(deltas, start=1):
            latency = delta.latency
            places += [place] * len(latency)
            buckets += latency.keys()
            counts += latency.values()
        # Hundreds of integers go as array literals: one `join` each, where the adapter would
        # dump them one by one.
        arrays = ["{" + ",".join(map(str, column)) + "}" for column in (places, buckets, counts)]
        cursor.execute(
            self._sql.upsert_rollup,
            [*(list(column) for column in zip(*rows, strict=True)), *arrays],
        )

    def find(self, workspace: str, execution_id: str) -> StoredExecution | None:
        with self._pool.connection() as conn:
            row = conn.execute(self._sql.select_stored, (execution_id, workspace)).fetchone()
        return _stored(row)

    def add_feedback(
        self, workspace: str, execution_id: str, rating: str, comment: str | None, at: datetime
    ) -> StoredExecution | None:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            stored = _stored(
                cursor.execute(self._sql.select_stored, (execution_id, workspace)).fetchone()
            )
            if stored is None:
                return None
            cursor.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s)").format(
                    self._table(FEEDBACK_TABLE)
                ),
                (execution_id, workspace, rating, comment, at),
            )
            delta = RollupDelta()
            delta.sums[f"feedback_{rating}"] = 1
            self._upsert(cursor, [(stored.rollup_key, delta)])
        return stored

    def add_scores(self, workspace: str, scores: Sequence[tuple[str, float, str]]) -> int:
        created_at = datetime.now(UTC)
        deltas: dict[RollupKey, RollupDelta] = {}
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            for execution_id, score, source in scores:
                row = cursor.execute(self._sql.select_stored, (execution_id, workspace)).fetchone()
                stored = _stored(row)
                if stored is None:
                    continue
                cursor.execute(
                    sql.SQL(
                        "INSERT INTO {} VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                    ).format(self._table(SCORES_TABLE)),
                    (execution_id, source, workspace, score, created_at),
                )
                if cursor.rowcount == 1:
                    deltas.setdefault(stored.rollup_key, RollupDelta()).add_score(score)
            self._upsert(cursor, sorted(deltas.items(), key=lambda item: item[0]))
        return sum(int(d.sums["score_count"]) for d in deltas.values())

    # ------------------------------------------------------------------ reads

    def judge_candidates(
        self, workspace: str, prompt: str, sample_rate: float, since: datetime, limit: int
    ) -> list[JudgeCandidate]:
        query = sql.SQL(
            "SELECT e.id, e.prompt, e.version, e.environment, e.started_at, e.input, e.output, "
            "e.model, e.sample FROM {executions} e WHERE e.started_at >= %s AND "
            "e.workspace = %s AND e.prompt = %s AND e.output IS NOT NULL AND e.sample < %s AND "
            "NOT EXISTS (SELECT 1 FROM {scores} s WHERE s.execution_id = e.id AND "
            "s.source = %s) ORDER BY e.started_at, e.id LIMIT %s"
        ).format(executions=self._table(EXECUTIONS_TABLE), scores=self._table(SCORES_TABLE))
        with self._pool.connection() as conn:
            rows = conn.execute(
                query, (since, workspace, prompt, sample_rate, JUDGE, limit)
            ).fetchall()
        return [
            JudgeCandidate(
                id=str(r[0]),
                prompt=r[1],
                version=int(r[2]),
                environment=r[3],
                started_at=r[4],
                input=r[5],
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
        where = "workspace = %s AND prompt = %s AND environment = %s AND hour >= %s AND hour < %s"
        params: list[Any] = [workspace, prompt, environment, start_hour, end_hour]
        if versions is not None:
            where += " AND version = ANY(%s)"
            params.append(list(versions))
        with self._pool.connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT version, hour, {sums}, latency_buckets, latency_counts FROM {table} "
                    "WHERE {where}"
                ).format(
                    sums=sql.SQL(", ".join(ROLLUP_SUMS)),
                    table=self._table(ROLLUPS_TABLE),
                    where=sql.SQL(where),
                ),
                params,
            ).fetchall()
        buckets = [
            (row[0], row[1], bucket, count)
            for row in rows
            for bucket, count in zip(row[-2], row[-1], strict=True)
        ]
        return assemble(prompt, environment, [row[:-2] for row in rows], buckets)

    def version_counts(
        self,
        workspace: str,
        tenant: str,
        prompt: str,
        environment: str,
        start: datetime,
        end: datetime,
    ) -> dict[int, int]:
        query = sql.SQL(
            "SELECT version, count(*) FROM {} WHERE workspace = %s AND tenant = %s AND "
            "started_at >= %s AND started_at < %s AND prompt = %s AND environment = %s "
            "GROUP BY version ORDER BY version"
        ).format(self._table(EXECUTIONS_TABLE))
        with self._pool.connection() as conn:
            rows = conn.execute(
                query, (workspace, tenant, start, end, prompt, environment)
            ).fetchall()
        return {int(version): int(count) for version, count in rows}

    def close(self) -> None:
        self._pool.close()


def _stored(row: Any) -> StoredExecution | None:
    if row is None:
        return None
    return StoredExecution(str(row[0]), row[1], row[2], int(row[3]), row[4], row[5])
