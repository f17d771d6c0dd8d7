"""Webhook deliveries and their attempts, and the endpoints the webhook follower knows.

Tables in the database of the events (the SQLite file, or the PostgreSQL schema), beside
the dispatcher's (`promptrecord.workers.dispatch_table`): the webhook follower's position
(row `webhooks` of the dispatch tracking table), the endpoints it has folded from
`WebhookEndpoint.*` events and the deliveries it created change in one transaction per page
of the log, so a crash never creates a delivery twice nor skips one. A delivery's id is
uuid5 of its endpoint and event, and is the `webhook-id` of every attempt.
"""

from __future__ import annotations

import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from promptrecord.persistence.sqlite import connect_events_file, immediate_transaction
from promptrecord.settings import Settings
from promptrecord.workers.dispatch_table import TRACKING_TABLE

FOLLOWER = "webhooks"  # the follower's row in the dispatch tracking table
ENDPOINTS = "promptrecord_webhook_endpoints"
DELIVERIES = "promptrecord_webhook_deliveries"
ATTEMPTS = "promptrecord_webhook_attempts"
STATUSES = ("pending", "delivered", "failed", "cancelled")

_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} "
    "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {ENDPOINTS} (workspace TEXT NOT NULL, endpoint_id TEXT NOT NULL, "
    "event_types TEXT NOT NULL, enabled INTEGER NOT NULL, removed INTEGER NOT NULL, "
    "PRIMARY KEY (workspace, endpoint_id))",
    f"CREATE TABLE IF NOT EXISTS {DELIVERIES} (delivery_id TEXT PRIMARY KEY, "
    "workspace TEXT NOT NULL, endpoint_id TEXT NOT NULL, event_id TEXT NOT NULL, "
    "event_type TEXT NOT NULL, position BIGINT NOT NULL, body TEXT NOT NULL, "
    "status TEXT NOT NULL, series INTEGER NOT NULL, attempts INTEGER NOT NULL, "
    "created_at DOUBLE PRECISION NOT NULL, next_attempt_at DOUBLE PRECISION, "
    "last_status_code INTEGER, last_error TEXT)",
    f"CREATE INDEX IF NOT EXISTS {DELIVERIES}_endpoint ON {DELIVERIES} "
    "(workspace, endpoint_id, position)",
    f"CREATE INDEX IF NOT EXISTS {DELIVERIES}_event ON {DELIVERIES} (workspace, event_id)",
    f"CREATE INDEX IF NOT EXISTS {DELIVERIES}_due ON {DELIVERIES} (status, next_attempt_at)",
    f"CREATE TABLE IF NOT EXISTS {ATTEMPTS} (delivery_id TEXT NOT NULL, number INTEGER NOT NULL, "
    "series INTEGER NOT NULL, attempted_at DOUBLE PRECISION NOT NULL, status_code INTEGER, "
    "latency_ms DOUBLE PRECISION NOT NULL, error TEXT, PRIMARY KEY (delivery_id, number))",
)
_DELIVERY_COLUMNS = (
    "delivery_id, workspace, endpoint_id, event_id, event_type, position, body, status, "
    "series, attempts, created_at, next_attempt_at, last_status_code, last_error"
)


@dataclass
class EndpointRow:
    """What the follower needs of an endpoint to match events to it."""

    workspace: str
    endpoint_id: str
    event_types: list[str]
    enabled: bool = True
    removed: bool = False


@dataclass(frozen=True)
class Delivery:
    """One event for one endpoint: its fixed body and where its attempts stand."""

    delivery_id: str
    workspace: str
    endpoint_id: str
    event_id: str
    event_type: str
    position: int
    body: str
    status: str  # pending | delivered | failed | cancelled
    series: int  # 1, then one more per resend
    attempts: int  # attempts made in the current series
    created_at: float
    next_attempt_at: float | None
    last_status_code: int | None
    last_error: str | None


@dataclass(frozen=True)
class Attempt:
    """One POST (or one refusal to post) of a delivery."""

    delivery_id: str
    number: int  # over every series
    series: int
    attempted_at: float
    status_code: int | None
    latency_ms: float
    error: str | None


