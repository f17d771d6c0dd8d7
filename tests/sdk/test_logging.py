"""Execution logging: batches reach the server; a dead or hung server never hurts the caller."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from promptrecord.sdk import Prompt, PromptClient

if TYPE_CHECKING:
    from tests.sdk.conftest import SdkServer

EXECUTIONS = "/v1/executions"


def _posted_items(server: SdkServer) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for seen in server.log.requests(EXECUTIONS, "POST"):
        items.extend(json.loads(seen.body)["items"])
    return items


def _metrics(server: SdkServer, name: str) -> dict[int, dict[str, Any]]:
    response = server.api.admin.get(f"/v1/prompts/{name}/metrics")
    assert response.status_code == 200, response.text
    return {group["version"]: group for group in response.json()["groups"]}


def test_logged_executions_reach_the_server_in_batches(server: SdkServer) -> None:
    server.deploy()
    with PromptClient(
        server.base_url,
        server.runtime_token,
        fallback_dir=server.snapshots,
        log_batch_size=4,
        log_flush_interval=30,  # only full batches and flush() send
    ) as client:
        prompt = client.get("bot", tenant="acme")
        for index in range(10):
            assert client.log_execution(
                prompt,
                latency_ms=100 + index,
                tokens_in=10,
                tokens_out=5,
                status="ok" if index % 5 else "error",
                request_id=f"req-{index}",
                metadata={"index": index},
            )
        assert client.flush(timeout=30)
        assert (client.stats.queued, client.stats.sent, client.stats.dropped) == (10, 10, 0)
        assert client.stats.responses == {200: 3}  # 4 + 4 + 2
    items = _posted_items(server)
    assert [item["request_id"] for item in items] == [f"req-{i}" for i in range(10)]
    assert len({item["id"] for item in items}) == 10
    first = items[0]
    assert (first["prompt"], first["version"], first["tenant"]) == ("bot", 1, "acme")
    assert (first["resolve_reason"], first["environment"]) == ("promoted", "production")
    assert first["model"] == prompt.model["name"] and first["provider"] == "anthropic"
    figures = _metrics(server, "bot")[1]
    assert figures["statuses"]["ok"] == 8 and figures["statuses"]["error"] == 2
    assert (figures["tokens_in"], figures["tokens_out"]) == (100, 50)


def test_timed_logs_the_block_and_its_failure(server: SdkServer) -> None:
    server.deploy()
    with PromptClient(
        server.base_url, server.runtime_token, fallback_dir=server.snapshots
    ) as client:
        prompt = client.get("bot")
        with client.timed(prompt, tenant="acme", request_id="r1") as call:
            call.tokens_in, call.tokens_out, call.output = 7, 3, "fine"
        with pytest.raises(ZeroDivisionError), client.timed(prompt, request_id="r2"):
            1 / 0  # noqa: B018
        assert client.flush(timeout=30) and client.stats.sent == 2
    ok, failed = sorted(_posted_items(server), key=lambda item: item["request_id"])
    assert (ok["status"], ok["tokens_in"], ok["output"], ok["tenant"]) == ("ok", 7, "fine", "acme")
    assert ok["latency_ms"] >= 0 and ok["started_at"]
    assert failed["status"] == "error" and "ZeroDivisionError" in failed["error"]


def test_items_the_server_refuses_are_counted_not_raised(server: SdkServer) -> None:
    server.deploy()
    with PromptClient(
        server.base_url, server.runtime_token, fallback_dir=server.snapshots
    ) as client:
        prompt = client.get("bot")
        assert client.log_execution(prompt, latency_ms=5, score=7.0)  # score is 0..1
        assert client.log_execution(prompt, latency_ms=5, score=0.5)
        # not JSON: refused on the spot, or dropped by the sender, never raised
        assert not client.log_execution(prompt, latency_ms=float("nan"))
        assert client.log_execution(prompt, latency_ms=5, metadata={"x": float("inf")})
        assert client.flush(timeout=30)
        assert (client.stats.sent, client.stats.rejected) == (1, 3)
    assert len(_posted_items(server)) == 2


@pytest.fixture
def hung_server() -> Iterator[str]:
    """A listening socket that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_hung_server_neither_blocks_the_caller_nor_grows_the_queue(hung_server: str) -> None:
    prompt = Prompt.from_content("bot", "production", {"text": "x", "model": {"name": "m"}})
    client = PromptClient(
        hung_server,
        "pr_x_y",
        snapshots=False,
        timeout=60,  # the sender waits on its POST for a minute
        log_max_queue=50,
        log_batch_size=10,
        log_flush_interval=0.01,
    )
    sizes: list[int] = []
    results: list[bool] = []

    def log_many() -> None:
        for _ in range(2000):
            results.append(client.log_execution(prompt, latency_ms=1))
            sizes.append(len(client._executions))

    caller = threading.Thread(target=log_many)
    caller.start()
    caller.join(timeout=30)  # against a minute-long hang: returns are not tied to the server
    assert not caller.is_alive(), "log_execution blocked on the hung server"
    assert max(sizes) <= 50
    stats = client.stats
    assert stats.queued + stats.dropped == 2000 == len(results)
    assert stats.dropped == results.count(False) and stats.dropped >= 2000 - 50 - 10
    assert client.flush(timeout=0.1) is False  # bounded, and says so
    client.close(timeout=0.1)


def test_a_dead_server_costs_retries_then_the_batch(server: SdkServer) -> None:
    server.deploy()
    with PromptClient(
        server.base_url, server.runtime_token, fallback_dir=server.snapshots
    ) as alive:
        prompt = alive.get("bot")
    server.stop()
    client = PromptClient(
        server.base_url,
        server.runtime_token,
        fallback_dir=server.snapshots,
        log_max_retries=2,
        log_retry_backoff=0.01,
        log_flush_interval=0.01,
    )
    for _ in range(5):
        assert client.log_execution(prompt, latency_ms=1)
    assert client.flush(timeout=30)  # handled: given up, not hanging
    assert (client.stats.failed, client.stats.retries, client.stats.sent) == (5, 2, 0)
    client.close(timeout=5)
