"""The dispatcher follows the event log and enqueues eval runs; the reconciler re-enqueues
the runs a crash dropped.

The dispatcher keeps its own position (`promptrecord.workers.dispatch_table`), apart from
the views', and moves it only after the page's messages are enqueued: a crash between the
two enqueues them again, which the idempotent actor absorbs (at least once, never lost).
It reads only the events it acts on (`EvalRun.Requested`, `Completed`, `Failed`), filtered
by topic in the database, so catching up on a long log costs one indexed scan rather than
decoding every event.

The reconciler finds unfinished runs in the dispatcher's own table of open runs rather than
in the views: that table changes in the same transaction as the dispatcher's position, so
it never misses a run the dispatcher has passed, and it is there in every process that
dispatches, whether or not the views are kept there or are up to date.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from uuid import uuid5

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.evals import EvalRun
from promptrecord.settings import Settings
from promptrecord.workers.dispatch_table import DispatchTable, OpenRun, open_dispatch_table
from promptrecord.workers.runtime import EvalQueue

log = logging.getLogger(__name__)


def _topic(event: str) -> str:
    """The stored topic of an `EvalRun` event class (as `eventsourcing.utils.get_topic`)."""
    return f"{EvalRun.__module__}:{EvalRun.__qualname__}.{event}"


REQUESTED = _topic("Requested")
FINISHED = (_topic("Completed"), _topic("Failed"))
TOPICS = (REQUESTED, *FINISHED)
PAGE = 500  # matching events per read
WINDOW = 50_000  # log positions one read scans at most, so a catch-up advances in steps
MAX_BACKOFF = 30.0


class Loop:
    """A daemon thread running `step` every `interval` seconds until stopped; an error is
    logged and retried with backoff, never silently fatal."""

    name = "promptrecord-loop"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.failures = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> bool:
        """One pass; True when there may be more to do at once."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                more = self.step()
                self.failures = 0
            except Exception:
                self.failures += 1
                delay = min(MAX_BACKOFF, self.interval * 2 ** min(self.failures, 8))
                log.exception("%s failed; retrying in %.1fs", self.name, delay)
                self._stop.wait(delay)
                continue
            if not more:
                self._wake.wait(self.interval)
                self._wake.clear()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run_until_stopped(self) -> None:
        """Run in this thread (the projector command's helpers run it in theirs)."""
        self._run()


class Dispatcher(Loop):
    """Follows the log from its tracked position; enqueues a run per `EvalRun.Requested`."""

    name = "promptrecord-dispatcher"

    def __init__(
        self, app: PromptRecord, table: DispatchTable, queue: EvalQueue, poll_interval: float
    ) -> None:
        super().__init__(poll_interval)
        self.app = app
        self.table = table
        self.queue = queue
        self.position = table.position()

    def step(self) -> bool:
        """Read one page after the position, enqueue its requested runs, then advance.

        Returns True when the page was full (read again at once)."""
        recorder = self.app.recorder
        self.position = max(self.position, self.table.position())
        last = recorder.max_notification_id() or 0
        if last <= self.position:
            return False
        # Ids are committed in order (see promptrecord.persistence.postgres), so every id up
        # to `last`, read before the page, is there to read.
        stop = min(last, self.position + WINDOW)
        found = recorder.select_notifications(
            start=self.position, stop=stop, limit=PAGE, topics=TOPICS, inclusive_of_start=False
        )
        full = len(found) == PAGE
        upto = found[-1].id if full else stop
        opened: list[OpenRun] = []
        closed: list[str] = []
        for notification in found:
            event: Any = self.app.mapper.to_domain_event(notification)
            event_id = str(uuid5(event.originator_id, "1"))
            if notification.topic == REQUESTED:
                self.queue.enqueue(event.workspace, event.run_id, event_id)
                opened.append(OpenRun(event_id, event.workspace, event.run_id, notification.id))
            else:
                closed.append(event_id)
        self.table.advance(upto, opened, closed)
        self.position = upto
        if opened:
            log.info("dispatched %d eval run(s) up to log position %d", len(opened), upto)
        return full or upto < last


class Reconciler(Loop):
    """Every `interval` seconds, re-enqueues each open run no worker holds and no message
    waits for: what a crashed worker, or a lost in-process queue, dropped."""

    name = "promptrecord-reconciler"

    def __init__(self, table: DispatchTable, queue: EvalQueue, interval: float) -> None:
        super().__init__(interval)
        self.table = table
        self.queue = queue
        self.requeued = 0

    def step(self) -> bool:
        for run in self.table.open_runs():
            if self._stop.is_set():
                break
            if self.queue.settled(run.event_id):
                continue
            self.queue.enqueue(run.workspace, run.run_id, run.event_id)
            self.requeued += 1
            log.info("re-enqueued eval run %s (no worker held it)", run.run_id)
        return False


class Dispatching:
    """A dispatcher and a reconciler running in daemon threads over one table."""

    def __init__(
        self, app: PromptRecord, table: DispatchTable, queue: EvalQueue, settings: Settings
    ):
        self.table = table
        self.on_stop: list[Callable[[], None]] = []  # after the loops stop, e.g. close leases
        self.dispatcher = Dispatcher(app, table, queue, settings.dispatch_poll_interval)
        self.reconciler = Reconciler(table, queue, settings.reconcile_interval)

    @classmethod
    def start(cls, app: PromptRecord, queue: EvalQueue, settings: Settings) -> Dispatching:
        table = open_dispatch_table(settings)
        try:
            dispatching = cls(app, table, queue, settings)
        except BaseException:
            table.close()
            raise
        dispatching.dispatcher.start()
        dispatching.reconciler.start()
        return dispatching

    def nudge(self) -> None:
        self.dispatcher.nudge()

    def stop(self) -> None:
        for loop in (self.dispatcher, self.reconciler):
            loop.stop()
        for loop in (self.dispatcher, self.reconciler):
            loop.join()
        self.table.close()
        for callback in self.on_stop:
            callback()


__all__ = ["TOPICS", "Dispatcher", "Dispatching", "Loop", "Reconciler"]
