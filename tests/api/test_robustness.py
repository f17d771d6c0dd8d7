"""Odd input anywhere gets a problem response, never a 500."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.api.conftest import Api


PROBLEM = "application/problem+json"
ODD = ["%00", "%ff", "a" * 300, "..", "%2F", "ünï", "%F0%9F%98%80", "x%0Ay", "-1", "9" * 40]
MODEL = {"provider": "a", "name": "b"}


def _faults(responses: list[httpx.Response]) -> list[tuple[str, str, int, str]]:
    return [
        (r.request.method, str(r.request.url)[:100], r.status_code, r.text[:200])
        for r in responses
        if r.status_code >= 500
        or (r.status_code >= 400 and r.headers.get("content-type") != PROBLEM)
    ]


def test_odd_input_never_gets_a_500(api: Api) -> None:
    client = api.admin
    client.post("/v1/prompts", json={"name": "bot", "content": api.content()})
    client.post("/v1/prompts/bot/environments/production/promote", json={"version": 1})
    seen: list[httpx.Response] = []
    for odd in ODD:
        for path in (
            f"/v1/prompts/{odd}",
            f"/v1/prompts/bot/versions/{odd}",
            f"/v1/prompts/{odd}/resolve",
            f"/v1/prompts/bot/environments/{odd}",
            f"/v1/tenants/{odd}/pins",
            f"/v1/prompts/bot/diff?from={odd}",
            f"/v1/prompts/bot/resolve?environment={odd}&tenant={odd}&key={odd}",
            f"/v1/prompts?cursor={odd}&limit={odd}",
        ):
            seen.append(client.get(path))
        posts: list[tuple[str, Any]] = [
            (f"/v1/prompts/bot/environments/{odd}/promote", {"version": 1}),
            (
                f"/v1/tenants/{odd}/pins",
                {"prompt": "bot", "environment": "production", "version": 1},
            ),
            ("/v1/tenants/acme/pins", {"prompt": odd, "environment": odd, "version": 1}),
            (f"/v1/prompts/bot/environments/production/requests/{odd}/approve", {}),
            (f"/v1/keys/{odd}/revoke", {"reason": "x"}),
            ("/v1/prompts", {"name": odd, "title": odd * 3}),
            ("/v1/keys", {"name": odd, "role": odd, "environments": [odd]}),
            ("/v1/prompts/bot/compile", {"environment": odd, "tenant": odd, "variables": {odd: 1}}),
            ("/v1/workspace/environments", {"environments": [odd]}),
            (f"/v1/workspace/policies/{odd}", {"four_eyes": True}),
            (
                "/v1/prompts/bot/versions",
                {"content": {"text": odd, "model": {**MODEL, "x": [odd]}}},
            ),
        ]
        seen.extend(client.post(path, json=body) for path, body in posts)
        seen.append(client.delete(f"/v1/tenants/{odd}/pins/{odd}/{odd}?reason={odd}"))
        seen.append(
            client.post(
                "/v1/prompts/bot/versions",
                json={"content": api.content()},
                headers={b"If-Match": odd.encode()},
            )
        )
    bodies: tuple[Any, ...] = (
        None,
        1,
        [],
        {"content": None},
        {"content": {"text": "x", "model": {**MODEL, "max_tokens": 10**40}}},
        {"content": {"text": "{{ x.__class__.__mro__ }}", "model": MODEL}},
        {"content": {"text": "x", "model": {**MODEL, "temperature": True}}},
        {"content": {"messages": [], "model": MODEL}},
        {"content": {"text": "x", "model": MODEL, "output_schema": []}},
    )
    for body in bodies:
        seen.append(client.post("/v1/prompts/bot/versions", json=body))
    pin = {"prompt": "bot", "environment": "production", "version": 1}
    for extra in (
        {"expires_at": "9999-12-31T23:59:59Z"},
        {"expires_at": "0001-01-01T00:00:00Z"},
        {"ttl_seconds": 10**12},
    ):
        seen.append(client.post("/v1/tenants/t/pins", json={**pin, **extra}))
    seen.append(
        client.post("/v1/workspace/policies/production", json={"pin_max_ttl_seconds": 10**15})
    )
    seen.append(
        client.post("/v1/prompts/bot/environments/production/rollout/adjust", json={"share": 1e308})
    )
    seen.append(
        client.post(
            "/v1/prompts/bot/compile",
            json={"variables": {"company": {"nested": [1, 2]}, "question": None}},
        )
    )
    for raw in (b'{"\\ud800": 1}', b'{"title": "\\ud800"}', b'{"name": "x", "title": NaN}'):
        seen.append(
            client.post("/v1/prompts", content=raw, headers={"Content-Type": "application/json"})
        )
    assert _faults(seen) == []
