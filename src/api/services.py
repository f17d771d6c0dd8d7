"""What an API process holds open: the application, the read views, the live state seeded
from them, the idempotency store and, in embedded mode, the projector keeping the views and
the workers carrying out eval runs."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from promptrecord.api.idempotency import IdempotencyStore
from promptrecord.domain.application import PromptRecord
from promptrecord.domain.errors import Unavailable
from promptrecord.projections.executions import ExecutionStore, open_execution_store
from promptrecord.projections.live import LiveState
from promptrecord.projections.live_seed import seed_state
from promptrecord.projections.views import ViewStore, open_view_store
from promptrecord.settings import Settings

if TYPE_CHECKING:
    from promptrecord.projections.runner import Projector
    from promptrecord.workers.embedded import EmbeddedWorkers
    from promptrecord.workers.webhook_store import WebhookStore

log = logging.getLogger(__name__)

# How long a command waits for the live state to fold in what it just wrote.
OWN_WRITE_TIMEOUT = 5.0
# How often a read waiting on a projector in another process looks at the views' position.
VIEWS_POLL = 0.01


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


def start_embedded_projector(app: PromptRecord, store: ViewStore, poll: float) -> Projector:
    """Keep the views in this process. Views of an older release are rebuilt first: in
    embedded mode the database is this process's own."""
    from promptrecord.projections.runner import Projector

    if store.outdated:
        report = store.rebuild(app.read_events, list(store.outdated))
        store.analyse(report.views)
        log.warning("rebuilt views %s from the event log", ", ".join(report.views))
    projector = Projector(app, store, poll_interval=poll)
    projector.start()
    return projector


class Services:
    """The application carrying out commands, the views list and read endpoints answer
    from, the live state `resolve` reads, idempotency rows."""

    def __init__(
        self,
        settings: Settings,
        app: PromptRecord,
        live: LiveState,
        idempotency: IdempotencyStore,
        views: ViewStore,
        projector: Projector | None = None,
        workers: EmbeddedWorkers | None = None,
    ) -> None:
        self.settings = settings
        self.app = app
        self.live = live
        self.idempotency = idempotency
        self.view_store = views  # as they are now; `views()` waits for a position first
        self.projector = projector
        self.workers = workers  # dispatcher, reconciler and in-process eval workers, if here
        self.view_store_seen = 0  # the highest position the views were seen to have applied
        self._lock = threading.Lock()
        self._webhook_deliveries: WebhookStore | None = None
        self._executions: ExecutionStore | None = None  # opened on first use

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Open the event store and the views (creating their tables), seed the live state
        from the views, follow the log, and keep the views here in embedded mode. With no
        Redis configured, also dispatch eval runs and carry them out in this process."""
        app = PromptRecord(
            env=settings.eventsourcing_env(), snapshot_interval=settings.snapshot_interval
        )
        idempotency: IdempotencyStore | None = None
        projector = None
        live: LiveState | None = None
        workers = None
        try:
            idempotency = open_idempotency_store(settings)
            views = open_view_store(app)
            if settings.runs_embedded_projector:
                projector = start_embedded_projector(app, views, settings.live_poll_interval)
            live = LiveState(app, settings.live_poll_interval)
            seeded = seed_state(views)
            if seeded is not None:
                live.state = seeded
            live.start()
            if settings.runs_embedded_dispatcher:
                from promptrecord.workers.embedded import EmbeddedWorkers

                workers = EmbeddedWorkers.start(settings, app)
        except BaseException:
            if live is not None:
                live.stop()
            if projector is not None:
                projector.stop()
                projector.join()
            if idempotency is not None:
                idempotency.close()
            app.close()
            raise
        assert live is not None
        return cls(settings, app, live, idempotency, views, projector, workers)

    def read_own_write(self, position: int | None) -> None:
        """Wait until the live state has folded `position` in, so this process's next
        `resolve` sees it (reads of the views wait for `app.written` themselves)."""
        if position is None:
            return
        if self.projector is not None:
            self.projector.nudge()
        if self.workers is not None:
            self.workers.nudge()
        if not self.live.wait_for(position, OWN_WRITE_TIMEOUT):
            log.warning("live state did not reach position %s in time", position)

    def views(self, after: int | None = None) -> ViewStore:
        """The views once they have applied `after` and everything this process wrote.

        Raises `Unavailable` (503, `views_behind`) when they do not get there in time: the
        projector is behind or not running.
        """
        needed = max(after or 0, self.app.written)
        if needed <= self.view_store_seen:
            return self.view_store
        deadline = time.monotonic() + self.settings.views_wait_timeout
        position = self.view_store.position()
        while position < needed:
            if self.projector is not None:
                self.projector.nudge()
            if time.monotonic() >= deadline:
                hint = "" if self.projector else " (is `promptrecord projector` running?)"
                raise Unavailable(
                    f"the read views are at log position {position}, not yet at {needed}; "
                    f"retry shortly{hint}",
                    field="query.after" if after is not None and after >= needed else None,
                    code="views_behind",
                    position=position,
                )
            time.sleep(VIEWS_POLL)
            position = self.view_store.position()
        with self._lock:
            self.view_store_seen = max(self.view_store_seen, position)
        return self.view_store

    @property
    def webhook_deliveries(self) -> WebhookStore:
        """Webhook deliveries and attempts, for the API's reads and resends (opened on first
        use: most processes never list a delivery)."""
        with self._lock:
            if self._webhook_deliveries is None:
                from promptrecord.workers.webhook_store import open_webhook_store

                self._webhook_deliveries = open_webhook_store(self.settings)
            return self._webhook_deliveries

    @property
    def executions(self) -> ExecutionStore:
        """Executions, feedback, scores and their rollups (opened on first use)."""
        with self._lock:
            if self._executions is None:
                self._executions = open_execution_store(self.settings)
            return self._executions

    def close(self) -> None:
        if self.workers is not None:
            self.workers.stop()
        self.live.stop()
        if self.projector is not None:
            self.projector.stop()
            try:
                self.projector.join()
            except Exception:
                log.exception("the embedded projector had stopped with an error")
        self.idempotency.close()
        if self._executions is not None:
            self._executions.close()
        if self._webhook_deliveries is not None:
            self._webhook_deliveries.close()
        self.app.close()
