"""A transaction's cursor, and the rows one batch of folding reads and writes through it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from promptrecord.projections.folding import SUBJECTS, Key, Row, Subject, Table

if TYPE_CHECKING:
    from promptrecord.projections.view_sql import SqlViewStore


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class Sql:
    """A cursor inside one transaction, written with `?` placeholders on every backend."""

    def __init__(self, raw: Any, placeholder: str = "?") -> None:
        self.raw = raw
        self._placeholder = placeholder

    def _text(self, statement: str) -> str:
        if self._placeholder == "?":
            return statement
        return statement.replace("?", self._placeholder)

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        self.raw.execute(self._text(statement), tuple(params))
        return [dict(row) for row in self.raw.fetchall()]

    def run(self, statement: str, params: Sequence[Any] = ()) -> None:
        self.raw.execute(self._text(statement), tuple(params))

    def many(self, statement: str, params: Sequence[Sequence[Any]]) -> None:
        if params:
            self.raw.executemany(self._text(statement), params)


class ViewWriteError(Exception):
    """Writing one table's rows failed (a constraint, a type): the view's rule is wrong."""

    def __init__(self, table: Table, cause: BaseException) -> None:
        super().__init__(f"writing {table.full_name} failed: {type(cause).__name__}: {cause}")
        self.table = table
        self.cause = cause


_UNKNOWN = object()


class _Rows:
    """One table's rows in a buffer: read, changed since the last flush, newest by prefix."""

    __slots__ = ("dirty", "key_of", "known", "latest", "table", "written")

    def __init__(self, table: Table, fresh: bool) -> None:
        self.table = table
        self.key_of = table.key_getter
        self.known: dict[Key, Row | None] = {}  # read, or flushed rows of a cached table
        self.dirty: dict[Key, Row | None] = {}  # the last row (None: deleted) of each key
        self.latest: dict[Key, Row | None] = {}
        # Of a table created in this transaction: the hashes of the keys flushed to it. A
        # key whose hash is not here has no row in the table, so its row goes in with a
        # plain insert (COPY on PostgreSQL) and reading it needs no query. A collision only
        # costs an upsert or a query that finds nothing.
        self.written: set[int] | None = set() if fresh else None


class RowBuffer:
    """The rows one batch reads and writes, written at `flush` as one upsert per table.

    Tables in `fresh` were created empty in this transaction: a row this buffer has not
    written does not exist, so folding a rebuild reads back from the database only rows it
    flushed before; and rows never flushed before go in with the backend's bulk insert.
    """

    def __init__(self, store: SqlViewStore, sql: Sql, fresh: frozenset[str] = frozenset()):
        self._store = store
        self._sql = sql
        self._fresh = fresh
        self._rows: dict[str, _Rows] = {}

    def _of(self, table: Table) -> _Rows:
        rows = self._rows[table.name] = _Rows(table, table.name in self._fresh)
        return rows

    def get(self, table: Table, key: Key) -> Row | None:
        rows = self._rows.get(table.name) or self._of(table)
        found = rows.dirty.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = rows.known.get(key, _UNKNOWN)
            if found is _UNKNOWN:
                written = rows.written
                if written is None or hash(key) in written:
                    found = self._store._select_row(self._sql, table, key)
                else:
                    found = None
                rows.known[key] = found
        return found  # type: ignore[return-value]

    def put(self, table: Table, row: Row) -> None:
        rows = self._rows.get(table.name) or self._of(table)
        rows.dirty[rows.key_of(row)] = row
        if table.latest_by:
            prefix = table.latest_getter(row)
            current = rows.latest.get(prefix)
            if current is None or row["position"] >= current["position"]:
                rows.latest[prefix] = row

    def delete(self, table: Table, key: Key) -> None:
        rows = self._rows.get(table.name) or self._of(table)
        rows.dirty[key] = None

    def latest(self, table: Table, prefix: Key) -> Row | None:
        rows = self._rows.get(table.name) or self._of(table)
        found = rows.latest.get(prefix, _UNKNOWN)
        if found is _UNKNOWN:
            if rows.written is not None:
                found = None  # every row of a fresh table passed through `put` above
            else:
                found = self._store._select_latest(self._sql, table, prefix)
            rows.latest[prefix] = found
        return found  # type: ignore[return-value]

    def subject(self, aggregate_id: str) -> Subject | None:
        found = self._store._subjects.get(aggregate_id)
        if found is None and SUBJECTS.name not in self._fresh:
            row = self._store._select_row(self._sql, SUBJECTS, (aggregate_id,))
            if row is not None:
                found = Subject(**{k: v for k, v in row.items() if k != "aggregate_id"})
                self._store._subjects[aggregate_id] = found
        return found

    def pending(self) -> int:
        """How many rows `flush` would write or delete."""
        return sum(len(rows.dirty) for rows in self._rows.values())

    def flush(self) -> None:
        for rows in self._rows.values():
            changes = rows.dirty
            if not changes:
                continue
            table = rows.table
            try:
                if rows.written is None:
                    gone = [key for key, row in changes.items() if row is None]
                    kept = [row for row in changes.values() if row is not None]
                    self._store._write_rows(self._sql, table, gone, kept)
                else:
                    self._flush_fresh(rows)
            except Exception as error:
                if self._store.is_transient(error):
                    raise
                raise ViewWriteError(table, error) from error
            if table.cached:
                rows.known.update(changes)
            else:
                rows.known.clear()
            rows.dirty = {}

    def _flush_fresh(self, rows: _Rows) -> None:
        written = rows.written
        assert written is not None
        gone: list[Key] = []
        updated: list[Row] = []
        new: list[Row] = []
        for key, row in rows.dirty.items():
            code = hash(key)
            if code in written:
                if row is None:
                    gone.append(key)
                else:
                    updated.append(row)
            elif row is not None:
                new.append(row)
                written.add(code)
            # else: put and deleted again before it was ever written
        self._store._write_rows(self._sql, rows.table, gone, updated)
        self._store._insert_rows(self._sql, rows.table, new)
