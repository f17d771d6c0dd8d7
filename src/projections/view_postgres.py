"""The views in the PostgreSQL schema of the events, behind the `ViewStore` interface."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.types.json import Jsonb

from promptrecord.projections.folding import JSON, REAL, TIME, Row, Table, View, tuple_getter
from promptrecord.projections.view_rows import Sql, quote
from promptrecord.projections.view_sql import SqlViewStore

TRACKING_TABLE = "promptrecord_view_tracking"
_TYPES = {"text": "text", "int": "bigint", "real": "double precision", "bool": "boolean"}
_TYPES.update({"json": "jsonb", "time": "timestamptz"})


class PostgresViewStore(SqlViewStore, PostgresTrackingRecorder):
    """Views and their tracking row in the events' schema; the row lock orders writers."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        views: Sequence[View] | None = None,
        application_name: str = "PromptRecord",
    ) -> None:
        if not datastore.single_row_tracking:
            msg = "the views need single-row tracking; unset SINGLE_ROW_TRACKING"
            raise ValueError(msg)
        super().__init__(
            datastore,
            views=views,
            application_name=application_name,
            tracking_table_name=TRACKING_TABLE,
        )

    @property
    def _tracking(self) -> str:
        return self._qualified(TRACKING_TABLE)

    @contextmanager
    def _write(self) -> Iterator[Sql]:
        with self.datastore.transaction(commit=True) as cursor:
            yield Sql(cursor, "%s")

    @contextmanager
    def _read(self) -> Iterator[Sql]:
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            yield Sql(cursor, "%s")

    @contextmanager
    def _consistent_read(self) -> Iterator[Sql]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield Sql(cursor, "%s")

    def _lock_position(self, sql: Sql) -> int:
        rows = sql.rows(
            f"SELECT notification_id FROM {self._tracking} WHERE application_name = ? FOR UPDATE",
            [self.application_name],
        )
        return int(rows[0]["notification_id"]) if rows else 0

    def _ensure_position(self, sql: Sql) -> None:
        sql.run(
            f"INSERT INTO {self._tracking} VALUES (?, 0) ON CONFLICT (application_name) DO NOTHING",
            [self.application_name],
        )

    def _set_position(self, sql: Sql, position: int) -> None:
        sql.run(
            f"UPDATE {self._tracking} SET notification_id = ? WHERE application_name = ?",
            [position, self.application_name],
        )

    def _track(self, sql: Sql, position: int) -> None:
        self._insert_tracking(sql.raw, Tracking(self.application_name, position))

    def _analyse(self, sql: Sql, tables: Sequence[Table]) -> None:
        # Autovacuum may be off, or far behind a rebuild of a million events.
        if tables:  # one statement: PostgreSQL 11+ analyses a list of tables in one go
            sql.run("ANALYZE " + ", ".join(self._qualified(t.full_name) for t in tables))

    def _serialise_ddl(self, sql: Sql) -> None:
        # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog.
        sql.run("SELECT pg_advisory_xact_lock(hashtext(?))", ["promptrecord_view:" + self._schema])

    @property
    def _schema(self) -> str:
        return str(self.datastore.schema)

    def _qualified(self, table_name: str) -> str:
        return f"{quote(self._schema)}.{quote(table_name)}"

    def _column_type(self, type_name: str) -> str:
        return _TYPES[type_name]

    def _value_encoder(self, type_name: str) -> Callable[[Any], Any] | None:
        if type_name == JSON:
            return Jsonb
        if type_name == TIME:
            return _aware
        return None

    def _insert_rows(self, sql: Sql, table: Table, rows: Sequence[Row]) -> None:
        # COPY in binary: one statement streaming every row, instead of one per row.
        if not rows:
            return
        columns = table.column_names
        statement = (
            f"COPY {self._qualified(table.full_name)} ({', '.join(quote(c) for c in columns)}) "
            "FROM STDIN (FORMAT BINARY)"
        )
        values_of = tuple_getter(columns)
        times = [i for i, column in enumerate(table.columns) if column.type == TIME]
        with sql.raw.copy(statement) as copy:
            copy.set_types([_TYPES[column.type] for column in table.columns])
            write = copy.write_row
            for row in rows:
                values = values_of(row)
                for index in times:
                    moment = values[index]
                    if moment is not None:
                        _aware(moment)
                write(values)

    def _encode(self, type_name: str, value: Any) -> Any:
        if value is None:
            return None
        if type_name == JSON:
            return Jsonb(value)
        if type_name == TIME:
            return _aware(value)
        return value

    def _decode(self, type_name: str, value: Any) -> Any:
        if value is None:
            return None
        if type_name == TIME:
            moment: datetime = value
            return moment.astimezone(UTC)
        if type_name == REAL:
            return float(value)
        return value

    def is_transient(self, error: BaseException) -> bool:
        transient = (OperationalError, InterfaceError, psycopg.OperationalError)
        return isinstance(error, (*transient, psycopg.InterfaceError))


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        msg = f"time {value.isoformat()} has no timezone; give one, e.g. 2026-03-14T09:00:00Z"
        raise ValueError(msg)
    return value
