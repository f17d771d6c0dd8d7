"""Resolution, compile and tenant pins, over HTTP."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from promptrecord.api.routes import resolve as resolve_route
from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor

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


def test_after_waits_for_a_command_another_process_writes(api: Api) -> None:
    _deployed(api)
    runtime = api.as_role("runtime")
    target = api.services.live.position + 1  # the next event: a promote of version 2
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            runtime.get, "/v1/prompts/bot/resolve", params={"after": target, "tenant": "acme"}
        )
        time.sleep(0.2)  # let the request start waiting (order only; nothing is timed)
        # Another replica: its own application on the same store, not this process's.
        other = PromptRecord(env=api.services.settings.eventsourcing_env())
        try:
            written = other.promote("acme", "bot", "production", 2, Actor("key-x", "other"))
        finally:
            other.close()
        assert written.position == target
        response = waiting.result(timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["version"] == 2 and answer["reason"] == "promoted"
    assert answer["position"] >= target


def test_after_never_reached_answers_503_and_holds_no_thread(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More waiting requests than the worker threads (40) the server runs sync routes on:
    # if a wait held a thread, compile (a sync route) would queue behind them all.
    _deployed(api)
    monkeypatch.setattr(resolve_route, "AFTER_TIMEOUT_SECONDS", 3.0)
    runtime = api.as_role("runtime")
    unreachable = api.services.live.position + 10_000
    clients = [api.client(api.admin_token) for _ in range(45)]
    with ThreadPoolExecutor(len(clients)) as pool:
        waiting = [
            pool.submit(client.get, "/v1/prompts/bot/resolve", params={"after": unreachable})
            for client in clients
        ]
        time.sleep(0.3)  # let them start waiting (order only; nothing is timed)
        compiled = runtime.post(
            "/v1/prompts/bot/compile", json={"variables": {"company": "A", "question": "?"}}
        )
        still_waiting = sum(not future.done() for future in waiting)
        responses = [future.result(timeout=60) for future in waiting]
    assert compiled.status_code == 200, compiled.text  # answered while they wait
    assert still_waiting == len(waiting)
    for response in responses:
        body = api.assert_problem(response, 503, "position_not_reached", "query.after")
        assert response.headers["retry-after"] == "1"
        assert body["position"] < unreachable
    assert api.services.live._waiters == []  # every timed-out wait was forgotten


def test_resolve_query_is_validated_like_declared_parameters(api: Api) -> None:
    _deployed(api)
    runtime = api.as_role("runtime")
    path = "/v1/prompts/bot/resolve"
    for params, field in (
        ({"after": "x"}, "query.after"),
        ({"after": ""}, "query.after"),
        ({"after": "-3"}, "query.after"),
        ({"environment": "e" * 33}, "query.environment"),
        ({"tenant": "t" * 257}, "query.tenant"),
        ({"key": "k" * 257}, "query.key"),
    ):
        api.assert_problem(runtime.get(path, params=params), 422, "validation_failed", field)
    # authentication comes first, as with declared parameters
    api.assert_problem(api.client().get(path, params={"after": "x"}), 401, "unauthenticated")
    # values FastAPI accepts are accepted: the last of repeated ones, "+1", empty strings
    answered = runtime.get(f"{path}?tenant=a&tenant=b&after=%2B1&key=")
    assert answered.status_code == 200, answered.text
    assert answered.json()["tenant"] == "b" and answered.json()["key"] == ""


def test_resolve_body_is_compact_json_of_every_field(api: Api) -> None:
    # The body is written by hand (the version's part cached): it must read exactly as the
    # JSON encoder would write the same answer, for every kind of answer.
    _deployed(api, versions=3)
    api.admin.post(f"{ENV}/production/rollout", json={"candidate": 2, "share": 0.5})
    api.admin.post(
        '/v1/tenants/ac"me/pins',
        json={"prompt": "bot", "environment": "production", "version": 3},
    )
    runtime = api.as_role("runtime")
    seen = set()
    for tenant in ('ac"me', "tenant-é\u2028", None, *(f"t{i}" for i in range(20))):
        params = {} if tenant is None else {"tenant": tenant}
        response = runtime.get("/v1/prompts/bot/resolve", params=params)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert list(answer) == list(resolve_route.Resolved.model_fields)
        compact = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
        assert response.content == compact.encode()
        resolve_route.Resolved.model_validate(answer)
        seen.add((answer["reason"], (answer["rollout"] or {}).get("arm")))
        if tenant == 'ac"me':
            assert answer["reason"] == "pinned" and answer["pin_expires_at"]
    assert {("pinned", None), ("rollout", "candidate"), ("rollout", "baseline")} <= seen
