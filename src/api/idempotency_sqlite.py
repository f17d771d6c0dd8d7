"""The idempotency store in the SQLite file that also holds the events."""

from __future__ import annotations

import threading

from promptrecord.api.idempotency import (
    ABANDONED_SECONDS,
    TABLE,
    TTL_SECONDS,
    Claim,
    IdempotencyStore,
    StoredResponse,
)
from promptrecord.persistence.sqlite import connect_events_file

PRUNE_EVERY_SECONDS = 60.0


class SQLiteIdempotencyStore(IdempotencyStore):
    """One connection guarded by a lock: each operation is a statement or two."""

    def __init__(self, path: str) -> None:
        self._connection = connect_events_file(path)
        self._lock = threading.Lock()
        self._pruned_at = 0.0

    def create_table(self) -> None:
        with self._lock:
            self._connection.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                "scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, "
                "created_at REAL NOT NULL, status INTEGER, headers TEXT, body BLOB, "
                "PRIMARY KEY (scope, key))"
            )
            self._connection.execute(
                f"CREATE INDEX IF NOT EXISTS {TABLE}_created_at ON {TABLE} (created_at)"
            )

    def reserve(self, scope: str, key: str, fingerprint: str, now: float) -> Claim:
        with self._lock:
            if now - self._pruned_at > PRUNE_EVERY_SECONDS:
                self._connection.execute(
                    f"DELETE FROM {TABLE} WHERE created_at < ?", (now - TTL_SECONDS,)
                )
                self._pruned_at = now
            while True:
                # Takes a new key, or an expired / abandoned one, in one statement.
                taken = self._connection.execute(
                    f"INSERT INTO {TABLE} (scope, key, fingerprint, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET "
                    "fingerprint = excluded.fingerprint, created_at = excluded.created_at, "
                    "status = NULL, headers = NULL, body = NULL "
                    f"WHERE {TABLE}.created_at < ? "
                    f"OR ({TABLE}.status IS NULL AND {TABLE}.created_at < ?) RETURNING 1",
                    (scope, key, fingerprint, now, now - TTL_SECONDS, now - ABANDONED_SECONDS),
                ).fetchone()
                if taken is not None:
                    return Claim("reserved")
                row = self._connection.execute(
                    f"SELECT fingerprint, status, headers, body FROM {TABLE} "
                    "WHERE scope = ? AND key = ?",
                    (scope, key),
                ).fetchone()
                if row is None:
                    continue  # released between the two statements: try to take it again
                stored_fingerprint, status, headers, body = row
                stored = None if status is None else StoredResponse.from_row(status, headers, body)
                return self.classify(fingerprint, stored_fingerprint, stored)

    def complete(self, scope: str, key: str, response: StoredResponse) -> None:
        with self._lock:
            self._connection.execute(
                f"UPDATE {TABLE} SET status = ?, headers = ?, body = ? WHERE scope = ? AND key = ?",
                (response.status, response.headers_json(), response.body, scope, key),
            )

    def release(self, scope: str, key: str) -> None:
        with self._lock:
            self._connection.execute(
                f"DELETE FROM {TABLE} WHERE scope = ? AND key = ? AND status IS NULL",
                (scope, key),
            )

    def ping(self) -> None:
        with self._lock:
            self._connection.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._connection.close()
