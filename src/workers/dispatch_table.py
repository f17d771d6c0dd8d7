"""The dispatcher's own tables: its position in the log, and the eval runs still open.

`promptrecord_dispatch_tracking` holds one row per follower (the dispatcher's is named
`dispatcher`); `promptrecord_dispatch_runs` lists every run the dispatcher saw requested and
not yet completed or failed. Both change in one transaction per page of the log, so the
open runs the reconciler reads always agree with the dispatcher's position. They live in
the database of the events (the SQLite file, or the PostgreSQL schema), apart from the
views: the views may be rebuilt or kept by another process, and neither should reset what
was dispatched.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from promptrecord.persistence.sqlite import connect_events_file, immediate_transaction
from promptrecord.settings import Settings

TRACKING_TABLE = "promptrecord_dispatch_tracking"
RUNS_TABLE = "promptrecord_dispatch_runs"
DISPATCHER = "dispatcher"


@dataclass(frozen=True)
class OpenRun:
    """A run requested and not finished, as far as the dispatcher has read."""

    event_id: str  # of its `EvalRun.Requested`: the run's idempotency and lease key
    workspace: str
    run_id: str
    position: int  # of its `Requested` in the log


class DispatchTable(ABC):
    """Position and open runs of the log followers that enqueue work."""

    @abstractmethod
    def create_tables(self) -> None: ...

    @abstractmethod
    def position(self, name: str = DISPATCHER) -> int: ...

    @abstractmethod
    def advance(
        self,
        position: int,
        opened: Iterable[OpenRun] = (),
        closed: Iterable[str] = (),
        name: str = DISPATCHER,
    ) -> None:
        """Record runs opened and closed (by event id) and move to `position`, at once.
        The position never moves back: two dispatchers may race."""

    @abstractmethod
    def open_runs(self) -> list[OpenRun]: ...

    @abstractmethod
    def close(self) -> None: ...


class SQLiteDispatchTable(DispatchTable):
    """In the events' SQLite file, through one connection guarded by a lock."""

    def __init__(self, path: str) -> None:
        self._connection = connect_events_file(path)
        self._lock = threading.Lock()

    def create_tables(self) -> None:
        with self._lock:
            self._connection.execute(
                f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} "
                "(name TEXT PRIMARY KEY, position INTEGER NOT NULL)"
            )
            self._connection.execute(
                f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (event_id TEXT PRIMARY KEY, "
                "workspace TEXT NOT NULL, run_id TEXT NOT NULL, position INTEGER NOT NULL)"
            )

    def position(self, name: str = DISPATCHER) -> int:
        with self._lock:
            row = self._connection.execute(
                f"SELECT position FROM {TRACKING_TABLE} WHERE name = ?", (name,)
            ).fetchone()
        return int(row[0]) if row else 0

    def advance(
        self,
        position: int,
        opened: Iterable[OpenRun] = (),
        closed: Iterable[str] = (),
        name: str = DISPATCHER,
    ) -> None:
        with self._lock, immediate_transaction(self._connection) as cursor:
            cursor.executemany(
                f"INSERT INTO {RUNS_TABLE} VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(r.event_id, r.workspace, r.run_id, r.position) for r in opened],
            )
            cursor.executemany(
                f"DELETE FROM {RUNS_TABLE} WHERE event_id = ?", [(e,) for e in closed]
            )
            cursor.execute(
                f"INSERT INTO {TRACKING_TABLE} VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                f"SET position = excluded.position WHERE {TRACKING_TABLE}.position < "
                "excluded.position",
                (name, position),
            )

    def open_runs(self) -> list[OpenRun]:
        with self._lock:
            rows = self._connection.execute(
                f"SELECT event_id, workspace, run_id, position FROM {RUNS_TABLE} ORDER BY position"
            ).fetchall()
        return [OpenRun(str(e), str(w), str(r), int(p)) for e, w, r, p in rows]

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class PostgresDispatchTable(DispatchTable):
    """In the events' PostgreSQL schema, through a small autocommit pool."""

    def __init__(self, env: Mapping[str, str]) -> None:
        schema = env.get("POSTGRES_SCHEMA")
        self._tracking = (
            sql.Identifier(schema, TRACKING_TABLE) if schema else sql.Identifier(TRACKING_TABLE)
        )
        self._runs = sql.Identifier(schema, RUNS_TABLE) if schema else sql.Identifier(RUNS_TABLE)
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
            max_size=2,
            kwargs={"autocommit": True},
            name="promptrecord-dispatch",
            open=True,
            timeout=10,
        )

    def create_tables(self) -> None:
        statements = (
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
            ).format(self._tracking),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (event_id TEXT PRIMARY KEY, workspace TEXT NOT "
                "NULL, run_id TEXT NOT NULL, position BIGINT NOT NULL)"
            ).format(self._runs),
        )
        with self._pool.connection() as conn:
            for statement in statements:
                # Another process may create it at the same moment.
                with contextlib.suppress(psycopg.errors.UniqueViolation):
                    conn.execute(statement)

    def position(self, name: str = DISPATCHER) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT position FROM {} WHERE name = %s").format(self._tracking), (name,)
            ).fetchone()
        return int(row[0]) if row else 0

    def advance(
        self,
        position: int,
        opened: Iterable[OpenRun] = (),
        closed: Iterable[str] = (),
        name: str = DISPATCHER,
    ) -> None:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING").format(
                    self._runs
                ),
                [(r.event_id, r.workspace, r.run_id, r.position) for r in opened],
            )
            cursor.executemany(
                sql.SQL("DELETE FROM {} WHERE event_id = %s").format(self._runs),
                [(e,) for e in closed],
            )
            cursor.execute(
                sql.SQL(
                    "INSERT INTO {t} AS held VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                    "SET position = excluded.position WHERE held.position < excluded.position"
                ).format(t=self._tracking),
                (name, position),
            )

    def open_runs(self) -> list[OpenRun]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT event_id, workspace, run_id, position FROM {} ORDER BY position"
                ).format(self._runs)
            ).fetchall()
        return [OpenRun(str(e), str(w), str(r), int(p)) for e, w, r, p in rows]

    def close(self) -> None:
        self._pool.close()


def open_dispatch_table(settings: Settings) -> DispatchTable:
    """The table for the database the events live in, created if missing."""
    env = settings.eventsourcing_env()
    table: DispatchTable
    if settings.is_postgres:
        table = PostgresDispatchTable(env)
    else:
        table = SQLiteDispatchTable(env["SQLITE_DBNAME"])
    try:
        table.create_tables()
    except BaseException:
        table.close()
        raise
    return table


__all__ = [
    "DISPATCHER",
    "DispatchTable",
    "OpenRun",
    "PostgresDispatchTable",
    "SQLiteDispatchTable",
    "open_dispatch_table",
]
