"""The projector: follows the event log and applies every event to the views exactly once."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, Notification
from eventsourcing.postgres import PostgresApplicationRecorder

from promptrecord.domain.application import PromptRecord
from promptrecord.projections.views import PositionMoved, ViewError, ViewsOutdated, ViewStore

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
PROGRESS_EVERY = 10.0  # seconds between "applied up to" log lines while events arrive


class EventUnreadable(ViewError):
    """A stored event this code cannot decode (an unknown topic, a changed class)."""

    def __init__(self, notification: Notification, cause: BaseException) -> None:
        aggregate = str(notification.originator_id)
        super().__init__("decoding", notification.id, notification.topic, aggregate, cause)
        self.args = (
            f"event {notification.id} (topic {notification.topic}, aggregate {aggregate}) "
            f"cannot be read by this version of promptrecord: {type(cause).__name__}: {cause}. "
            "Nothing from this event on was applied; run the promptrecord version that "
            "wrote it, then restart the projector.",
        )


class ProjectorError(Exception):
    """The projector stopped on an error that retrying would not cure."""


class _Backoff:
    def __init__(self) -> None:
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return float(min(MAX_BACKOFF, 0.1 * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0


class _ListenFeed:
    """The library's LISTEN/NOTIFY subscription, drained by a thread into a bounded queue.

    The bound keeps a long catch-up from reading the whole log into memory ahead of the
    views. The feed is thrown away and replaced whenever it fails or falls silent.
    """

    def __init__(self, recorder: ApplicationRecorder, gt: int, capacity: int) -> None:
        self._subscription = recorder.subscribe(gt=gt)
        self._queue: queue.Queue[Notification] = queue.Queue(capacity)
        self._closing = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._pump, name="promptrecord-projector-listen", daemon=True
        )
        self._thread.start()

    def _pump(self) -> None:
        try:
            with self._subscription:
                for notification in self._subscription:
                    while not self._closing.is_set():
                        try:
                            self._queue.put(notification, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if self._closing.is_set():
                        return
        except BaseException as error:
            self.error = error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def take(self, limit: int, timeout: float, stop: threading.Event) -> list[Notification]:
        """Up to `limit` notifications, waiting at most `timeout` (or until `stop`) for one."""
        deadline = time.monotonic() + timeout
        items: list[Notification] = []
        while not items:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.is_set():
                return []
            try:
                items.append(self._queue.get(timeout=min(remaining, 0.1)))
            except queue.Empty:
                continue
        while len(items) < limit:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def close(self) -> None:
        self._closing.set()
        self._subscription.stop()
        self._thread.join(timeout=5)


class Projector:
    """Reads the log after the views' tracked position and applies it in batches.

    On PostgreSQL it wakes on LISTEN/NOTIFY and also polls every `poll_interval`: a poll
    that finds events the subscription did not deliver, or a subscription that failed,
    gets a fresh subscription from the current position. On SQLite it polls.
    """

    def __init__(
        self,
        app: PromptRecord,
        store: ViewStore,
        *,
        poll_interval: float = 1.0,
        batch_size: int = 500,
        listen: bool | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.listen = (
            isinstance(app.recorder, PostgresApplicationRecorder) if listen is None else listen
        )
        self.position = 0
        self.error: BaseException | None = None
        self.resubscriptions = 0
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by `nudge`: poll now rather than at the interval
        self._applied = threading.Condition()
        self._thread: threading.Thread | None = None
        self._backoff = _Backoff()
        self._feed_backoff = _Backoff()
        self._subscribe_at = 0.0
        self._logged_at = 0.0

    # --- running -----------------------------------------------------------------------------

    def run(self) -> None:
        """Follow the log until `stop()`. Raises `ViewError` naming an event a view fails on."""
        if self.store.outdated:
            raise ViewsOutdated(self.store.outdated)
        self.position = self.store.position()
        self._stop.clear()
        log.info("projector following the log from position %d", self.position)
        feed: _ListenFeed | None = None
        try:
            while not self._stop.is_set():
                feed = self._keep_feed(feed)
                notifications = (
                    feed.take(self.batch_size, self.poll_interval, self._stop) if feed else []
                )
                if notifications:
                    self._feed_backoff.reset()  # LISTEN works
                else:
                    notifications = self._poll()
                    if notifications and feed is not None:
                        log.info("a poll found events LISTEN did not deliver; re-subscribing")
                        self._drop(feed, back_off=True)
                        feed = None
                if notifications:
                    if not self._apply(notifications) and feed is not None:
                        # It delivered what was not applied: read that again, from the views.
                        self._drop(feed, back_off=False)
                        feed = None
                elif feed is None:
                    self._wake.wait(self.poll_interval)
                    self._wake.clear()
        except BaseException as error:
            self.error = error
            raise
        finally:
            if feed is not None:
                feed.close()
            with self._applied:
                self._applied.notify_all()
            log.info("projector stopped at position %d", self.position)

    def _keep_feed(self, feed: _ListenFeed | None) -> _ListenFeed | None:
        if not self.listen or (feed is not None and feed.alive):
            return feed
        if feed is not None:
            log.warning(
                "LISTEN subscription ended (%s); polling every %ss and re-subscribing",
                feed.error or "no error",
                self.poll_interval,
            )
            self._drop(feed, back_off=True)
        if time.monotonic() < self._subscribe_at:
            return None
        self.resubscriptions += 1
        return _ListenFeed(self.app.recorder, self.position, 2 * self.batch_size)

    def _drop(self, feed: _ListenFeed, back_off: bool) -> None:
        """Close a feed; with `back_off`, wait longer before each new one while they fail."""
        feed.close()
        if back_off:
            self._subscribe_at = time.monotonic() + self._feed_backoff.next()

    def _poll(self) -> list[Notification]:
        try:
            found = self.app.recorder.select_notifications(
                start=self.position, limit=self.batch_size, inclusive_of_start=False
            )
        except Exception as error:
            if self._retry_later(error, "reading the log"):
                return []
            msg = (
                f"reading the log after position {self.position} failed with "
                f"{type(error).__name__}: {error}; check the database and restart the projector"
            )
            raise ProjectorError(msg) from error
        return list(found)

    def _apply(self, notifications: list[Notification]) -> bool:
        """Apply a batch; False when it was not (all) applied and must be read again."""
        pending = [n for n in notifications if n.id > self.position]
        if not pending:
            return True
        events: list[tuple[int, Any]] = []
        for notification in pending:
            try:
                events.append((notification.id, self.app.mapper.to_domain_event(notification)))
            except Exception as error:
                if events:  # what decoded before it is applied, so a restart starts there
                    self._apply_events(events)
                raise EventUnreadable(notification, error) from error
        return self._apply_events(events)

    def _apply_events(self, events: list[tuple[int, Any]]) -> bool:
        try:
            position = self.store.apply(self.position, events)
        except PositionMoved as moved:
            log.warning(
                "views were rebuilt under the projector; continuing from %d", moved.position
            )
            self._advance(moved.position)
            return False
        except ViewError:
            raise
        except Exception as error:
            if self._retry_later(error, f"applying events {events[0][0]}..{events[-1][0]}"):
                return False
            first, last = events[0][0], events[-1][0]
            msg = (
                f"applying events {first}..{last} failed with {type(error).__name__}: {error}; "
                "nothing from this batch was applied. Fix the cause and restart the projector."
            )
            raise ProjectorError(msg) from error
        self._backoff.reset()
        self._advance(position)
        return position >= events[-1][0]

    def _retry_later(self, error: BaseException, doing: str) -> bool:
        """Wait and return True when retrying may cure `error`; False when it cannot."""
        if not self.store.is_transient(error):
            return False
        delay = self._backoff.next()
        log.warning("%s failed (%s); retrying in %.1fs", doing, error, delay)
        self._stop.wait(delay)
        return True

    def _advance(self, position: int) -> None:
        with self._applied:
            self.position = position
            self._applied.notify_all()
        now = time.monotonic()
        if now - self._logged_at >= PROGRESS_EVERY:
            self._logged_at = now
            log.info("views applied up to position %d", position)

    # --- control -----------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Run in a daemon thread; `join` re-raises what stopped it."""

        def target() -> None:
            try:
                self.run()
            except BaseException:
                log.exception("projector stopped on an error")

        self._thread = threading.Thread(target=target, name="promptrecord-projector", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def nudge(self) -> None:
        """Look at the log now: a command in this process just wrote to it."""
        self._wake.set()

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def wait(self, position: int, timeout: float = 5.0) -> bool:
        """Block until the views applied `position`; False on timeout. Raises if it failed."""
        deadline = time.monotonic() + timeout
        with self._applied:
            while self.position < position:
                if self.error is not None:
                    raise self.error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._applied.wait(min(remaining, 0.05))
        return True


@contextmanager
def stopped_by_signals(projector: Projector) -> Iterator[None]:
    """SIGTERM and SIGINT stop the projector after its current batch (main thread only)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping after the current batch", signal.Signals(signum).name)
        projector.stop()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


def run_projector(
    app: PromptRecord, store: ViewStore, *, poll_interval: float = 1.0, batch_size: int = 500
) -> Projector:
    """Run a projector in this thread until SIGTERM or SIGINT; returns it once stopped."""
    projector = Projector(app, store, poll_interval=poll_interval, batch_size=batch_size)
    with stopped_by_signals(projector):
        projector.run()
    return projector
