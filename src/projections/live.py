"""The live in-memory state `resolve` reads, following the event log from this process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.resolution import ResolutionState

log = logging.getLogger(__name__)
T = TypeVar("T")


class LiveState:
    """A ResolutionState kept current by polling the log (and nudged after local commands).

    Reads take the lock only to fold a batch in, never around the database query, so a
    slow poll never stalls `resolve`.
    """

    def __init__(self, app: PromptRecord, poll_interval: float = 0.1, batch: int = 1000) -> None:
        self.app = app
        self.poll_interval = poll_interval
        self.batch = batch
        self.state = ResolutionState()
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._applied = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
                if len(events) < self.batch:
                    return self.state.position

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

    def read(self, reader: Callable[[ResolutionState], T]) -> T:
        """Run `reader` on a state no fold is changing at that moment."""
        with self._lock:
            return reader(self.state)

    def start(self) -> None:
        if self._thread is not None:
            return
        self.catch_up()
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="promptrecord-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.catch_up()
            except Exception:  # the database may be briefly away; keep following
                log.exception("live state could not read the event log; retrying")
