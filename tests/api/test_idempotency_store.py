"""The idempotency store, per backend, against its abstract contract."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from promptrecord.api.idempotency import (
    ABANDONED_SECONDS,
    TTL_SECONDS,
    IdempotencyStore,
    StoredResponse,
)
from promptrecord.api.services import open_idempotency_store
from promptrecord.settings import Settings

RESPONSE = StoredResponse(201, [("content-type", "application/json"), ("etag", '"2"')], b"{}")


@pytest.fixture
def store(backend: Settings) -> Iterator[IdempotencyStore]:
    store = open_idempotency_store(backend)
    store.create_table()  # twice is harmless: every replica creates it on start
    try:
        yield store
    finally:
        store.close()


def test_reserve_complete_replay_and_release(store: IdempotencyStore) -> None:
    now = time.time()
    assert store.reserve("scope", "k1", "fp", now).outcome == "reserved"
    assert store.reserve("scope", "k1", "fp", now).outcome == "in_progress"
    assert store.reserve("scope", "k1", "other", now).outcome == "mismatch"
    assert store.reserve("other-scope", "k1", "other", now).outcome == "reserved"
    store.complete("scope", "k1", RESPONSE)
    claim = store.reserve("scope", "k1", "fp", now + 1)
    assert claim.outcome == "replay" and claim.response == RESPONSE
    store.release("scope", "k1")  # a finished response is never released
    assert store.reserve("scope", "k1", "fp", now + 2).outcome == "replay"

    assert store.reserve("scope", "k2", "fp", now).outcome == "reserved"
    store.release("scope", "k2")
    assert store.reserve("scope", "k2", "fp-retry", now).outcome == "reserved"
    store.ping()


def test_old_entries_are_ignored_and_pruned(store: IdempotencyStore, backend: Settings) -> None:
    now = time.time()
    day_ago = now - TTL_SECONDS - 1
    store.reserve("scope", "first", "fp", now)  # prunes now; the next prune is a minute away
    store.reserve("scope", "old", "fp", day_ago)
    store.complete("scope", "old", RESPONSE)
    assert store.reserve("scope", "old", "new-fp", now + 1).outcome == "reserved"
    store.reserve("scope", "stuck", "fp", now - ABANDONED_SECONDS - 1)
    assert store.reserve("scope", "stuck", "fp", now + 2).outcome == "reserved"
    store.reserve("scope", "forgotten", "fp", day_ago)
    store.reserve("scope", "trigger", "fp", now + 3600)
    if backend.is_postgres:
        with psycopg.connect(backend.database_url) as conn:
            rows = conn.execute(
                f'SELECT key FROM "{backend.database_schema}".promptrecord_idempotency'
            ).fetchall()
    else:
        import sqlite3

        path = backend.eventsourcing_env()["SQLITE_DBNAME"]
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT key FROM promptrecord_idempotency").fetchall()
    assert sorted(row[0] for row in rows) == ["first", "old", "stuck", "trigger"]
