"""Counters a client keeps about its cache and its execution log, for health checks."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["ClientStats"]


@dataclass
class ClientStats:
    """What happened so far. Cache hits are not counted: the hit path stays a dict lookup.

    cache: `misses` (fetched while the caller waited), `stale_served`, `refreshes` started in
    the background and `refresh_failures`, `snapshots_served`, `fallbacks_served`.
    logging: `queued`, `sent` (accepted by the server), `rejected` (refused by the server as
    invalid), `dropped` (the queue was full), `failed` (given up after retries), `retries`,
    and `responses` (HTTP status of every batch sent -> count).
    """

    misses: int = 0
    stale_served: int = 0
    refreshes: int = 0
    refresh_failures: int = 0
    snapshots_served: int = 0
    fallbacks_served: int = 0
    queued: int = 0
    sent: int = 0
    rejected: int = 0
    dropped: int = 0
    failed: int = 0
    retries: int = 0
    responses: Counter[int] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        """Add to a counter from any thread without losing an update."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def response(self, status: int) -> None:
        with self._lock:
            self.responses[status] += 1
