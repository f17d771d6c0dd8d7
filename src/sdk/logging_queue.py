"""A bounded queue of execution records and the background thread that sends them in batches.

The application's side (`put`) takes a lock, appends, and returns: it never waits on the
network and never raises. When the queue is full the record is dropped and counted. The
sender thread posts batches of up to `batch_size` every `flush_interval` seconds (at once
when a batch fills or on `flush`), retries a failed batch with exponential backoff, then
gives it up and counts it. At interpreter exit the queue is flushed for `exit_timeout`.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import random
import threading
import time
import weakref
from typing import Any

import httpx

from promptrecord.sdk.stats import ClientStats
from promptrecord.sdk.wire import headers

__all__ = ["ExecutionQueue"]

log = logging.getLogger("promptrecord.sdk")

PATH = "/v1/executions"
_TRANSIENT = frozenset({408, 425, 429})
_ALL: weakref.WeakSet[ExecutionQueue] = weakref.WeakSet()


class ExecutionQueue:
    """Execution records waiting to be sent, and their sender."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        stats: ClientStats,
        *,
        max_queue: int = 10_000,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        timeout: float = 5.0,
        exit_timeout: float = 2.0,
    ) -> None:
        self._base_url = base_url
        self._headers = {**headers(api_key), "Content-Type": "application/json"}
        self._stats = stats
        self._max_queue = max_queue
        self._batch_size = max(1, min(batch_size, 1000))  # the server takes 1..1000 items
        self._flush_interval = flush_interval
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        self._timeout = timeout
        self._exit_timeout = exit_timeout
        self._items: collections.deque[dict[str, Any]] = collections.deque()
        self._in_flight = 0
        self._flush_wanted = False
        self._closed = False
        self._stop = threading.Event()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        _ALL.add(self)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: dict[str, Any]) -> bool:
        """Queue one record; False (and counted as dropped) when full or closed."""
        with self._cond:
            if self._closed or len(self._items) >= self._max_queue:
                accepted = False
            else:
                self._items.append(item)
                accepted = True
                if len(self._items) >= self._batch_size:
                    self._cond.notify_all()
            if accepted and self._thread is None:
                self._start()
        self._stats.add("queued" if accepted else "dropped")
        return accepted

    def flush(self, timeout: float = 5.0) -> bool:
        """Send what is queued now; True when all of it was handled within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._thread is None:
                return not self._items
            self._flush_wanted = True
            self._cond.notify_all()
            while self._items or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout: float = 5.0) -> bool:
        """Flush for up to `timeout` seconds, then stop the sender; later records are dropped."""
        deadline = time.monotonic() + timeout
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._stop.set()
        if self._thread is not None:
            atexit.unregister(self._at_exit)
            # A sender stuck in a POST is a daemon thread: it is not waited for past `timeout`.
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return flushed

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="promptrecord-executions", daemon=True
        )
        self._thread.start()
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        waiting = len(self._items) + self._in_flight
        if not self.close(self._exit_timeout):
            log.warning(
                "promptrecord: execution records not all sent at exit within %.1f s "
                "(%d were waiting; server unreachable?)",
                self._exit_timeout,
                waiting,
            )

    def _run(self) -> None:
        with httpx.Client(
            base_url=self._base_url, headers=self._headers, timeout=self._timeout
        ) as http:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                try:
                    self._send(http, batch)
                except Exception:  # never let the sender die: records would pile up unsent
                    self._stats.add("failed", len(batch))
                    log.exception("promptrecord: sending %d execution records failed", len(batch))
                finally:
                    with self._cond:
                        self._in_flight = 0
                        self._cond.notify_all()

    def _next_batch(self) -> list[dict[str, Any]] | None:
        with self._cond:
            deadline = time.monotonic() + self._flush_interval
            while (
                len(self._items) < self._batch_size
                and not self._flush_wanted
                and not self._closed
                and (left := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(left)
            size = min(self._batch_size, len(self._items))
            batch = [self._items.popleft() for _ in range(size)]
            self._in_flight = size
            if not self._items:
                self._flush_wanted = False
            if not batch:
                self._cond.notify_all()  # a flush of an empty queue is done
                return None if self._closed else []
            return batch

    def _send(self, http: httpx.Client, batch: list[dict[str, Any]]) -> None:
        body = self._encode(batch)
        count = len(batch)
        if body is None:
            return
        reason = ""
        for attempt in range(self._max_retries + 1):
            if attempt:
                self._stats.add("retries")
                delay = self._retry_backoff * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
                if self._stop.wait(delay):
                    break  # closing: give up rather than hold the exit
            try:
                response = http.post(PATH, content=body)
            except httpx.RequestError as error:
                reason = f"{type(error).__name__}: {error}"
                continue
            status = response.status_code
            self._stats.response(status)
            if 200 <= status < 300:
                self._accepted(response, count)
                return
            reason = f"HTTP {status}: {response.text[:300]}"
            if status >= 500 or status in _TRANSIENT:
                continue
            # Any other 4xx will not change on retry: the records or the key are refused.
            self._stats.add("rejected" if status == 422 else "failed", count)
            log.warning("promptrecord: %d execution records refused: %s", count, reason)
            return
        self._stats.add("failed", count)
        log.warning("promptrecord: gave up sending %d execution records: %s", count, reason)

    def _encode(self, batch: list[dict[str, Any]]) -> bytes | None:
        encoded: list[bytes] = []
        for item in batch:
            try:
                text = json.dumps(item, default=str, allow_nan=False, ensure_ascii=False)
            except (TypeError, ValueError) as error:
                self._stats.add("rejected")
                log.warning("promptrecord: execution record %s not sendable: %s", item["id"], error)
                continue
            encoded.append(text.encode())
        if not encoded:
            return None
        return b'{"items":[' + b",".join(encoded) + b"]}"

    def _accepted(self, response: httpx.Response, count: int) -> None:
        try:
            body = response.json()
            accepted, rejected = int(body["accepted"]), int(body["rejected"])
        except (ValueError, KeyError, TypeError):
            self._stats.add("sent", count)
            return
        self._stats.add("sent", accepted)
        if rejected:
            self._stats.add("rejected", rejected)
            errors = body.get("errors") or []
            log.warning("promptrecord: %d execution records rejected: %s", rejected, errors[:3])


def _reset_after_fork() -> None:
    # A forked child has none of the parent's threads, and their locks may be held: each
    # queue starts over empty (the parent still sends what it had queued).
    for queue in list(_ALL):
        queue._cond = threading.Condition(threading.Lock())
        queue._stop = threading.Event()
        queue._items.clear()
        queue._in_flight = 0
        queue._thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
