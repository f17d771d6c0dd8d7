"""`PromptClient`: cached, failure-proof prompt fetching and execution logging (blocking API)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from promptrecord.sdk.cache import CacheKey, Fallback, PromptCache
from promptrecord.sdk.executions import TimedExecution, execution_item
from promptrecord.sdk.logging_queue import ExecutionQueue
from promptrecord.sdk.prompt import Prompt
from promptrecord.sdk.snapshot import SnapshotStore, default_directory
from promptrecord.sdk.stats import ClientStats
from promptrecord.sdk.wire import Unreachable, headers, key_scope, prompt_from, request_for

__all__ = ["ClientOptions", "PromptClient"]

log = logging.getLogger("promptrecord.sdk")
_monotonic = time.monotonic


class ClientOptions:
    """What both clients share: settings, cache, snapshots, execution queue and stats."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        environment: str,
        cache_ttl: float,
        max_stale: float | None,
        fallback_dir: str | os.PathLike[str] | None,
        snapshots: bool,
        timeout: float,
        retry_interval: float,
        max_entries: int,
        log_options: Mapping[str, Any],
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.environment = environment
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 3.0))
        self.headers = headers(api_key)
        self.stats = ClientStats()
        directory = default_directory() if fallback_dir is None else Path(fallback_dir)
        store = SnapshotStore(directory, key_scope(self.base_url, api_key)) if snapshots else None
        self.cache = PromptCache(
            environment, cache_ttl, max_stale, retry_interval, max_entries, store, self.stats
        )
        self.executions = ExecutionQueue(
            self.base_url, api_key, self.stats, timeout=timeout, **log_options
        )

    def attempt(self, error: Exception) -> str:
        """Note that the server failed now; the line `PromptUnavailable` lists for it."""
        reason = (
            f"{type(error).__name__}: {error}" if isinstance(error, httpx.HTTPError) else str(error)
        )
        self.cache.mark_down(reason)
        return f"server {self.base_url}: {reason}"

    def log_execution(self, prompt: Prompt, **fields: Any) -> bool:
        try:
            item = execution_item(prompt, **fields)
        except Exception as error:  # a bad argument must not break the application's call
            self.stats.add("rejected")
            log.warning("promptrecord: execution record not made: %s", error)
            return False
        return self.executions.put(item)


class PromptClient:
    """Fetch prompts from a promptrecord server, cached; log executions in the background.

    ``get`` answers from memory while an answer is fresh (`cache_ttl` seconds), then serves
    the stale answer at once while one background refresh per request runs (for up to
    `max_stale` seconds after the answer was fetched). With the server unreachable
    (connection error, timeout, 5xx) and nothing in memory, it serves the disk snapshot of
    the last good answer for the same request (kept in `fallback_dir`), then `fallback=`,
    then raises `PromptUnavailable`. A 4xx is an answer, not an outage: it raises
    `PromptNotFound`, `AuthError`, `PromptArchived` or `RequestRefused` with the server's
    problem. Safe to share between threads.
    """

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
        self._options = ClientOptions(
            base_url,
            api_key,
            environment,
            cache_ttl,
            max_stale,
            fallback_dir,
            snapshots,
            timeout,
            retry_interval,
            max_entries,
            {
                "batch_size": log_batch_size,
                "flush_interval": log_flush_interval,
                "max_queue": log_max_queue,
                "max_retries": log_max_retries,
                "retry_backoff": log_retry_backoff,
                "exit_timeout": log_exit_timeout,
            },
        )
        self.environment = environment
        self.stats = self._options.stats
        self._cache = self._options.cache
        self._fresh = self._cache.fresh.answers
        self._http = httpx.Client(
            base_url=self._options.base_url,
            headers=self._options.headers,
            timeout=self._options.timeout,
        )

    @property
    def base_url(self) -> str:
        return self._options.base_url

    def get(
        self,
        name: str,
        tenant: str | None = None,
        key: str | None = None,
        version: int | None = None,
        fallback: Fallback = None,
    ) -> Prompt:
        """The prompt `tenant` (or routing `key`) gets in this client's environment, or
        `version` itself; `fallback` (a `Prompt` or a content dict) when all else fails."""
        # The hit path: one dict lookup (expired keys are removed from it in the background).
        try:
            return self._fresh[(name, tenant, key, version)]  # type: ignore[no-any-return]
        except KeyError:
            return self._get_slow((name, tenant, key, version), fallback)

    def _get_slow(self, cache_key: CacheKey, fallback: Fallback) -> Prompt:
        cache = self._cache
        now = _monotonic()
        stale = cache.stale(cache_key, now)
        if stale is not None:
            if cache.claim_refresh(cache_key):
                threading.Thread(
                    target=self._refresh,
                    args=(cache_key,),
                    name="promptrecord-refresh",
                    daemon=True,
                ).start()
            return stale
        down = cache.server_down(now)
        if down is not None:
            return cache.stand_in(cache_key, fallback, [down])
        self.stats.add("misses")
        try:
            return cache.store(cache_key, self._fetch(cache_key))
        except (Unreachable, httpx.RequestError) as error:
            return cache.stand_in(cache_key, fallback, [self._options.attempt(error)])

    def _fetch(self, cache_key: CacheKey) -> Prompt:
        name, tenant, key, version = cache_key
        path, params = request_for(name, self.environment, tenant, key, version)
        response = self._http.get(path, params=params)
        return prompt_from(response, name, self.environment, version)

    def _refresh(self, cache_key: CacheKey) -> None:
        try:
            prompt = self._fetch(cache_key)
        except Exception as error:  # whatever it is, the stale answer keeps being served
            self._cache.refreshed(cache_key, None, error)
        else:
            self._cache.refreshed(cache_key, prompt, None)

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
        return self._options.log_execution(
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

    def timed(self, prompt: Prompt, **fields: Any) -> TimedExecution:
        """A context manager that times its block and logs it (see `TimedExecution`)."""
        return TimedExecution(self._options.log_execution, prompt, fields)

    def flush(self, timeout: float = 5.0) -> bool:
        """Send the queued executions now; True when all were handled within `timeout`."""
        return self._options.executions.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush executions (up to `timeout` seconds) and release connections."""
        self._options.executions.close(timeout)
        self._cache.close()
        self._http.close()

    def __enter__(self) -> PromptClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
