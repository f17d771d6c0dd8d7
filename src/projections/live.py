"""The live in-memory state `resolve` reads, following the event log from this process."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.resolution import ResolutionState

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long the LISTEN loop blocks between checks of the stop flag, and how often it checks
# that its connection still answers (a dead peer may otherwise go unnoticed for long).
LISTEN_TICK = 0.25
LISTEN_PING_EVERY = 10.0
MAX_LISTEN_BACKOFF = 5.0

_Waiter = tuple[int, int, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class LiveState:
    """A ResolutionState kept current by following the log (and nudged after local commands).

    On PostgreSQL a LISTEN connection wakes the follower as soon as any process commits
    events (the insert function issues NOTIFY); it also polls every `poll_interval`, so a
    lost or silent subscription costs latency, never events, and the subscription is
    re-opened with a backoff while the database is away. On SQLite it polls.

    Reads take the lock only to fold a batch in, never around the database query, so a
    slow poll never stalls `resolve`. `state` may be replaced (e.g. seeded from the read
    views) before `start()`: following continues from `state.position`.
    """

    def __init__(
        self,
        app: PromptRecord,
        poll_interval: float = 0.1,
        batch: int = 1000,
        listen: bool | None = None,
    ) -> None:
        self.app = app
        self.poll_interval = poll_interval
        self.batch = batch
        self.listen = (
            isinstance(app.recorder, PostgresApplicationRecorder) if listen is None else listen
        )
        self.state = ResolutionState()
        self.listening = False  # a LISTEN connection is up right now
        self.listen_pid: int | None = None  # its server process id, while it is up
        self.subscriptions = 0  # LISTEN connections opened so far
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._applied = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._waiters: list[_Waiter] = []  # a heap by position, guarded by _lock
        self._waiter_ids = itertools.count()

    @property
    def position(self) -> int:
        return self.state.position

    def catch_up(self) -> int:
        """Fold every event recorded so far; returns the position reached."""
        with self._fetch_lock:  # one fetcher at a time, so batches apply in order
            while True:
                events = list(self.app.read_events(self.state.position, self.batch))
                if not events:
                    return self.state.position
                with self._lock:
                    for position, event in events:
                        self.state.apply(event, position)
                    self._applied.notify_all()
                    due = self._due_waiters()
                for _, _, loop, future in due:
                    # RuntimeError: that event loop is closed, so nobody waits any more
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(_release, future)
                if len(events) < self.batch:
                    return self.state.position

    def _due_waiters(self) -> list[_Waiter]:
        due = []
        reached = self.state.position
        while self._waiters and self._waiters[0][0] <= reached:
            due.append(heapq.heappop(self._waiters))
        return due

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Block until `position` is applied (or `timeout` passes); True when it is."""
        deadline = time.monotonic() + timeout
        while self.state.position < position:
            self.catch_up()
            if self.state.position >= position:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._lock:
                self._applied.wait(min(remaining, 0.02))
        return True

    async def wait_async(self, position: int, timeout: float = 5.0) -> bool:
        """Wait on the event loop, holding no thread, until `position` is applied (or
        `timeout` passes); True when it is. The follower thread releases the wait.

        Without a running follower (`start()` not called) it falls back to `wait_for` in a
        worker thread, since nothing else would read the log.
        """
        if self.state.position >= position:
            return True
        if self._thread is None:
            return await anyio.to_thread.run_sync(self.wait_for, position, timeout)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter: _Waiter = (position, next(self._waiter_ids), loop, future)
        with self._lock:
            if self.state.position >= position:
                return True
            heapq.heappush(self._waiters, waiter)
        self._wake.set()  # read the log now rather than at the next poll
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if waiter in self._waiters:  # timed out or cancelled: forget it
                    self._waiters.remove(waiter)
                    heapq.heapify(self._waiters)
        return self.state.position >= position

    def read(self, reader: Callable[[ResolutionState], T]) -> T:
        """Run `reader` on a state no fold is changing at that moment."""
        with self._lock:
            return reader(self.state)

    def start(self) -> None:
        if self._thread is not None:
            return
        self.catch_up()
        self._stop.clear()
        self._wake.clear()
        if self.listen:
            self._listener = threading.Thread(
                target=self._listen, name="promptrecord-live-listen", daemon=True
            )
            self._listener.start()
        self._thread = threading.Thread(target=self._follow, name="promptrecord-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._listener):
            if thread is not None:
                thread.join(timeout=5)
        self._thread = self._listener = None

    def _follow(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval)
            if self._stop.is_set():
                return
            self._wake.clear()  # before reading: a NOTIFY arriving meanwhile reads again
            try:
                self.catch_up()
            except Exception:  # the database may be briefly away; keep following
                log.exception("live state could not read the event log; retrying")
                self._stop.wait(self.poll_interval)

    def _listen(self) -> None:
        """Hold a LISTEN connection and wake the follower on every NOTIFY; re-open it with
        a backoff whenever it fails. Polling goes on meanwhile."""
        recorder = self.app.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        failures = 0
        while not self._stop.is_set():
            try:
                with recorder.datastore.get_connection() as conn:
                    conn.execute(SQL("LISTEN {0}").format(Identifier(recorder.channel_name)))
                    self.listen_pid = conn.info.backend_pid
                    self.listening = True
                    self.subscriptions += 1
                    failures = 0
                    self._wake.set()  # what was committed while nobody listened
                    pinged = time.monotonic()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=LISTEN_TICK, stop_after=1):
                            self._wake.set()
                        if time.monotonic() - pinged >= LISTEN_PING_EVERY:
                            conn.execute("SELECT 1")
                            pinged = time.monotonic()
                    # back to the pool: it must not keep receiving notifications there
                    conn.execute("UNLISTEN *")
            except Exception as error:
                failures += 1
                delay = min(MAX_LISTEN_BACKOFF, 0.1 * 2 ** (failures - 1))
                log.warning(
                    "live state LISTEN connection failed (%s); polling every %ss, "
                    "re-subscribing in %.1fs",
                    error,
                    self.poll_interval,
                    delay,
                )
                self._stop.wait(delay)
            finally:
                self.listening = False
                self.listen_pid = None
