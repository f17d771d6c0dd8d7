"""`AsyncPromptClient`: the asyncio twin of `PromptClient`, with the same cache and rules."""

from __future__ import annotations

import asyncio
from types import TracebackType

import httpx

from promptrecord.sdk.cache import CacheKey, Fallback
from promptrecord.sdk.client_base import ClientBase
from promptrecord.sdk.prompt import Prompt
from promptrecord.sdk.wire import Unreachable, prompt_from, request_for

__all__ = ["AsyncPromptClient"]


class AsyncPromptClient(ClientBase):
    """`PromptClient` for asyncio code: ``await client.get(...)``; background refreshes are
    tasks on the running loop. Execution logging is the same non-blocking queue and sender
    thread (``log_execution`` is a plain call; ``await client.flush()``)."""

    _http: httpx.AsyncClient
    _tasks: set[asyncio.Task[None]]

    def _open(self) -> None:
        self._tasks = set()
        self._http = httpx.AsyncClient(**self._http_options)

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
            if key is None and version is None:  # a smaller tuple for the commonest call
                return self._fresh[name, tenant]  # type: ignore[no-any-return]
            return self._fresh[name, tenant, key, version]  # type: ignore[no-any-return]
        except KeyError:
            return await self._get_slow((name, tenant, key, version), fallback)

    async def _get_slow(self, cache_key: CacheKey, fallback: Fallback) -> Prompt:
        answer = self._without_fetch(cache_key, fallback)
        if answer is not None:
            return answer
        try:
            return self._cache.store(cache_key, await self._fetch(cache_key))
        except (Unreachable, httpx.RequestError) as error:
            return self._unreachable(cache_key, fallback, error)

    def _start_refresh(self, cache_key: CacheKey) -> None:
        task = asyncio.get_running_loop().create_task(self._refresh(cache_key))
        self._tasks.add(task)  # held so the loop does not drop it mid-flight
        task.add_done_callback(self._tasks.discard)

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

    async def flush(self, timeout: float = 5.0) -> bool:
        """Send the queued executions now (waiting in a thread, not on the loop)."""
        return await asyncio.to_thread(self._executions.flush, timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Flush executions, wait for running refreshes, release connections."""
        await asyncio.to_thread(self._executions.close, timeout)
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
