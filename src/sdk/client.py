"""`PromptClient`: cached, failure-proof prompt fetching and execution logging (blocking API)."""

from __future__ import annotations

import threading
from types import TracebackType

import httpx

from promptrecord.sdk.cache import CacheKey, Fallback
from promptrecord.sdk.client_base import ClientBase
from promptrecord.sdk.prompt import Prompt
from promptrecord.sdk.wire import Unreachable, prompt_from, request_for

__all__ = ["PromptClient"]


class PromptClient(ClientBase):
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

    _http: httpx.Client

    def _open(self) -> None:
        self._http = httpx.Client(**self._http_options)

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
            if key is None and version is None:  # a smaller tuple for the commonest call
                return self._fresh[name, tenant]  # type: ignore[no-any-return]
            return self._fresh[name, tenant, key, version]  # type: ignore[no-any-return]
        except KeyError:
            return self._get_slow((name, tenant, key, version), fallback)

    def _get_slow(self, cache_key: CacheKey, fallback: Fallback) -> Prompt:
        answer = self._without_fetch(cache_key, fallback)
        if answer is not None:
            return answer
        try:
            return self._cache.store(cache_key, self._fetch(cache_key))
        except (Unreachable, httpx.RequestError) as error:
            return self._unreachable(cache_key, fallback, error)

    def _start_refresh(self, cache_key: CacheKey) -> None:
        threading.Thread(
            target=self._refresh, args=(cache_key,), name="promptrecord-refresh", daemon=True
        ).start()

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

    def flush(self, timeout: float = 5.0) -> bool:
        """Send the queued executions now; True when all were handled within `timeout`."""
        return self._executions.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush executions (up to `timeout` seconds) and release connections."""
        self._executions.close(timeout)
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