class _Database(ABC):
    @abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A cursor whose statements commit together."""

    @abstractmethod
    def close(self) -> None: ...


class _SQLite(_Database):
    def __init__(self, path: str) -> None:
        self._connection = connect_events_file(path)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._lock, immediate_transaction(self._connection) as cursor:
            yield cursor

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class _PgCursor:
    """psycopg's cursor taking the `?` placeholders the statements here are written with."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def execute(self, statement: str, params: Sequence[Any] = ()) -> _PgCursor:
        self._cursor.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
        return self

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        self._cursor.executemany(statement.replace("?", "%s"), rows)  # type: ignore[arg-type]

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


class _Postgres(_Database):
    def __init__(self, env: Mapping[str, str]) -> None:
        params = {
            "host": env.get("POSTGRES_HOST", "127.0.0.1"),
            "port": env.get("POSTGRES_PORT", "5432"),
            "dbname": env.get("POSTGRES_DBNAME", "postgres"),
            "user": env.get("POSTGRES_USER", "postgres"),
        }
        if env.get("POSTGRES_PASSWORD"):
            params["password"] = env["POSTGRES_PASSWORD"]
        if env.get("POSTGRES_SCHEMA"):
            params["options"] = f"-c search_path={env['POSTGRES_SCHEMA']}"
        self._pool = ConnectionPool(
            make_conninfo(**params),
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True},
            name="promptrecord-webhooks",
            open=True,
            timeout=10,
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            yield _PgCursor(cursor)

    def close(self) -> None:
        self._pool.close()


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), int(row[5]),
        str(row[6]), str(row[7]), int(row[8]), int(row[9]), float(row[10]),
        None if row[11] is None else float(row[11]),
        None if row[12] is None else int(row[12]), row[13],
    )  # fmt: skip


