"""What both SQL view stores share: table DDL, applying batches exactly once, rebuilding."""

from __future__ import annotations

import gc
import hashlib
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
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
    creates_subject,
    subject_from_created,
    tuple_getter,
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
# A rebuild writes its rows once this many are buffered (and at the end): rows changed again
# within the span are written once, and rows new to the fresh tables go in with bulk inserts.
REBUILD_FLUSH_ROWS = 20_000

RowEncoder = Callable[[Row], Sequence[Any]]


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
        self._encoders: dict[Table, RowEncoder] = {}
        self._event_types: dict[type, tuple[str, bool, bool]] = {}

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

    def _value_encoder(self, type_name: str) -> Callable[[Any], Any] | None:
        """How to encode a non-NULL value of the type as a parameter; None: as it is."""
        encode = self._encode

        def encoder(value: Any) -> Any:
            return encode(type_name, value)

        return encoder

    def _insert_rows(self, sql: Sql, table: Table, rows: Sequence[Row]) -> None:
        """Insert rows whose keys are not in the table (which has no other unique index that
        they could collide on but by a view's mistake). Backends may override this with a
        bulk load."""
        if rows:
            columns = table.column_names
            statement = (
                f"INSERT INTO {self._qualified(table.full_name)} "
                f"({', '.join(quote(c) for c in columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})"
            )
            encode = self._row_encoder(table)
            sql.many(statement, [encode(row) for row in rows])

    def _row_encoder(self, table: Table) -> RowEncoder:
        """A row's parameters in column order, encoded for the backend."""
        found = self._encoders.get(table)
        if found is None:
            found = self._encoders[table] = self._make_row_encoder(table)
        return found

    def _make_row_encoder(self, table: Table) -> RowEncoder:
        values_of = tuple_getter(table.column_names)
        steps = [
            (index, encoder)
            for index, column in enumerate(table.columns)
            if (encoder := self._value_encoder(column.type)) is not None
        ]
        if not steps:
            return values_of

        def encode(row: Row) -> Sequence[Any]:
            values = list(values_of(row))
            for index, encoder in steps:
                value = values[index]
                if value is not None:
                    values[index] = encoder(value)
            return values

        return encode

    def _serialise_ddl(self, sql: Sql) -> None:
        """Keep two processes from creating the same tables at once (where that can fail)."""

    # --- tables ------------------------------------------------------------------------------

    def _ddl(self, table: Table) -> list[str]:
        return [self._table_ddl(table), *self._index_ddl(table)]

    def _table_ddl(self, table: Table) -> str:
        name = self._qualified(table.full_name)
        columns = ", ".join(
            f"{quote(c.name)} {self._column_type(c.type)}{'' if c.nullable else ' NOT NULL'}"
            for c in table.columns
        )
        keys = ", ".join(quote(k) for k in table.key)
        return f"CREATE TABLE IF NOT EXISTS {name} ({columns}, PRIMARY KEY ({keys}))"

    def _index_ddl(self, table: Table) -> list[str]:
        name = self._qualified(table.full_name)
        statements: list[str] = []
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
        if SUBJECTS_VIEW in outdated:
            # Every view folds through the subjects: with theirs from another release (or
            # lacking aggregates the views now know), all of them are refolded.
            outdated = [*self._view_tables()]
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
            encode = self._row_encoder(table)
            sql.many(statement, [encode(row) for row in rows])

    # --- folding ---------------------------------------------------------------------------

    def _fold(
        self, buffer: RowBuffer, events: LogPage, views: Sequence[View], write_subjects: bool
    ) -> None:
        subjects = self._subjects
        event_types = self._event_types
        for position, event in events:
            kind = event_types.get(type(event))
            if kind is None:
                kind = event_types[type(event)] = _event_type(type(event))
            type_name, known, created = kind
            if not known:
                continue
            aggregate_id = str(event.originator_id)
            subject = subject_from_created(type_name, event) if created else None
            if subject is not None:
                subjects[aggregate_id] = subject
                if write_subjects:
                    buffer.put(SUBJECTS, {"aggregate_id": aggregate_id, **vars(subject)})
            else:
                subject = subjects.get(aggregate_id) or buffer.subject(aggregate_id)
            if subject is None:
                missing = ViewInconsistent("no Created event of this aggregate was applied")
                raise ViewError(SUBJECTS_VIEW, position, type_name, aggregate_id, missing)
            logged = LoggedEvent(position, event, type_name, subject, aggregate_id)
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
        if names and SUBJECTS_VIEW in names:
            names = None  # the subjects are rebuilt only with every view
        chosen = self.choose(names)
        everything = len(chosen) == len(self.views)
        rebuilt = [view.name for view in chosen] + ([SUBJECTS_VIEW] if everything else [])
        tables = [table for name in rebuilt for table in self._view_tables()[name]]
        started, count, position = time.perf_counter(), 0, 0
        # One transaction: a failed rebuild leaves the old views, and the tracking row lock
        # holds any projector back until the views are whole again.
        with _cycles_collected_after(), self._write() as sql:
            tracked = self._lock_position(sql)
            for table in tables:
                sql.run(f"DROP TABLE IF EXISTS {self._qualified(table.full_name)}")
                sql.run(self._table_ddl(table))
            buffer = RowBuffer(self, sql, fresh=frozenset(t.name for t in tables))
            # One view alone is refolded up to where the others are; all views read on to
            # the end of the log, and the tracking row moves with them.
            stop = None if everything else tracked
            for page in _pages(read_events, stop):
                self._fold(buffer, page, chosen, write_subjects=everything)
                if buffer.pending() >= REBUILD_FLUSH_ROWS:
                    buffer.flush()
                count, position = count + len(page), page[-1][0]
                if progress is not None:
                    progress(count, position)
            buffer.flush()
            # Indexes built once over the loaded rows, rather than row by row as they went in.
            for table in tables:
                try:
                    for statement in self._index_ddl(table):
                        sql.run(statement)
                except Exception as error:
                    if self.is_transient(error):
                        raise
                    raise ViewWriteError(table, error) from error
            if everything:
                self._set_position(sql, position)
            self._write_meta(sql, rebuilt)
        self.outdated = tuple(name for name in self.outdated if name not in rebuilt)
        seconds = time.perf_counter() - started
        reached = position if everything else tracked
        return RebuildReport(tuple(v.name for v in chosen), count, reached, seconds)

    def analyse(self, names: Sequence[str] | None = None) -> None:
        """Gather the planner's statistics of the named views' tables (default all), so the
        first queries after a rebuild do not plan on default estimates. Kept out of the
        rebuild's transaction, which holds the projector back while it runs."""
        tables = [t for view in self.choose(names) for t in view.tables]
        with self._write() as sql:
            self._analyse(sql, tables)

    def _analyse(self, sql: Sql, tables: Sequence[Table]) -> None:
        """Backends with planner statistics gather them here."""

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


@contextmanager
def _cycles_collected_after() -> Iterator[None]:
    """Pause the cyclic garbage collector while a rebuild folds: the rows it buffers make
    every collection walk tens of thousands of live objects, and folding makes few cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _event_type(cls: type) -> tuple[str, bool, bool]:
    """An event class's name, whether the views know its aggregate, whether it creates one."""
    name = cls.__qualname__
    aggregate = name.partition(".")[0]
    return name, aggregate in KNOWN_AGGREGATES, creates_subject(name)


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = ["META", "RowBuffer", "Sql", "SqlViewStore", "ViewWriteError", "quote"]
