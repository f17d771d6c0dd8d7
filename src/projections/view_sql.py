"""What both SQL view stores share: table DDL, applying batches exactly once, rebuilding."""

from __future__ import annotations

import hashlib
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import IntegrityError

from promptrecord.projections.folding import (
    KNOWN_AGGREGATES,
    SUBJECTS,
    TEXT,
    TIME,
    Column,
    Key,
    LoggedEvent,
    Row,
    Subject,
    Table,
    View,
    ViewInconsistent,
    subject_from_created,
)
from promptrecord.projections.view_queries import ViewQueries
from promptrecord.projections.view_rows import RowBuffer, Sql, ViewWriteError, quote
from promptrecord.projections.views import (
    LogPage,
    PositionMoved,
    ReadEvents,
    RebuildReport,
    ViewError,
    default_views,
)

META = Table(
    "meta",
    (Column("view", TEXT, False), Column("fingerprint", TEXT, False), Column("rebuilt_at", TIME)),
    key=("view",),
)


class _AlreadyTracked(Exception):
    """The tracking insert found the position recorded: roll back, it was applied before."""


SUBJECTS_VIEW = "subjects"  # the aggregate id -> business key map, rebuilt with every view
REBUILD_PAGE = 1000


class SqlViewStore(ViewQueries):
    """Apply, rebuild and read the views over a backend's transactions and SQL types."""

    def __init__(
        self,
        datastore: Any,
        *,
        views: Sequence[View] | None = None,
        application_name: str = "PromptRecord",
        **kwargs: Any,
    ) -> None:
        # The backend's tracking recorder, next in the method order, takes the datastore.
        super().__init__(datastore, **kwargs)  # type: ignore[call-arg]
        self.application_name = application_name
        self.views = tuple(views) if views is not None else default_views()
        self.outdated = ()
        # Created events never change, so what they say is cached for the life of the store.
        self._subjects: dict[str, Subject] = {}

    # --- what each backend provides --------------------------------------------------------

    @abstractmethod
    def _write(self) -> AbstractContextManager[Sql]:
        """A write transaction, committed when the block ends without an error."""

    @abstractmethod
    def _lock_position(self, sql: Sql) -> int:
        """The tracked position, locked against other writers until the transaction ends."""

    @abstractmethod
    def _ensure_position(self, sql: Sql) -> None:
        """Create the tracking row at 0 if missing, so there is always a row to lock."""

    @abstractmethod
    def _set_position(self, sql: Sql, position: int) -> None: ...

    @abstractmethod
    def _track(self, sql: Sql, position: int) -> None:
        """Record the position with the library's tracking insert (refuses to go back)."""

    @abstractmethod
    def _column_type(self, type_name: str) -> str: ...

    def _serialise_ddl(self, sql: Sql) -> None:
        """Keep two processes from creating the same tables at once (where that can fail)."""

    # --- tables ------------------------------------------------------------------------------

    def _ddl(self, table: Table) -> list[str]:
        name = self._qualified(table.full_name)
        columns = ", ".join(
            f"{quote(c.name)} {self._column_type(c.type)}{'' if c.nullable else ' NOT NULL'}"
            for c in table.columns
        )
        keys = ", ".join(quote(k) for k in table.key)
        statements = [f"CREATE TABLE IF NOT EXISTS {name} ({columns}, PRIMARY KEY ({keys}))"]
        for kind, groups in (("", table.indexes), ("UNIQUE ", table.unique)):
            for number, group in enumerate(groups):
                suffix = ("_ux" if kind else "_ix") + str(number)
                statements.append(
                    f"CREATE {kind}INDEX IF NOT EXISTS {quote(table.full_name + suffix)} "
                    f"ON {name} ({', '.join(quote(c) for c in group)})"
                )
        return statements

    def _view_tables(self) -> dict[str, tuple[Table, ...]]:
        return {SUBJECTS_VIEW: (SUBJECTS,), **{view.name: view.tables for view in self.views}}

    def _fingerprint(self, tables: Sequence[Table]) -> str:
        # From the specs and SQL types, not the DDL text: that names the schema, which a
        # restore into another schema changes without changing the tables.
        text = "\n".join(
            repr(table) + ":" + ",".join(self._column_type(c.type) for c in table.columns)
            for table in tables
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def create_table(self) -> None:
        """Create the tracking table, the views' tables, and find views that need a rebuild."""
        super().create_table()  # type: ignore[misc]  # the backend's tracking table
        outdated: list[str] = []
        with self._write() as sql:
            self._serialise_ddl(sql)
            for statement in self._ddl(META):
                sql.run(statement)
            self._ensure_position(sql)
            tracked = self._lock_position(sql)
            built = {r["view"]: r["fingerprint"] for r in sql.rows(self._select_sql(META, "1=1"))}
            for name, tables in self._view_tables().items():
                fingerprint = self._fingerprint(tables)
                if built.get(name) == fingerprint:
                    continue
                if name in built or tracked > 0:
                    # Its tables are another version's (or missing events): leave them to
                    # `rebuild`, which drops them; creating indexes on them could fail.
                    outdated.append(name)
                    continue
                for table in tables:
                    for statement in self._ddl(table):
                        sql.run(statement)
                self._write_meta(sql, [name])
        self.outdated = tuple(outdated)

    def _write_meta(self, sql: Sql, names: Sequence[str]) -> None:
        tables = self._view_tables()
        rows = [
            {"view": n, "fingerprint": self._fingerprint(tables[n]), "rebuilt_at": _now()}
            for n in names
        ]
        self._write_rows(sql, META, [], rows)

    # --- row access ----------------------------------------------------------------------

    def _select_sql(self, table: Table, where: str) -> str:
        columns = ", ".join(quote(name) for name in table.column_names)
        return f"SELECT {columns} FROM {self._qualified(table.full_name)} WHERE {where}"

    def _select_row(self, sql: Sql, table: Table, key: Key) -> Row | None:
        where = " AND ".join(f"{quote(k)} = ?" for k in table.key)
        found = sql.rows(self._select_sql(table, where), [self._param(v) for v in key])
        return self._decode_row(table, found[0]) if found else None

    def _select_latest(self, sql: Sql, table: Table, prefix: Key) -> Row | None:
        where = " AND ".join(f"{quote(k)} = ?" for k in table.latest_by)
        statement = self._select_sql(table, where) + ' ORDER BY "position" DESC LIMIT 1'
        found = sql.rows(statement, [self._param(v) for v in prefix])
        return self._decode_row(table, found[0]) if found else None

    def _write_rows(self, sql: Sql, table: Table, gone: Sequence[Key], rows: Sequence[Row]) -> None:
        name = self._qualified(table.full_name)
        if gone:
            where = " AND ".join(f"{quote(k)} = ?" for k in table.key)
            sql.many(
                f"DELETE FROM {name} WHERE {where}", [[self._param(v) for v in k] for k in gone]
            )
        if rows:
            columns = table.column_names
            updates = [c for c in columns if c not in table.key]
            statement = (
                f"INSERT INTO {name} ({', '.join(quote(c) for c in columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)}) "
                f"ON CONFLICT ({', '.join(quote(k) for k in table.key)}) DO UPDATE SET "
                + ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in updates)
            )
            types = [c.type for c in table.columns]
            sql.many(
                statement,
                [
                    [self._encode(t, row[c]) for t, c in zip(types, columns, strict=True)]
                    for row in rows
                ],
            )

    # --- folding ---------------------------------------------------------------------------

    def _fold(
        self, buffer: RowBuffer, events: LogPage, views: Sequence[View], write_subjects: bool
    ) -> None:
        for position, event in events:
            type_name = type(event).__qualname__
            if type_name.split(".", 1)[0] not in KNOWN_AGGREGATES:
                continue
            aggregate_id = str(event.originator_id)
            subject = subject_from_created(type_name, event)
            if subject is not None:
                self._subjects[aggregate_id] = subject
                if write_subjects:
                    buffer.put(SUBJECTS, {"aggregate_id": aggregate_id, **vars(subject)})
            else:
                subject = buffer.subject(aggregate_id)
            if subject is None:
                missing = ViewInconsistent("no Created event of this aggregate was applied")
                raise ViewError(SUBJECTS_VIEW, position, type_name, aggregate_id, missing)
            logged = LoggedEvent(position, event, type_name, subject)
            for view in views:
                try:
                    view.fold(logged, buffer)
                except Exception as error:
                    if self.is_transient(error):
                        raise
                    raise ViewError(view.name, position, type_name, aggregate_id, error) from error

    def _view_of(self, table: Table) -> str:
        for name, tables in self._view_tables().items():
            if table in tables:
                return name
        return table.name

    # --- apply -----------------------------------------------------------------------------

    def position(self) -> int:
        return self.max_tracking_id(self.application_name) or 0

    def apply(self, after: int, events: LogPage) -> int:
        try:
            return self._apply_once(after, events)
        except ViewError as error:
            # Keep what came before the failing event, so a restart resumes exactly at it.
            done = [item for item in events if item[0] < error.position]
            if done:
                self.apply(after, done)
            raise
        except ViewWriteError:
            # The batch's rows were written together: apply one event at a time to name it.
            position = after
            for item in events:
                position = self._apply_once(position, [item])
            return position

    def _apply_once(self, after: int, events: LogPage) -> int:
        try:
            with self._write() as sql:
                tracked = self._lock_position(sql)
                if tracked < after:
                    raise PositionMoved(tracked)
                pending = [item for item in events if item[0] > tracked]
                if not pending:
                    return tracked
                buffer = RowBuffer(self, sql)
                self._fold(buffer, pending, self.views, write_subjects=True)
                try:
                    buffer.flush()
                except ViewWriteError as failed:
                    if len(pending) > 1:
                        raise
                    position, event = pending[0]
                    raise ViewError(
                        self._view_of(failed.table),
                        position,
                        type(event).__qualname__,
                        str(event.originator_id),
                        failed.cause,
                    ) from failed
                try:
                    self._track(sql, pending[-1][0])
                except IntegrityError:
                    raise _AlreadyTracked from None
                return pending[-1][0]
        except _AlreadyTracked:
            return self.position()

    # --- rebuild ---------------------------------------------------------------------------

    def choose(self, names: Sequence[str] | None) -> tuple[View, ...]:
        """The views named (all when None or empty); ValueError naming an unknown one."""
        if not names:
            return self.views
        known = {view.name: view for view in self.views}
        unknown = [name for name in names if name not in known]
        if unknown:
            msg = f"no view named {unknown[0]!r}; the views are {', '.join(known)}"
            raise ValueError(msg)
        return tuple(view for view in self.views if view.name in set(names))

    def rebuild(
        self,
        read_events: ReadEvents,
        names: Sequence[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> RebuildReport:
        chosen = self.choose(names)
        everything = len(chosen) == len(self.views)
        rebuilt = [view.name for view in chosen] + ([SUBJECTS_VIEW] if everything else [])
        tables = [table for name in rebuilt for table in self._view_tables()[name]]
        started, count, position = time.perf_counter(), 0, 0
        # One transaction: a failed rebuild leaves the old views, and the tracking row lock
        # holds any projector back until the views are whole again.
        with self._write() as sql:
            tracked = self._lock_position(sql)
            for table in tables:
                sql.run(f"DROP TABLE IF EXISTS {self._qualified(table.full_name)}")
                for statement in self._ddl(table):
                    sql.run(statement)
            buffer = RowBuffer(self, sql, fresh=frozenset(t.name for t in tables))
            # One view alone is refolded up to where the others are; all views read on to
            # the end of the log, and the tracking row moves with them.
            stop = None if everything else tracked
            for page in _pages(read_events, stop):
                self._fold(buffer, page, chosen, write_subjects=everything)
                buffer.flush()
                count, position = count + len(page), page[-1][0]
                if progress is not None:
                    progress(count, position)
            if everything:
                self._set_position(sql, position)
            self._write_meta(sql, rebuilt)
        self.outdated = tuple(name for name in self.outdated if name not in rebuilt)
        seconds = time.perf_counter() - started
        reached = position if everything else tracked
        return RebuildReport(tuple(v.name for v in chosen), count, reached, seconds)

    def dump(self, name: str) -> list[Row]:
        tables = self._view_tables().get(name)
        if tables is None:
            msg = f"no view named {name!r}; the views are {', '.join(self._view_tables())}"
            raise ValueError(msg)
        rows: list[Row] = []
        for table in tables:
            order = " ORDER BY " + ", ".join(quote(k) for k in table.key)
            rows += self._query(table, ["1 = 1"], [], order)
        return rows


def _pages(read_events: ReadEvents, stop: int | None) -> Iterator[LogPage]:
    position = 0
    while True:
        page = list(read_events(position, REBUILD_PAGE))
        within = [item for item in page if stop is None or item[0] <= stop]
        if within:
            yield within
        if len(within) < REBUILD_PAGE:
            return
        position = within[-1][0]


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = ["META", "RowBuffer", "Sql", "SqlViewStore", "ViewWriteError", "quote"]
