"""`AsyncPromptClient`: the asyncio twin of `PromptClient`, with the same cache and rules."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from promptrecord.sdk.cache import CacheKey, Fallback
from promptrecord.sdk.client import ClientOptions
from promptrecord.sdk.executions import TimedExecution
from promptrecord.sdk.prompt import Prompt
from promptrecord.sdk.wire import Unreachable, prompt_from, request_for

__all__ = ["AsyncPromptClient"]

_monotonic = time.monotonic


class AsyncPromptClient:
    """`PromptClient` for asyncio code: ``await client.get(...)``; background refreshes are
    tasks on the running loop. Execution logging is the same non-blocking queue and sender
    thread (``log_execution`` is a plain call; ``await client.flush()``)."""

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
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(
            base_url=self._options.base_url,
            headers=self._options.headers,
            timeout=self._options.timeout,
        )

    @property
    def base_url(self) -> str:
        return self._options.base_url

    async def get(
        self,
        name: str,
        tenant: str | None = None,
        key: str | None = None,
        version: int | None = None,
        fallback: Fallback = None,
    ) -> Prompt:
        """As `PromptClient.get`."""
        try:
            return self._fresh[(name, tenant, key, version)]  # type: ignore[no-any-return]
        except KeyError:
            return await self._get_slow((name, tenant, key, version), fallback)

    async def _get_slow(self, cache_key: CacheKey, fallback: Fallback) -> Prompt:
        cache = self._cache
        now = _monotonic()
        stale = cache.stale(cache_key, now)
        if stale is not None:
            if cache.claim_refresh(cache_key):
                task = asyncio.get_running_loop().create_task(self._refresh(cache_key))
                self._tasks.add(task)  # held so the loop does not drop it mid-flight
                task.add_done_callback(self._tasks.discard)
            return stale
        down = cache.server_down(now)
        if down is not None:
            return cache.stand_in(cache_key, fallback, [down])
        self.stats.add("misses")
        try:
            return cache.store(cache_key, await self._fetch(cache_key))
        except (Unreachable, httpx.RequestError) as error:
            return cache.stand_in(cache_key, fallback, [self._options.attempt(error)])

    async def _fetch(self, cache_key: CacheKey) -> Prompt:
        name, tenant, key, version = cache_key
        path, params = request_for(name, self.environment, tenant, key, version)
        response = await self._http.get(path, params=params)
        return prompt_from(response, name, self.environment, version)

    async def _refresh(self, cache_key: CacheKey) -> None:
        try:
            prompt = await self._fetch(cache_key)
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
        """As `PromptClient.log_execution`: a plain call that never waits on the network."""
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
        """``async with client.timed(prompt) as call:`` (see `TimedExecution`)."""
        return TimedExecution(self._options.log_execution, prompt, fields)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Send the queued executions now (waiting in a thread, not on the loop)."""
        return await asyncio.to_thread(self._options.executions.flush, timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Flush executions, wait for running refreshes, release connections."""
        await asyncio.to_thread(self._options.executions.close, timeout)
        self._cache.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPromptClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
