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
            self.raw.executemany(self._text(statement), [tuple(p) for p in params])


class ViewWriteError(Exception):
    """Writing one table's rows failed (a constraint, a type): the view's rule is wrong."""

    def __init__(self, table: Table, cause: BaseException) -> None:
        super().__init__(f"writing {table.full_name} failed: {type(cause).__name__}: {cause}")
        self.table = table
        self.cause = cause


_UNKNOWN = object()


class RowBuffer:
    """The rows one batch reads and writes, written at `flush` as one upsert per table.

    Tables in `fresh` were created empty in this transaction: a row this buffer has not
    written does not exist, so folding a rebuild reads nothing back from the database.
    """

    def __init__(self, store: SqlViewStore, sql: Sql, fresh: frozenset[str] = frozenset()):
        self._store = store
        self._sql = sql
        self._fresh = fresh
        self._known: dict[str, dict[Key, Row | None]] = {}
        self._dirty: dict[str, dict[Key, Row | None]] = {}
        self._latest: dict[str, dict[Key, Row | None]] = {}
        self._tables: dict[str, Table] = {}

    def get(self, table: Table, key: Key) -> Row | None:
        known = self._known.setdefault(table.name, {})
        found = known.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = (
                None
                if table.name in self._fresh
                else self._store._select_row(self._sql, table, key)
            )
            known[key] = found
        return found  # type: ignore[return-value]

    def put(self, table: Table, row: Row) -> None:
        key = table.key_of(row)
        self._tables[table.name] = table
        self._known.setdefault(table.name, {})[key] = row
        self._dirty.setdefault(table.name, {})[key] = row
        if table.latest_by:
            prefix = tuple(row[name] for name in table.latest_by)
            latest = self._latest.setdefault(table.name, {})
            current = latest.get(prefix)
            if current is None or row["position"] >= current["position"]:
                latest[prefix] = row

    def delete(self, table: Table, key: Key) -> None:
        self._tables[table.name] = table
        self._known.setdefault(table.name, {})[key] = None
        self._dirty.setdefault(table.name, {})[key] = None

    def latest(self, table: Table, prefix: Key) -> Row | None:
        latest = self._latest.setdefault(table.name, {})
        found = latest.get(prefix, _UNKNOWN)
        if found is _UNKNOWN:
            if table.name in self._fresh:
                found = None
            else:
                found = self._store._select_latest(self._sql, table, prefix)
            latest[prefix] = found
        return found  # type: ignore[return-value]

    def subject(self, aggregate_id: str) -> Subject | None:
        found = self._store._subjects.get(aggregate_id)
        if found is None and SUBJECTS.name not in self._fresh:
            row = self._store._select_row(self._sql, SUBJECTS, (aggregate_id,))
            if row is not None:
                found = Subject(**{k: v for k, v in row.items() if k != "aggregate_id"})
                self._store._subjects[aggregate_id] = found
        return found

    def flush(self) -> None:
        for name, changes in self._dirty.items():
            table = self._tables[name]
            gone = [key for key, row in changes.items() if row is None]
            rows = [row for row in changes.values() if row is not None]
            try:
                self._store._write_rows(self._sql, table, gone, rows)
            except Exception as error:
                if self._store.is_transient(error):
                    raise
                raise ViewWriteError(table, error) from error
            if not table.cached:
                self._known.pop(name, None)
        self._dirty.clear()
