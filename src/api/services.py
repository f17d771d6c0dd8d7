"""What an API process holds open: the application, its live state and the idempotency store."""

from __future__ import annotations

import logging
import threading

from promptrecord.api.idempotency import IdempotencyStore
from promptrecord.domain.application import PromptRecord
from promptrecord.projections.live import LiveState
from promptrecord.projections.views import ViewStore, open_view_store
from promptrecord.settings import Settings

log = logging.getLogger(__name__)

# How long a command waits for the live state to fold in what it just wrote.
OWN_WRITE_TIMEOUT = 5.0


def open_idempotency_store(settings: Settings) -> IdempotencyStore:
    """The store for the database the events live in, with its table created."""
    env = settings.eventsourcing_env()
    store: IdempotencyStore
    if settings.is_postgres:
        from promptrecord.api.idempotency_postgres import PostgresIdempotencyStore

        store = PostgresIdempotencyStore(env)
    else:
        from promptrecord.api.idempotency_sqlite import SQLiteIdempotencyStore

        store = SQLiteIdempotencyStore(env["SQLITE_DBNAME"])
    try:
        store.create_table()
    except BaseException:
        store.close()
        raise
    return store


class Services:
    """The application carrying out commands, the live state `resolve` reads, idempotency rows."""

    def __init__(
        self,
        settings: Settings,
        app: PromptRecord,
        live: LiveState,
        idempotency: IdempotencyStore,
    ) -> None:
        self.settings = settings
        self.app = app
        self.live = live
        self.idempotency = idempotency
        self._views: ViewStore | None = None
        self._views_lock = threading.Lock()

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Open the event store (creating its tables), the idempotency store, and follow the log."""
        app = PromptRecord(
            env=settings.eventsourcing_env(), snapshot_interval=settings.snapshot_interval
        )
        try:
            idempotency = open_idempotency_store(settings)
        except BaseException:
            app.close()
            raise
        live = LiveState(app, settings.live_poll_interval)
        services = cls(settings, app, live, idempotency)
        try:
            live.start()
        except BaseException:
            services.close()
            raise
        return services

    def read_own_write(self, position: int | None) -> None:
        """Wait until the live state has folded `position` in, so the next read sees it."""
        if position is not None and not self.live.wait_for(position, OWN_WRITE_TIMEOUT):
            log.warning("live state did not reach position %s in time", position)

    def views(self) -> ViewStore:
        """The view store in the application's database, opened on first use; it shares the
        application's connections, so an API process that never audits never opens it."""
        with self._views_lock:
            if self._views is None:
                self._views = open_view_store(self.app)
            return self._views

    def close(self) -> None:
        self.live.stop()
        self.idempotency.close()
        self.app.close()
