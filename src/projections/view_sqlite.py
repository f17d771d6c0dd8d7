"""The views in the SQLite file of the events, behind the `ViewStore` interface."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import ConnectionUnavailableError, OperationalError, Tracking
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder

from promptrecord.projections.folding import BOOL, JSON, REAL, TIME, View
from promptrecord.projections.view_rows import Sql, quote
from promptrecord.projections.view_sql import SqlViewStore

TRACKING_TABLE = "promptrecord_view_tracking"
_TYPES = {"text": "TEXT", "int": "INTEGER", "real": "REAL", "bool": "INTEGER"}
_TYPES.update({"json": "TEXT", "time": "TEXT"})
# Fixed width and UTC, so text comparison in SQL orders times correctly.
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def encode_time(value: datetime) -> str:
    if value.tzinfo is None:
        msg = f"time {value.isoformat()} has no timezone; give one, e.g. 2026-03-14T09:00:00Z"
        raise ValueError(msg)
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # The same text as strftime(_TIME_FORMAT) (years 1000 on), in half the time.
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class SQLiteViewStore(SqlViewStore, SQLiteTrackingRecorder):
    """Views and their tracking row in the events' SQLite file; one writer at a time."""

    def __init__(
        self,
        datastore: SQLiteDatastore,
        *,
        views: Sequence[View] | None = None,
        application_name: str = "PromptRecord",
    ) -> None:
        if not datastore.single_row_tracking:
            msg = "the views need single-row tracking; unset SINGLE_ROW_TRACKING"
            raise ValueError(msg)
        super().__init__(datastore, views=views, application_name=application_name)
        # The library names its table `tracking` for every projection of a file; the views
        # keep their own, so other followers of the same log never share their position.
        table = quote(TRACKING_TABLE)
        self.insert_tracking_statement = (
            f"INSERT INTO {table} VALUES (:application_name, :notification_id) "
            "ON CONFLICT (application_name) DO UPDATE SET notification_id = :notification_id "
            f"WHERE {table}.notification_id < :notification_id RETURNING notification_id"
        )
        self.select_max_tracking_id_statement = (
            f"SELECT MAX(notification_id) FROM {table} WHERE application_name=?"
        )

    def construct_create_table_statements(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {quote(TRACKING_TABLE)} (application_name TEXT, "
            "notification_id INTEGER, PRIMARY KEY (application_name)) WITHOUT ROWID"
        ]

    @contextmanager
    def _write(self) -> Iterator[Sql]:
        with self.datastore.transaction(commit=True) as cursor:
            yield Sql(cursor)

    @contextmanager
    def _read(self) -> Iterator[Sql]:
        with self.datastore.transaction(commit=False) as cursor:
            yield Sql(cursor)

    def _consistent_read(self) -> AbstractContextManager[Sql]:
        return self._read()  # one SQLite transaction reads one snapshot of the file

    @property
    def _tracking(self) -> str:
        return quote(TRACKING_TABLE)

    def _lock_position(self, sql: Sql) -> int:
        # A write first, so the transaction holds the file's write lock before it reads
        # the position: no other writer can move it until this transaction ends.
        table = quote(TRACKING_TABLE)
        sql.run(
            f"UPDATE {table} SET notification_id = notification_id WHERE application_name = ?",
            [self.application_name],
        )
        rows = sql.rows(
            f"SELECT notification_id FROM {table} WHERE application_name = ?",
            [self.application_name],
        )
        return int(rows[0]["notification_id"]) if rows else 0

    def _ensure_position(self, sql: Sql) -> None:
        sql.run(
            f"INSERT INTO {quote(TRACKING_TABLE)} VALUES (?, 0) "
            "ON CONFLICT (application_name) DO NOTHING",
            [self.application_name],
        )

    def _set_position(self, sql: Sql, position: int) -> None:
        sql.run(
            f"UPDATE {quote(TRACKING_TABLE)} SET notification_id = ? WHERE application_name = ?",
            [position, self.application_name],
        )

    def _track(self, sql: Sql, position: int) -> None:
        self._insert_tracking(sql.raw, Tracking(self.application_name, position))

    def _qualified(self, table_name: str) -> str:
        return quote(table_name)

    def _column_type(self, type_name: str) -> str:
        return _TYPES[type_name]

    def _value_encoder(self, type_name: str) -> Callable[[Any], Any] | None:
        if type_name == JSON:
            return _encode_json
        if type_name == TIME:
            return encode_time
        if type_name == BOOL:
            return int
        return None

    def _encode(self, type_name: str, value: Any) -> Any:
        if value is None:
            return None
        if type_name == JSON:
            return _encode_json(value)
        if type_name == TIME:
            return encode_time(value)
        if type_name == BOOL:
            return int(value)
        return value

    def _decode(self, type_name: str, value: Any) -> Any:
        if value is None:
            return None
        if type_name == JSON:
            return json.loads(value)
        if type_name == TIME:
            return datetime.fromisoformat(value)
        if type_name == BOOL:
            return bool(value)
        if type_name == REAL:
            return float(value)
        return value

    def is_transient(self, error: BaseException) -> bool:
        if isinstance(error, ConnectionUnavailableError):
            return True  # another thread of this process held the writer connection too long
        if isinstance(error, (OperationalError, sqlite3.OperationalError)):
            text = str(error).lower()
            return "locked" in text or "busy" in text
        return False
