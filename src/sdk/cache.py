"""The client's memory of answers: TTL, stale-while-revalidate, and what stands in for the server.

Shared by the blocking and the asyncio client; the clients do the I/O, this module decides.
An answer is fresh for `ttl` seconds (served with no request), then stale: still served at
once while one background refresh runs, until `max_stale` seconds after it was fetched.
Past that the caller waits for the server. A pinned answer is never served past its pin's
expiry. When the server cannot be reached, the disk snapshot of the last good answer for
the same request stands in, then the caller's `fallback=`, then `PromptUnavailable`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from promptrecord.sdk.errors import PromptUnavailable, ServerProblem
from promptrecord.sdk.expiry import FreshAnswers
from promptrecord.sdk.prompt import Prompt
from promptrecord.sdk.snapshot import SnapshotStore
from promptrecord.sdk.stats import ClientStats

__all__ = ["CacheEntry", "CacheKey", "PromptCache"]

log = logging.getLogger("promptrecord.sdk")

# (name, tenant, routing key, version): the client's environment completes the key. Every
# routing input is part of it, so an answer for one tenant (or rollout arm) is never
# served to another.
CacheKey = tuple[str, str | None, str | None, int | None]
Fallback = Prompt | Mapping[str, Any] | None
# A pinned answer leaves the hit path this long before its pin expires.
PIN_MARGIN_SECONDS = 0.5


@dataclass(slots=True)
class CacheEntry:
    prompt: Prompt
    fresh_until: float  # time.monotonic(): served with no request before this
    stale_until: float  # served at once (with a background refresh) before this


class PromptCache:
    """Answers by request, with the rules above; safe to share between threads."""

    def __init__(
        self,
        environment: str,
        ttl: float,
        max_stale: float | None,
        retry_interval: float,
        max_entries: int,
        snapshots: SnapshotStore | None,
        stats: ClientStats,
    ) -> None:
        self.environment = environment
        self.entries: dict[CacheKey, CacheEntry] = {}
        # The hit path reads `fresh.answers` only, by (name, tenant) when no routing key or
        # version is asked for, else by the whole key.
        self.fresh = FreshAnswers(alias=short_key)
        self._ttl = ttl
        self._max_stale = math.inf if max_stale is None else max_stale
        self._retry_interval = retry_interval
        self._max_entries = max_entries
        self._snapshots = snapshots
        self._stats = stats
        self._refreshing: set[CacheKey] = set()
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down_because = ""

    def stale(self, key: CacheKey, now: float) -> Prompt | None:
        """The cached answer if it may still be served while a refresh runs."""
        entry = self.entries.get(key)
        if entry is None or now >= entry.stale_until:
            return None
        self._stats.add("stale_served")
        return entry.prompt

    def claim_refresh(self, key: CacheKey) -> bool:
        """True for the one caller that should refresh `key` now; False while one runs."""
        with self._lock:
            if key in self._refreshing:
                return False
            self._refreshing.add(key)
        self._stats.add("refreshes")
        return True

    def refreshed(self, key: CacheKey, prompt: Prompt | None, error: BaseException | None) -> None:
        """End the refresh of `key` with its answer or its error."""
        try:
            if prompt is not None:
                self.store(key, prompt)
            else:
                self._refresh_failed(key, error)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def store(self, key: CacheKey, prompt: Prompt) -> Prompt:
        """Keep a fresh answer of the server, in memory and as the disk snapshot."""
        self._down_until = 0.0
        if key[3] is not None:  # a committed version never changes
            self._put(key, prompt, math.inf, math.inf)
        else:
            self._put(key, prompt, self._ttl, self._max_stale)
        if self._snapshots is not None:
            self._snapshots.save(self._request(key), prompt)
        return prompt

    def server_down(self, now: float) -> str | None:
        """Why not to try the server now: it failed less than `retry_interval` ago."""
        if now < self._down_until:
            ago = self._retry_interval - (self._down_until - now)
            return f"server: not tried, it failed {ago:.1f} s ago ({self._down_because})"
        return None

    def mark_down(self, reason: str) -> None:
        self._down_until = time.monotonic() + self._retry_interval
        self._down_because = reason

    def stand_in(self, key: CacheKey, fallback: Fallback, attempts: list[str]) -> Prompt:
        """The snapshot, else the fallback, else `PromptUnavailable` listing `attempts`."""
        name = key[0]
        snapshot = self._snapshot(key, attempts)
        if snapshot is not None:
            self._stats.add("snapshots_served")
            log.warning(
                "promptrecord: serving the disk snapshot of %r (version %s, fetched %s): %s",
                name,
                snapshot.version,
                snapshot.fetched_at.isoformat(),
                "; ".join(attempts),
            )
            # Kept in memory so the next calls do not wait on the server again; retried
            # in the background like any stale answer.
            self._put(key, snapshot, self._retry_interval, self._max_stale)
            return snapshot
        if fallback is not None:
            self._stats.add("fallbacks_served")
            log.warning("promptrecord: serving the fallback of %r: %s", name, "; ".join(attempts))
            if isinstance(fallback, Prompt):
                return fallback
            prompt = Prompt.from_content(name, self.environment, fallback)
            return replace(prompt, tenant=key[1], key=key[2])
        attempts.append("fallback: none passed")
        raise PromptUnavailable(name, attempts)

    def _snapshot(self, key: CacheKey, attempts: list[str]) -> Prompt | None:
        if self._snapshots is None:
            attempts.append("snapshot: disabled")
            return None
        snapshot = self._snapshots.load(self._request(key))
        if snapshot is None:
            attempts.append(f"snapshot: none for this request in {self._snapshots.directory}")
            return None
        expires = snapshot.pin_expires_at
        if expires is not None and expires <= datetime.now(UTC):
            attempts.append(f"snapshot: its pin expired at {expires.isoformat()}")
            return None
        return snapshot

    def _refresh_failed(self, key: CacheKey, error: BaseException | None) -> None:
        self._stats.add("refresh_failures")
        if isinstance(error, ServerProblem):
            # The server answered, and the answer is no: stop serving what it no longer serves.
            self.entries.pop(key, None)
            self.fresh.discard(key)
            log.warning("promptrecord: refresh of %r refused, dropped from cache: %s", key, error)
            return
        self.mark_down(str(error))
        entry = self.entries.get(key)
        if entry is not None:
            # Keep serving the stale answer; try again after the retry interval, not per call.
            entry.fresh_until = min(time.monotonic() + self._retry_interval, entry.stale_until)
            self._serve_fresh(key, entry)
        log.warning("promptrecord: refresh of %r failed, serving the stale answer: %s", key, error)

    def _put(self, key: CacheKey, prompt: Prompt, fresh_for: float, stale_for: float) -> None:
        now = time.monotonic()
        fresh_until, stale_until = now + fresh_for, now + max(stale_for, fresh_for)
        if prompt.pin_expires_at is not None:
            left = (prompt.pin_expires_at - datetime.now(UTC)).total_seconds()
            fresh_until, stale_until = min(fresh_until, now + left), min(stale_until, now + left)
        if key not in self.entries and len(self.entries) >= self._max_entries:
            # Oldest first: per-request routing keys must not grow memory without bound.
            with contextlib.suppress(StopIteration, RuntimeError):  # emptied meanwhile
                oldest = next(iter(self.entries))
                self.entries.pop(oldest, None)
                self.fresh.discard(oldest)
        entry = CacheEntry(prompt, fresh_until, stale_until)
        self.entries[key] = entry
        self._serve_fresh(key, entry)

    def _serve_fresh(self, key: CacheKey, entry: CacheEntry) -> None:
        due = entry.fresh_until
        if entry.prompt.pin_expires_at is not None:
            # The sweeper may be late; the slow path checks the pin's exact expiry.
            due -= PIN_MARGIN_SECONDS
        self.fresh.set(key, entry.prompt, due)

    def close(self) -> None:
        self.fresh.close()

    def _request(self, key: CacheKey) -> tuple[str, str, str | None, str | None, int | None]:
        name, tenant, routing_key, version = key
        return name, self.environment, tenant, routing_key, version


def short_key(key: CacheKey) -> tuple[str, str | None] | None:
    """(name, tenant) for a request with no routing key and no version: the commonest."""
    name, tenant, routing_key, version = key
    return (name, tenant) if routing_key is None and version is None else None
