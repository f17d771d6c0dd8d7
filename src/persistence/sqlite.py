"""Connections to the events' SQLite file for the tables we keep beside the events."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


def connect_events_file(path: str) -> sqlite3.Connection:
    """A connection to the events' SQLite file (a path or a ``file:`` URI) in autocommit mode
    (callers begin their transactions) that any thread may use: callers guard it with a lock."""
    # A long busy timeout: the event store writes to the same file from other threads.
    return sqlite3.connect(
        path,
        timeout=30,
        isolation_level=None,
        check_same_thread=False,
        uri=path.startswith("file:"),
    )


@contextlib.contextmanager
def immediate_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Cursor]:
    """A cursor whose statements commit together, rolled back on any exception. It takes
    the file's write lock first (``BEGIN IMMEDIATE``): a busy file makes it wait there,
    not fail half-way through."""
    cursor = connection.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    try:
        yield cursor
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
