"""`ClientBase`: what `PromptClient` and `AsyncPromptClient` share; they add only their I/O."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from promptrecord.sdk.cache import CacheKey, Fallback, PromptCache
from promptrecord.sdk.executions import TimedExecution, execution_item
from promptrecord.sdk.logging_queue import ExecutionQueue
from promptrecord.sdk.prompt import Prompt
from promptrecord.sdk.snapshot import SnapshotStore, default_directory
from promptrecord.sdk.stats import ClientStats
from promptrecord.sdk.wire import headers, key_scope

__all__ = ["ClientBase"]

log = logging.getLogger("promptrecord.sdk")
_monotonic = time.monotonic


class ClientBase:
    """Settings, cache, snapshots, execution queue and stats of a client; a subclass opens
    its connections in `_open` and fetches with blocking or asyncio calls."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        environment: str = "production",
        cache_ttl: float = 60.0,
        fallback_dir: str | os.PathLike[str] | None = None,
        timeout: float = 5.0,
        *,
        max_stale: float | None = 24 * 3600.0,
        snapshots: bool = True,
        retry_interval: float = 5.0,
        max_entries: int = 10_000,
        log_batch_size: int = 100,
        log_flush_interval: float = 1.0,
        log_max_queue: int = 10_000,
        log_max_retries: int = 3,
        log_retry_backoff: float = 0.5,
        log_exit_timeout: float = 2.0,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self.environment = environment
        self.stats = ClientStats()
        directory = default_directory() if fallback_dir is None else Path(fallback_dir)
        store = SnapshotStore(directory, key_scope(self._base_url, api_key)) if snapshots else None
        self._cache = PromptCache(
            environment, cache_ttl, max_stale, retry_interval, max_entries, store, self.stats
        )
        self._fresh = self._cache.fresh.answers
        self._executions = ExecutionQueue(
            self._base_url,
            api_key,
            self.stats,
            timeout=timeout,
            batch_size=log_batch_size,
            flush_interval=log_flush_interval,
            max_queue=log_max_queue,
            max_retries=log_max_retries,
            retry_backoff=log_retry_backoff,
            exit_timeout=log_exit_timeout,
        )
        self._http_options: dict[str, Any] = {
            "base_url": self._base_url,
            "headers": headers(api_key),
            "timeout": httpx.Timeout(timeout, connect=min(timeout, 3.0)),
        }
        self._open()

    def _open(self) -> None:
        """Make this client's HTTP connections (`httpx.Client` or `httpx.AsyncClient`)."""
        raise NotImplementedError

    def _start_refresh(self, cache_key: CacheKey) -> None:
        """Refetch `cache_key` in the background (a thread or a task on the running loop)."""
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return self._base_url

    def _without_fetch(self, cache_key: CacheKey, fallback: Fallback) -> Prompt | None:
        """The answer a missed `get` gives without asking the server: the stale answer (and a
        background refresh), or the stand-in while the server is known down; else None."""
        cache = self._cache
        now = _monotonic()
        stale = cache.stale(cache_key, now)
        if stale is not None:
            if cache.claim_refresh(cache_key):
                self._start_refresh(cache_key)
            return stale
        down = cache.server_down(now)
        if down is not None:
            return cache.stand_in(cache_key, fallback, [down])
        self.stats.add("misses")
        return None

    def _unreachable(self, cache_key: CacheKey, fallback: Fallback, error: Exception) -> Prompt:
        """Note that the server failed now and serve the stand-in (the line
        `PromptUnavailable` lists for this attempt names the error)."""
        reason = (
            f"{type(error).__name__}: {error}" if isinstance(error, httpx.HTTPError) else str(error)
        )
        self._cache.mark_down(reason)
        return self._cache.stand_in(cache_key, fallback, [f"server {self._base_url}: {reason}"])

    def log_execution(
        self,
        prompt: Prompt,
        *,
        latency_ms: float,
        tokens_in: int = 0,
        tokens_out: int = 0,
        status: str = "ok",
        cost_usd: float | None = None,
        score: float | None = None,
        tenant: str | None = None,
        request_id: str | None = None,
        input: Mapping[str, Any] | None = None,
        output: str | None = None,
        error: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Queue one execution for the background sender; never blocks on the network and
        never raises. False when the record was dropped (queue full; see `stats.dropped`)."""
        return self._log(
            prompt,
            latency_ms=latency_ms,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            status=status,
            cost_usd=cost_usd,
            score=score,
            tenant=tenant,
            request_id=request_id,
            input=input,
            output=output,
            error=error,
            metadata=metadata,
        )

    def _log(self, prompt: Prompt, **fields: Any) -> bool:
        try:
            item = execution_item(prompt, **fields)
        except Exception as error:  # a bad argument must not break the application's call
            self.stats.add("rejected")
            log.warning("promptrecord: execution record not made: %s", error)
            return False
        return self._executions.put(item)

    def timed(self, prompt: Prompt, **fields: Any) -> TimedExecution:
        """A context manager that times its block and logs it (see `TimedExecution`);
        ``with`` on `PromptClient`, ``async with`` on `AsyncPromptClient`."""
        return TimedExecution(self._log, prompt, fields)
