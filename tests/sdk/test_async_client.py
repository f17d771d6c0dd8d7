"""AsyncPromptClient: the same cache, routing, outage and logging rules under asyncio."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from promptrecord.sdk import AsyncPromptClient, PromptNotFound, PromptUnavailable

if TYPE_CHECKING:
    from tests.sdk.conftest import SdkServer

RESOLVE = "/v1/prompts/bot/resolve"


def _client(server: SdkServer, **options: object) -> AsyncPromptClient:
    return AsyncPromptClient(
        server.base_url,
        server.runtime_token,
        fallback_dir=server.snapshots,
        **options,  # type: ignore[arg-type]
    )


async def _until_version(client: AsyncPromptClient, version: int, tenant: str) -> None:
    for _ in range(1500):
        if (await client.get("bot", tenant=tenant)).version == version:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"version {version} never served")


def test_cache_stale_while_revalidate_and_logging(server: SdkServer) -> None:
    server.deploy(versions=2)

    async def scenario() -> None:
        async with _client(server, cache_ttl=0.2) as client:
            first = await client.get("bot", tenant="acme")
            assert first.version == 1 and first.compile(company="A", question="?")
            assert await client.get("bot", tenant="acme") is first  # a hit: no request
            assert server.log.count(RESOLVE) == 1
            await asyncio.to_thread(server.promote, "bot", 2)
            await asyncio.sleep(0.3)
            stale = await asyncio.gather(*[client.get("bot", tenant="acme") for _ in range(10)])
            assert all(prompt is first for prompt in stale)
            assert client.stats.refreshes == 1  # one background refresh for the key
            await _until_version(client, 2, "acme")
            assert server.log.count(RESOLVE) == 2
            with pytest.raises(PromptNotFound):
                await client.get("nope")
            async with client.timed(first, request_id="async-1") as call:
                call.tokens_in = 4
            assert client.log_execution(first, latency_ms=3, request_id="async-2")
            assert await client.flush(timeout=30)
            assert client.stats.sent == 2

    asyncio.run(scenario())


def test_outage_serves_snapshot_then_fallback_then_raises(server: SdkServer) -> None:
    server.deploy()

    async def scenario() -> None:
        async with _client(server) as client:
            await client.get("bot", tenant="acme")
        await asyncio.to_thread(server.stop)
        async with _client(server) as fresh:
            snapshot = await fresh.get("bot", tenant="acme")
            assert snapshot.source == "snapshot" and snapshot.version == 1
            fallback = await fresh.get(
                "bot", tenant="other", fallback={"text": "hi", "model": {"name": "m"}}
            )
            assert fallback.source == "fallback"
            with pytest.raises(PromptUnavailable) as raised:
                await fresh.get("bot", tenant="third")
            assert raised.value.attempts[-1] == "fallback: none passed"

    asyncio.run(scenario())
