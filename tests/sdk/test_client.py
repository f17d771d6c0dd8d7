"""PromptClient against a real server: cache, stale-while-revalidate, routing, outages."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from promptrecord.sdk import (
    AuthError,
    Prompt,
    PromptClient,
    PromptNotFound,
    PromptUnavailable,
)

if TYPE_CHECKING:
    from tests.sdk.conftest import SdkServer

RESOLVE = "/v1/prompts/bot/resolve"


def _wait_until(condition, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _client(server: SdkServer, **options: object) -> PromptClient:
    return PromptClient(
        server.base_url,
        server.runtime_token,
        fallback_dir=server.snapshots,
        **options,  # type: ignore[arg-type]
    )


def test_get_answers_with_what_the_server_resolved(server: SdkServer) -> None:
    server.deploy(versions=2, serving=1)
    with _client(server) as client:
        prompt = client.get("bot", tenant="acme")
    answer = server.api.admin.get(RESOLVE, params={"tenant": "acme"}).json()
    assert prompt.name == "bot" and prompt.version == 1 and prompt.reason == "promoted"
    assert prompt.content_hash == answer["content_hash"] and prompt.content == answer["content"]
    assert prompt.type == "chat" and prompt.text is None
    assert prompt.messages == answer["content"]["messages"]
    assert prompt.model == answer["model"] and prompt.variables == ["company", "question"]
    assert prompt.environment == "production" and prompt.tenant == "acme"
    assert prompt.source == "server" and prompt.rollout is None and prompt.pin_expires_at is None
    assert prompt.compile(company="Acme", question="Hi?") == [
        {"role": "system", "content": "v1 Acme"},
        {"role": "user", "content": "Hi?"},
    ]


def test_a_cache_hit_makes_no_request(server: SdkServer) -> None:
    server.deploy()
    with _client(server, cache_ttl=600) as client:
        first = client.get("bot")
        assert server.log.count(RESOLVE) == 1
        for _ in range(50):
            assert client.get("bot") is first
        assert server.log.count(RESOLVE) == 1
        assert client.stats.misses == 1


def test_after_expiry_the_stale_answer_is_served_and_refreshed_once(server: SdkServer) -> None:
    server.deploy()
    with _client(server, cache_ttl=0.2) as client:
        old = client.get("bot")
        server.promote("bot", 2)
        time.sleep(0.3)  # past the TTL
        stale = [client.get("bot") for _ in range(20)]
        # The first is served at once, from memory, while one refresh runs in the background;
        # the rest are that same answer until the refresh lands, then the new one.
        assert stale[0] is old
        landed = next((i for i, prompt in enumerate(stale) if prompt is not old), len(stale))
        assert all(prompt.version == 2 for prompt in stale[landed:])
        assert client.stats.stale_served >= 1 and client.stats.refreshes == 1
        _wait_until(lambda: client.get("bot").version == 2)
        assert server.log.count(RESOLVE) == 2  # the first fetch and the one refresh
        assert client.stats.refresh_failures == 0 and client.stats.misses == 1


def test_a_promotion_becomes_visible_within_the_ttl(server: SdkServer) -> None:
    server.deploy(versions=3)
    with _client(server, cache_ttl=2.0) as client:
        assert client.get("bot").version == 1
        server.promote("bot", 3)
        assert client.get("bot").version == 1  # still within the TTL: cached
        # visible once the TTL is over, after one background refresh
        _wait_until(lambda: client.get("bot").version == 3)
        assert server.log.count(RESOLVE) == 2


def test_tenants_on_either_side_of_a_rollout_each_get_their_version(server: SdkServer) -> None:
    server.deploy()
    started = server.api.admin.post(
        "/v1/prompts/bot/environments/production/rollout",
        json={"candidate": 2, "share": 0.5, "key_by": "tenant"},
    )
    assert started.status_code == 200, started.text
    server.settle(started.json()["position"])
    arms: dict[str, str] = {}
    for index in range(64):
        tenant = f"tenant-{index}"
        arm = server.api.admin.get(RESOLVE, params={"tenant": tenant}).json()["rollout"]["arm"]
        arms.setdefault(arm, tenant)
        if len(arms) == 2:
            break
    assert set(arms) == {"candidate", "baseline"}
    before = server.log.count(RESOLVE)
    with _client(server, cache_ttl=600) as client:
        for _ in range(3):  # the second and third rounds come from the cache
            candidate = client.get("bot", tenant=arms["candidate"])
            baseline = client.get("bot", tenant=arms["baseline"])
            assert (candidate.version, candidate.rollout_arm) == (2, "candidate")
            assert (baseline.version, baseline.rollout_arm) == (1, "baseline")
            assert candidate.reason == baseline.reason == "rollout"
        assert server.log.count(RESOLVE) - before == 2
        # a routing key is part of the request too: not served from the tenant's answers
        keyed = client.get("bot", tenant=arms["candidate"], key="user-1")
        assert keyed.key == "user-1" and server.log.count(RESOLVE) - before == 3


def test_a_pinned_answer_is_not_served_past_the_pins_expiry(server: SdkServer) -> None:
    server.deploy()
    pinned = server.api.admin.post(
        "/v1/tenants/acme/pins",
        json={"prompt": "bot", "environment": "production", "version": 2, "ttl_seconds": 1},
    )
    assert pinned.status_code == 201, pinned.text
    server.settle(pinned.json()["position"])
    with _client(server, cache_ttl=600) as client:
        prompt = client.get("bot", tenant="acme")
        assert prompt.reason == "pinned" and prompt.version == 2 and prompt.pin_expires_at
        time.sleep(max(0.0, (prompt.pin_expires_at - prompt.fetched_at).total_seconds()) + 0.1)
        after = client.get("bot", tenant="acme")  # TTL not over, but the pin is
        assert (after.reason, after.version) == ("promoted", 1)
        assert server.log.count(RESOLVE) == 2


def test_a_fixed_version_is_fetched_once_and_kept(server: SdkServer) -> None:
    server.deploy(versions=2)
    with _client(server, cache_ttl=0.05) as client:
        two = client.get("bot", version=2)
        assert (two.version, two.reason) == (2, "explicit")
        assert two.compile(company="X", question="?")[0]["content"] == "v2 X"  # type: ignore[index]
        time.sleep(0.1)
        assert client.get("bot", version=2) is two  # a committed version never changes
        assert server.log.count("/v1/prompts/bot/versions/2") == 1


def test_server_refusals_raise_with_the_problem(server: SdkServer) -> None:
    server.deploy()
    with _client(server) as client:
        with pytest.raises(PromptNotFound) as missing:
            client.get("nope", fallback={"text": "never used", "model": {}})
        assert missing.value.code == "prompt_not_found" and missing.value.status == 404
        with pytest.raises(PromptNotFound) as no_version:
            client.get("bot", version=9)
        assert no_version.value.code == "version_not_found"
    with PromptClient(server.base_url, "pr_nope_bad", fallback_dir=server.snapshots) as bad:
        with pytest.raises(AuthError) as refused:
            bad.get("bot")
        assert refused.value.status == 401 and refused.value.detail
    with _client(server, environment="qa") as client:
        with pytest.raises(PromptNotFound) as unknown:
            client.get("bot")
        assert unknown.value.code == "environment_not_found"
        assert unknown.value.field == "environment"


def test_with_the_server_down_snapshot_then_fallback_then_error(server: SdkServer) -> None:
    server.deploy()
    with _client(server) as client:
        served = client.get("bot", tenant="acme")
    server.stop()
    with _client(server) as fresh:  # a NEW client: nothing in memory
        snapshot = fresh.get("bot", tenant="acme")
        assert snapshot.source == "snapshot" and fresh.stats.snapshots_served == 1
        assert (snapshot.version, snapshot.content_hash) == (served.version, served.content_hash)
        assert snapshot.compile(company="A", question="?") == served.compile(
            company="A", question="?"
        )
        # no snapshot for another tenant: the caller's fallback, as content or as a Prompt
        fallback = fresh.get(
            "bot",
            tenant="globex",
            fallback={"text": "Hello {{ who }}", "model": {"provider": "x", "name": "m"}},
        )
        assert (fallback.source, fallback.reason, fallback.version) == (
            "fallback",
            "fallback",
            None,
        )
        assert fallback.compile(who="you") == "Hello you" and fallback.tenant == "globex"
        assert fresh.get("bot", tenant="initech", fallback=served) is served
        with pytest.raises(PromptUnavailable) as unavailable:
            fresh.get("bot", tenant="umbrella")
        tried = unavailable.value.attempts
        assert tried[0].startswith("server") and tried[1].startswith("snapshot: none")
        assert tried[2] == "fallback: none passed"
    with _client(server, snapshots=False) as without:
        with pytest.raises(PromptUnavailable) as no_snapshots:
            without.get("bot", tenant="acme")
        assert "ConnectError" in no_snapshots.value.attempts[0]
        assert no_snapshots.value.attempts[1] == "snapshot: disabled"


def test_a_failed_refresh_keeps_serving_the_stale_answer(server: SdkServer) -> None:
    server.deploy()
    with _client(server, cache_ttl=0.1, retry_interval=0.1) as client:
        cached = client.get("bot")
        server.stop()
        time.sleep(0.2)
        assert client.get("bot") is cached
        _wait_until(lambda: client.stats.refresh_failures >= 1)
        time.sleep(0.2)
        assert client.get("bot") is cached  # still served; another refresh was tried
        _wait_until(lambda: client.stats.refresh_failures >= 2)


def test_past_max_stale_the_caller_waits_for_the_server(server: SdkServer) -> None:
    server.deploy()
    with _client(server, cache_ttl=0.05, max_stale=0.1, snapshots=False) as client:
        client.get("bot")
        server.stop()
        time.sleep(0.2)  # past max_stale: not served from memory any more
        with pytest.raises(PromptUnavailable):
            client.get("bot")


def test_a_refresh_refused_by_the_server_drops_the_answer(server: SdkServer) -> None:
    server.deploy()
    with _client(server, cache_ttl=0.1) as client:
        client.get("bot")
        archived = server.api.admin.post("/v1/prompts/bot/archive", json={"reason": "gone"})
        assert archived.status_code == 200, archived.text
        server.settle(archived.json()["position"])
        time.sleep(0.2)
        client.get("bot")  # stale, refreshed in the background: the server refuses
        _wait_until(lambda: client.stats.refresh_failures == 1)
        with pytest.raises(Exception) as refused:
            client.get("bot")
        assert getattr(refused.value, "code", None) == "prompt_archived"


def test_prompt_from_content_hashes_as_the_server(server: SdkServer) -> None:
    content = server.api.content("Hi {{ company }}")
    created = server.api.admin.post("/v1/prompts", json={"name": "hashme", "content": content})
    assert created.status_code == 201, created.text
    stored = server.api.admin.get("/v1/prompts/hashme/versions/1").json()
    local = Prompt.from_content("hashme", "production", stored["content"])
    assert local.content_hash == stored["content_hash"]
    assert local.variables == stored["variables"]
