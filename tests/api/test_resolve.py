"""Resolution, compile and tenant pins, over HTTP."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from promptrecord.api.routes import resolve as resolve_route

if TYPE_CHECKING:
    from tests.api.conftest import Api

ENV = "/v1/prompts/bot/environments"


def _deployed(api: Api, versions: int = 2, serving: int = 1) -> None:
    api.admin.post("/v1/prompts", json={"name": "bot", "content": api.content("v1 {{ company }}")})
    for number in range(2, versions + 1):
        api.admin.post(
            "/v1/prompts/bot/versions",
            json={"content": api.content(f"v{number} {{{{ company }}}}")},
        )
    promoted = api.admin.post(f"{ENV}/production/promote", json={"version": serving})
    assert promoted.status_code == 200, promoted.text


def test_resolve_answers_with_content_and_cause(api: Api) -> None:
    _deployed(api)
    runtime = api.as_role("runtime")
    response = runtime.get("/v1/prompts/bot/resolve", params={"tenant": "acme"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["prompt"] == "bot" and answer["environment"] == "production"
    assert answer["tenant"] == "acme" and answer["version"] == 1
    assert answer["reason"] == "promoted" and answer["rollout"] is None
    assert answer["content"]["messages"][0]["content"] == "v1 {{ company }}"
    assert answer["model"]["provider"] == "anthropic"
    assert answer["variables"] == ["company", "question"]
    assert answer["content_hash"].startswith("sha256:") and answer["cause_event_id"]
    assert answer["position"] >= 1 and answer["pin_expires_at"] is None
    api.assert_problem(
        runtime.get("/v1/prompts/bot/resolve", params={"environment": "staging"}),
        404,
        "not_deployed",
        "environment",
    )
    api.assert_problem(
        runtime.get("/v1/prompts/bot/resolve", params={"environment": "qa"}),
        404,
        "environment_not_found",
    )
    api.assert_problem(runtime.get("/v1/prompts/nope/resolve"), 404, "prompt_not_found")
    api.assert_problem(
        runtime.get("/v1/prompts/bot/resolve", params={"after": -1}),
        422,
        "validation_failed",
        "query.after",
    )


def test_after_reads_your_own_write(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    _deployed(api)
    promoted = api.admin.post(f"{ENV}/production/promote", json={"version": 2})
    position = promoted.json()["position"]
    answer = api.admin.get("/v1/prompts/bot/resolve", params={"after": position}).json()
    assert answer["version"] == 2 and answer["position"] >= position
    monkeypatch.setattr(resolve_route, "AFTER_TIMEOUT_SECONDS", 0.2)
    late = api.admin.get("/v1/prompts/bot/resolve", params={"after": position + 1000})
    body = api.assert_problem(late, 503, "position_not_reached", "query.after")
    assert late.headers["retry-after"] == "1" and body["position"] >= position


def test_compile_renders_and_names_missing_variables(api: Api) -> None:
    _deployed(api)
    runtime = api.as_role("runtime")
    compiled = runtime.post(
        "/v1/prompts/bot/compile",
        json={
            "tenant": "acme",
            "variables": {"company": "Acme", "question": "Where is it?", "mood": "calm"},
        },
    )
    assert compiled.status_code == 200, compiled.text
    body = compiled.json()
    assert body["messages"] == [
        {"role": "system", "content": "v1 Acme"},
        {"role": "user", "content": "Where is it?"},
    ]
    assert body["unused"] == ["mood"] and body["version"] == 1 and body["reason"] == "promoted"
    assert body["text"] is None and body["model"]["provider"] == "anthropic"
    named = runtime.post(
        "/v1/prompts/bot/compile",
        json={"version": 2, "variables": {"company": "Globex", "question": "?"}},
    )
    assert named.json()["messages"][0]["content"] == "v2 Globex"
    assert named.json()["reason"] == "requested"
    missing = runtime.post("/v1/prompts/bot/compile", json={"variables": {"company": "Acme"}})
    problem = api.assert_problem(missing, 422, "missing_variable", "variables.question")
    assert problem["variable"] == "question" and "question" in problem["detail"]
    api.assert_problem(
        runtime.post("/v1/prompts/bot/compile", json={"version": 7, "variables": {}}),
        404,
        "version_not_found",
    )
    api.assert_problem(
        api.as_role("viewer").post("/v1/prompts/bot/compile", json={}), 403, "role_required"
    )
    text = {"text": "Dear {{ name | upper }}", "model": {"provider": "x", "name": "m"}}
    api.admin.post("/v1/prompts", json={"name": "letter", "content": text})
    letter = runtime.post(
        "/v1/prompts/letter/compile", json={"version": 1, "variables": {"name": "ann"}}
    ).json()
    assert letter["text"] == "Dear ANN" and letter["messages"] is None


def test_pins_beat_rollouts_and_expire(api: Api) -> None:
    _deployed(api, versions=3)
    deployer = api.as_role("deployer")
    api.admin.post(f"{ENV}/production/rollout", json={"candidate": 2, "share": 0.5})
    pinned = deployer.post(
        "/v1/tenants/acme/pins",
        json={"prompt": "bot", "environment": "production", "version": 3, "reason": "contract"},
    )
    assert pinned.status_code == 201, pinned.text
    assert pinned.json()["version"] == 3 and pinned.headers["etag"]
    expires = datetime.fromisoformat(pinned.json()["expires_at"])
    assert timedelta(days=6) < expires - datetime.now(UTC) <= timedelta(days=7)
    answer = api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "acme"}).json()
    assert answer["reason"] == "pinned" and answer["version"] == 3
    assert answer["rollout"] is None and answer["pin_expires_at"]
    other = api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "globex"}).json()
    assert other["reason"] == "rollout"

    pins = deployer.get("/v1/tenants/acme/pins").json()["items"]
    assert [(p["prompt"], p["environment"], p["version"], p["active"]) for p in pins] == [
        ("bot", "production", 3, True)
    ]
    api.assert_problem(
        deployer.post(
            "/v1/tenants/acme/pins",
            json={"prompt": "bot", "environment": "production", "version": 9},
        ),
        404,
        "version_not_found",
    )
    api.assert_problem(
        deployer.post(
            "/v1/tenants/acme/pins",
            json={"prompt": "bot", "environment": "production", "version": 1, "ttl_seconds": 0},
        ),
        422,
        "validation_failed",
        "body.ttl_seconds",
    )
    api.assert_problem(
        deployer.post(
            "/v1/tenants/acme/pins",
            json={
                "prompt": "bot",
                "environment": "production",
                "version": 1,
                "expires_at": "2099-01-01T00:00:00Z",
            },
        ),
        422,
        "pin_too_long",
        "expires_at",
    )
    api.assert_problem(
        deployer.post(
            "/v1/tenants/acme/pins",
            json={
                "prompt": "bot",
                "environment": "production",
                "version": 1,
                "expires_at": "2030-01-01T00:00:00",
            },
        ),
        422,
        "invalid_input",
        "expires_at",
    )
    api.assert_problem(
        api.as_role("editor").post(
            "/v1/tenants/acme/pins",
            json={"prompt": "bot", "environment": "production", "version": 1},
        ),
        403,
        "role_required",
    )

    unpinned = deployer.delete("/v1/tenants/acme/pins/bot/production", params={"reason": "done"})
    assert unpinned.status_code == 200, unpinned.text
    assert (
        api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "acme"}).json()["reason"]
        == "rollout"
    )
    api.assert_problem(deployer.delete("/v1/tenants/acme/pins/bot/production"), 409, "not_pinned")
    api.assert_problem(deployer.delete("/v1/tenants/zed/pins/bot/production"), 404, "not_pinned")

    # Pinned an hour ago for a minute: long expired now.
    with api.services.app.frozen_clock(datetime.now(UTC) - timedelta(hours=1)):
        old = deployer.post(
            "/v1/tenants/initech/pins",
            json={"prompt": "bot", "environment": "production", "version": 3, "ttl_seconds": 60},
        )
    assert old.status_code == 201, old.text
    expired = api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "initech"}).json()
    assert expired["reason"] == "rollout" and expired["pin_expires_at"] is None
    listed = deployer.get("/v1/tenants/initech/pins").json()["items"]
    assert listed[0]["active"] is False
    api.assert_problem(
        deployer.delete("/v1/tenants/initech/pins/bot/production"), 409, "pin_expired"
    )

    # A pin that expires while we watch.
    soon = datetime.now(UTC) + timedelta(seconds=1)
    deployer.post(
        "/v1/tenants/hooli/pins",
        json={
            "prompt": "bot",
            "environment": "production",
            "version": 3,
            "expires_at": soon.isoformat(),
        },
    )
    assert (
        api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "hooli"}).json()["reason"]
        == "pinned"
    )
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    assert (
        api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "hooli"}).json()["reason"]
        == "rollout"
    )


def test_pin_paging_and_limits(api: Api) -> None:
    _deployed(api)
    for environment in ("development", "staging", "production"):
        api.admin.post(f"{ENV}/{environment}/promote", json={"version": 1})
        api.admin.post(
            "/v1/tenants/acme/pins",
            json={"prompt": "bot", "environment": environment, "version": 2},
        )
    first = api.admin.get("/v1/tenants/acme/pins", params={"limit": 2}).json()
    rest = api.admin.get(
        "/v1/tenants/acme/pins", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    environments = [p["environment"] for p in first["items"] + rest["items"]]
    assert environments == ["development", "production", "staging"]
    assert rest["next_cursor"] is None
    staging = api.as_role("deployer", environments=["staging"])
    assert [p["environment"] for p in staging.get("/v1/tenants/acme/pins").json()["items"]] == [
        "staging"
    ]
    api.assert_problem(
        staging.delete("/v1/tenants/acme/pins/bot/production"), 403, "environment_not_allowed"
    )