class WebhookStore:
    """Deliveries, attempts and the follower's endpoints, on SQLite or PostgreSQL."""

    def __init__(self, database: _Database) -> None:
        self._db = database

    def create_tables(self) -> None:
        for statement in _DDL:
            # Another process may create them at the same moment.
            with (
                contextlib.suppress(psycopg.errors.UniqueViolation),
                self._db.transaction() as cursor,
            ):
                cursor.execute(statement)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ the follower

    def position(self) -> int:
        with self._db.transaction() as cursor:
            row = cursor.execute(
                f"SELECT position FROM {TRACKING_TABLE} WHERE name = ?", (FOLLOWER,)
            ).fetchone()
        return int(row[0]) if row else 0

    def endpoints(self) -> dict[tuple[str, str], EndpointRow]:
        with self._db.transaction() as cursor:
            rows = cursor.execute(
                f"SELECT workspace, endpoint_id, event_types, enabled, removed FROM {ENDPOINTS}"
            ).fetchall()
        return {
            (w, e): EndpointRow(w, e, json.loads(t), bool(on), bool(gone))
            for w, e, t, on, gone in rows
        }

    def advance(
        self, position: int, endpoints: Iterable[EndpointRow], deliveries: Iterable[Delivery]
    ) -> None:
        """Write the page's endpoint changes and new deliveries and move to `position`, at
        once. A delivery already there is left as it is; the position never moves back."""
        with self._db.transaction() as cursor:
            cursor.executemany(
                f"INSERT INTO {ENDPOINTS} VALUES (?, ?, ?, ?, ?) ON CONFLICT "
                "(workspace, endpoint_id) DO UPDATE SET event_types = excluded.event_types, "
                "enabled = excluded.enabled, removed = excluded.removed",
                [
                    (e.workspace, e.endpoint_id, json.dumps(e.event_types), int(e.enabled),
                     int(e.removed))
                    for e in endpoints
                ],
            )  # fmt: skip
            cursor.executemany(
                f"INSERT INTO {DELIVERIES} ({_DELIVERY_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    (d.delivery_id, d.workspace, d.endpoint_id, d.event_id, d.event_type,
                     d.position, d.body, d.status, d.series, d.attempts, d.created_at,
                     d.next_attempt_at, d.last_status_code, d.last_error)
                    for d in deliveries
                ],
            )  # fmt: skip
            cursor.execute(
                f"INSERT INTO {TRACKING_TABLE} AS held VALUES (?, ?) ON CONFLICT (name) DO "
                "UPDATE SET position = excluded.position WHERE held.position < excluded.position",
                (FOLLOWER, position),
            )

    # ------------------------------------------------------------------ the actor

    def delivery(self, delivery_id: str) -> Delivery | None:
        with self._db.transaction() as cursor:
            row = cursor.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM {DELIVERIES} WHERE delivery_id = ?",
                (delivery_id,),
            ).fetchone()
        return _delivery(row) if row else None

    def record_attempt(
        self, attempt: Attempt, status: str, next_attempt_at: float | None
    ) -> Delivery | None:
        """Add the attempt and set the delivery's status and next attempt, at once."""
        with self._db.transaction() as cursor:
            cursor.execute(
                f"INSERT INTO {ATTEMPTS} VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (attempt.delivery_id, attempt.number, attempt.series, attempt.attempted_at,
                 attempt.status_code, attempt.latency_ms, attempt.error),
            )  # fmt: skip
            cursor.execute(
                f"UPDATE {DELIVERIES} SET status = ?, attempts = attempts + 1, "
                "next_attempt_at = ?, last_status_code = ?, last_error = ? WHERE delivery_id = ?",
                (status, next_attempt_at, attempt.status_code, attempt.error, attempt.delivery_id),
            )
        return self.delivery(attempt.delivery_id)

    def next_attempt_number(self, delivery_id: str) -> int:
        with self._db.transaction() as cursor:
            row = cursor.execute(
                f"SELECT COALESCE(MAX(number), 0) FROM {ATTEMPTS} WHERE delivery_id = ?",
                (delivery_id,),
            ).fetchone()
        return int(row[0]) + 1

    def cancel(self, delivery_id: str, reason: str) -> None:
        """Stop a pending delivery whose endpoint is disabled or removed."""
        with self._db.transaction() as cursor:
            cursor.execute(
                f"UPDATE {DELIVERIES} SET status = 'cancelled', next_attempt_at = NULL, "
                "last_error = ? WHERE delivery_id = ? AND status = 'pending'",
                (reason, delivery_id),
            )

    def resend(self, delivery_id: str, now: float) -> Delivery | None:
        """Start a new series of attempts, due now, under the same delivery id."""
        with self._db.transaction() as cursor:
            cursor.execute(
                f"UPDATE {DELIVERIES} SET status = 'pending', series = series + 1, attempts = 0, "
                "next_attempt_at = ? WHERE delivery_id = ?",
                (now, delivery_id),
            )
        return self.delivery(delivery_id)

    def due(self, now: float, limit: int = 1000) -> list[str]:
        """Pending deliveries whose next attempt is due, oldest first."""
        with self._db.transaction() as cursor:
            rows = cursor.execute(
                f"SELECT delivery_id FROM {DELIVERIES} WHERE status = 'pending' AND "
                "next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [str(row[0]) for row in rows]

    # ------------------------------------------------------------------ the API's reads

    def attempts(self, delivery_id: str) -> list[Attempt]:
        with self._db.transaction() as cursor:
            rows = cursor.execute(
                f"SELECT delivery_id, number, series, attempted_at, status_code, latency_ms, "
                f"error FROM {ATTEMPTS} WHERE delivery_id = ? ORDER BY number",
                (delivery_id,),
            ).fetchall()
        return [
            Attempt(str(d), int(n), int(s), float(t), None if c is None else int(c), float(ms), e)
            for d, n, s, t, c, ms, e in rows
        ]

    def for_endpoint(
        self,
        workspace: str,
        endpoint_id: str,
        status: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        """An endpoint's deliveries, newest event first, before log position `before`."""
        clauses = ["workspace = ?", "endpoint_id = ?"]
        params: list[str | int] = [workspace, endpoint_id]
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if before is not None:
            clauses.append("position < ?")
            params.append(before)
        with self._db.transaction() as cursor:
            rows = cursor.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM {DELIVERIES} WHERE {' AND '.join(clauses)} "
                "ORDER BY position DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [_delivery(row) for row in rows]

    def for_event(self, workspace: str, event_id: str) -> list[Delivery]:
        with self._db.transaction() as cursor:
            rows = cursor.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM {DELIVERIES} WHERE workspace = ? AND "
                "event_id = ? ORDER BY endpoint_id",
                (workspace, event_id),
            ).fetchall()
        return [_delivery(row) for row in rows]


def open_webhook_store(settings: Settings) -> WebhookStore:
    """The store for the database the events live in, its tables created if missing."""
    env = settings.eventsourcing_env()
    database: _Database = _Postgres(env) if settings.is_postgres else _SQLite(env["SQLITE_DBNAME"])
    store = WebhookStore(database)
    try:
        store.create_tables()
    except BaseException:
        store.close()
        raise
    return store


__all__ = [
    "FOLLOWER",
    "STATUSES",
    "Attempt",
    "Delivery",
    "EndpointRow",
    "WebhookStore",
    "open_webhook_store",
]
