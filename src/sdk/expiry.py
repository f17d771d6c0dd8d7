"""Fresh answers whose keys vanish when they expire, so a cache hit is one dict lookup.

A daemon thread removes each key at its due time (`time.monotonic()`), so the hit path
reads no clock. It may remove a key a few milliseconds late; callers that must never serve
past a deadline (pins) set the due time early and check exact times on the slow path.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["FreshAnswers"]

_IDLE_WAIT = 30.0  # how often an idle sweeper checks that its owner still exists
_ALL: weakref.WeakSet[FreshAnswers] = weakref.WeakSet()


class FreshAnswers:
    """`answers[key]` while the key is due later than now; thread-safe.

    `alias(key)`, when given and not None, is a second, shorter key of the same answer: the
    hit path of the commonest request builds a smaller tuple to look it up."""

    def __init__(self, alias: Callable[[Any], Hashable | None] | None = None) -> None:
        self.answers: dict[Hashable, Any] = {}
        self._alias = alias
        self._due: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._order = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False
        _ALL.add(self)

    def set(self, key: Hashable, answer: Any, due: float) -> None:
        """Serve `answer` for `key` until `due` (math.inf: until replaced or discarded)."""
        with self._cond:
            self.answers[key] = answer
            short = self._alias(key) if self._alias is not None else None
            if short is not None:
                self.answers[short] = answer
            self._due[key] = due
            if due == math.inf:
                return
            heapq.heappush(self._heap, (due, next(self._order), key))
            if self._thread is None:
                self._start()
            elif self._heap[0][2] == key:
                self._cond.notify()  # earlier than what the sweeper waits for

    def discard(self, key: Hashable) -> None:
        with self._cond:
            self._forget(key)
            self._due.pop(key, None)

    def _forget(self, key: Hashable) -> None:
        self.answers.pop(key, None)
        short = self._alias(key) if self._alias is not None else None
        if short is not None:
            self.answers.pop(short, None)

    def close(self) -> None:
        """Stop the sweeper and forget every answer."""
        with self._cond:
            self._closed = True
            self.answers.clear()
            self._due.clear()
            self._heap.clear()
            self._cond.notify()

    def _start(self) -> None:
        # The thread holds only a weak reference, so a client dropped without close() goes.
        self._thread = threading.Thread(
            target=_sweep,
            args=(weakref.ref(self), self._cond),
            name="promptrecord-cache-expiry",
            daemon=True,
        )
        self._thread.start()

    def _sweep_once(self) -> float | None:
        """Remove what is due; how long to wait for the next, or None to stop (call locked)."""
        if self._closed:
            return None
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            if self._due.get(key) == due:  # not renewed since
                del self._due[key]
                self._forget(key)
        return min(self._heap[0][0] - now, _IDLE_WAIT) if self._heap else _IDLE_WAIT

    def _after_fork_in_child(self) -> None:
        # The parent's sweeper does not exist in a forked child, and its lock may be held.
        self._cond = threading.Condition(threading.Lock())
        self._thread = None
        if self._heap and not self._closed:
            self._start()


def _sweep(owner: weakref.ref[FreshAnswers], cond: threading.Condition) -> None:
    while True:
        with cond:
            answers = owner()
            if answers is None:
                return
            wait = answers._sweep_once()
            del answers
            if wait is None:
                return
            cond.wait(wait)


def _reset_after_fork() -> None:
    for answers in list(_ALL):
        answers._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
