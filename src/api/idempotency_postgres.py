"""The idempotency store in the PostgreSQL database (and schema) that also holds the events."""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from promptrecord.api.idempotency import (
    ABANDONED_SECONDS,
    TABLE,
    TTL_SECONDS,
    Claim,
    IdempotencyStore,
    StoredResponse,
)

PRUNE_EVERY_SECONDS = 60.0


def conninfo_from(env: Mapping[str, str]) -> str:
    """Connection parameters from the eventsourcing environment the settings produce."""
    params = {
        "host": env.get("POSTGRES_HOST", "127.0.0.1"),
        "port": env.get("POSTGRES_PORT", "5432"),
        "dbname": env.get("POSTGRES_DBNAME", "postgres"),
        "user": env.get("POSTGRES_USER", "postgres"),
    }
    if env.get("POSTGRES_PASSWORD"):
        params["password"] = env["POSTGRES_PASSWORD"]
    return make_conninfo(**params)


class PostgresIdempotencyStore(IdempotencyStore):
    """A small autocommit pool: each operation is one statement (two on a key already held)."""

    def __init__(self, env: Mapping[str, str], max_size: int = 4) -> None:
        schema = env.get("POSTGRES_SCHEMA")
        self._table = sql.Identifier(schema, TABLE) if schema else sql.Identifier(TABLE)
        self._index = sql.Identifier(f"{TABLE}_created_at")
        self._pool = ConnectionPool(
            conninfo_from(env),
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            name="promptrecord-idempotency",
            open=True,
            timeout=10,
        )
        self._pruned_at = 0.0

    def create_table(self) -> None:
        with self._pool.connection() as conn:
            try:
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (scope TEXT NOT NULL, key TEXT NOT NULL, "
                        "fingerprint TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
                        "status INTEGER, headers TEXT, body BYTEA, PRIMARY KEY (scope, key))"
                    ).format(self._table)
                )
                conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (created_at)").format(
                        self._index, self._table
                    )
                )
            except psycopg.errors.UniqueViolation:
                pass  # another replica created it at the same moment

    def reserve(self, scope: str, key: str, fingerprint: str, now: float) -> Claim:
        with self._pool.connection() as conn:
            if now - self._pruned_at > PRUNE_EVERY_SECONDS:
                self._pruned_at = now
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE created_at < %s").format(self._table),
                    (now - TTL_SECONDS,),
                )
            while True:
                # Takes a new key, or an expired / abandoned one, in one statement.
                taken = conn.execute(
                    sql.SQL(
                        "INSERT INTO {t} AS held (scope, key, fingerprint, created_at) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (scope, key) DO UPDATE SET "
                        "fingerprint = excluded.fingerprint, created_at = excluded.created_at, "
                        "status = NULL, headers = NULL, body = NULL "
                        "WHERE held.created_at < %s "
                        "OR (held.status IS NULL AND held.created_at < %s) RETURNING 1"
                    ).format(t=self._table),
                    (scope, key, fingerprint, now, now - TTL_SECONDS, now - ABANDONED_SECONDS),
                ).fetchone()
                if taken is not None:
                    return Claim("reserved")
                row = conn.execute(
                    sql.SQL(
                        "SELECT fingerprint, status, headers, body FROM {} "
                        "WHERE scope = %s AND key = %s"
                    ).format(self._table),
                    (scope, key),
                ).fetchone()
                if row is None:
                    continue  # released between the two statements: try to take it again
                stored_fingerprint, status, headers, body = row
                stored = None if status is None else StoredResponse.from_row(status, headers, body)
                return self.classify(fingerprint, stored_fingerprint, stored)

    def complete(self, scope: str, key: str, response: StoredResponse) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = %s, headers = %s, body = %s "
                    "WHERE scope = %s AND key = %s"
                ).format(self._table),
                (response.status, response.headers_json(), response.body, scope, key),
            )

    def release(self, scope: str, key: str) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE scope = %s AND key = %s AND status IS NULL").format(
                    self._table
                ),
                (scope, key),
            )

    def ping(self) -> None:
        with self._pool.connection() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self._pool.close()
