"""Executions, feedback and metrics over real HTTP, on both backends."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from promptrecord.api import cli_audit
from promptrecord.api.routes import executions as executions_route
from promptrecord.settings import Settings

if TYPE_CHECKING:
    from tests.api.conftest import Api

NOW = datetime.now(UTC)
HOUR = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def at(minutes: float) -> str:
    return (HOUR + timedelta(minutes=minutes)).isoformat()


def item(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "prompt": "bot",
        "version": 1,
        "latency_ms": 120.0,
        "status": "ok",
        "started_at": at(5),
        "tokens_in": 100,
        "tokens_out": 20,
        "cost_usd": 0.01,
    }
    return {**base, **fields}


def window() -> dict[str, str]:
    return {"from": HOUR.isoformat(), "to": (HOUR + timedelta(hours=3)).isoformat()}


@pytest.fixture
def bot(api: Api) -> Api:
    created = api.admin.post("/v1/prompts", json={"name": "bot", "content": api.content("one")})
    assert created.status_code == 201, created.text
    versioned = api.admin.post("/v1/prompts/bot/versions", json={"content": api.content("two")})
    assert versioned.status_code in (200, 201), versioned.text
    other = api.admin.post("/v1/prompts", json={"name": "other", "content": api.content()})
    assert other.status_code == 201, other.text
    return api


def test_good_items_are_kept_and_bad_ones_reported_by_index(bot: Api) -> None:
    runtime = bot.as_role("runtime")
    items = [
        item(),
        item(latency_ms=-1),
        item(prompt="nope"),
        item(version=9),
        item(status="fine"),
        item(started_at="yesterday"),
        item(colour="red"),
        "not an object",
        item(environment="moon"),
        item(id="not-a-uuid"),
        item(score=1.5),
        item(started_at=(NOW - timedelta(days=90)).isoformat()),
        item(id=None, started_at=None, version=2, resolve_reason="rollout", tenant="acme"),
    ]
    response = runtime.post("/v1/executions", json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 11)
    assert body["ids"][0] == items[0]["id"]
    assert body["ids"][1] is None and body["ids"][12] is not None
    uuid.UUID(body["ids"][12])  # made by the server
    errors = {e["index"]: (e["field"], e["code"]) for e in body["errors"]}
    assert errors == {
        1: ("items[1].latency_ms", "invalid_latency_ms"),
        2: ("items[2].prompt", "prompt_not_found"),
        3: ("items[3].version", "version_not_found"),
        4: ("items[4].status", "invalid_status"),
        5: ("items[5].started_at", "invalid_started_at"),
        6: ("items[6].colour", "unknown_field"),
        7: ("items[7]", "invalid_item"),
        8: ("items[8].environment", "environment_not_found"),
        9: ("items[9].id", "invalid_id"),
        10: ("items[10].score", "invalid_score"),
        11: ("items[11].started_at", "started_at_out_of_range"),
    }
    assert all(e["detail"] for e in body["errors"])
    metrics = runtime.get("/v1/prompts/bot/metrics", params=window()).json()
    assert [(g["version"], g["count"]) for g in metrics["groups"]] == [(1, 1), (2, 1)]


def test_a_retried_batch_counts_once(bot: Api) -> None:
    runtime = bot.as_role("runtime")
    batch = {"items": [item(), item(status="error"), item(latency_ms=300.0)]}
    for _ in range(3):
        response = runtime.post("/v1/executions", json=batch)
        assert response.json()["accepted"] == 3
    groups = runtime.get("/v1/prompts/bot/metrics", params=window()).json()["groups"]
    assert len(groups) == 1
    assert groups[0]["count"] == 3
    assert groups[0]["statuses"]["error"] == 1
    assert groups[0]["error_rate"] == pytest.approx(1 / 3)
    assert groups[0]["cost_usd"] == pytest.approx(0.03)


def test_all_bad_is_a_problem_and_limits_are_enforced(
    bot: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = bot.as_role("runtime")
    response = runtime.post("/v1/executions", json={"items": [item(version=0), item(prompt=3)]})
    body = bot.assert_problem(response, 422, "invalid_executions", "items[0].version")
    assert [e["code"] for e in body["errors"]] == ["invalid_version", "invalid_prompt"]
    many = runtime.post("/v1/executions", json={"items": [item() for _ in range(1001)]})
    bot.assert_problem(many, 422, "too_many_items", "items")
    bot.assert_problem(runtime.post("/v1/executions", json={"items": []}), 422, "no_items")
    garbled = runtime.post(
        "/v1/executions", content=b"{not json", headers={"content-type": "application/json"}
    )
    bot.assert_problem(garbled, 422, "malformed_json", "body")
    monkeypatch.setattr(executions_route, "MAX_BODY_BYTES", 1000)
    large = runtime.post("/v1/executions", json={"items": [item(output="x" * 2000)]})
    bot.assert_problem(large, 413, "content_too_large")


def test_values_the_store_cannot_hold_are_refused_by_index(bot: Api) -> None:
    runtime = bot.as_role("runtime")
    items = [
        item(),
        item(output="before\x00after"),
        item(input={"question": "lone \ud800 surrogate"}),
        item(tokens_in=10**30),
        item(latency_ms=10**400),
        item(status=["ok"]),
        item(resolve_reason={"why": "rollout"}),
        item(version=True),
        item(version=1.0),
        item(environment=None),
        item(output="an emoji \U0001f600 is fine"),
    ]
    # Escaped as Python's json and most SDKs send it: \u0000 and \ud800 reach the server.
    escaped = json.dumps({"items": items}).encode()
    response = runtime.post(
        "/v1/executions", content=escaped, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert body["ids"][10] == items[10]["id"]
    assert [(e["index"], e["field"], e["code"]) for e in body["errors"]] == [
        (1, "items[1].output", "invalid_output"),
        (2, "items[2].input", "invalid_input"),
        (3, "items[3].tokens_in", "invalid_tokens_in"),
        (4, "items[4].latency_ms", "invalid_latency_ms"),
        (5, "items[5].status", "invalid_status"),
        (6, "items[6].resolve_reason", "invalid_resolve_reason"),
        (7, "items[7].version", "invalid_version"),
        (8, "items[8].version", "invalid_version"),
        (9, "items[9].environment", "invalid_environment"),
    ]
    not_json = b'{"items": [{"prompt": "bot", "version": 1, "latency_ms": NaN, "status": "ok"}]}'
    refused = runtime.post(
        "/v1/executions", content=not_json, headers={"content-type": "application/json"}
    )
    bot.assert_problem(refused, 422, "malformed_json", "body")


def test_numbers_json_allows_but_a_double_or_jsonb_cannot_hold(bot: Api) -> None:
    """A number past a double inside `input` is refused by index (jsonb has no infinity); an
    integer past 64 bits there is kept, and its neighbour stored as usual."""
    runtime = bot.as_role("runtime")
    good, huge, big = item(), item(input={"n": "HUGE"}), item(input={"n": "BIG"})
    body = json.dumps({"items": [good, huge, big]}).encode()
    body = body.replace(b'"HUGE"', b"1e400").replace(b'"BIG"', b"123456789012345678901234567890")
    response = runtime.post(
        "/v1/executions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["ids"] == [good["id"], None, big["id"]]
    assert [(e["index"], e["field"], e["code"]) for e in answer["errors"]] == [
        (1, "items[1].input", "invalid_input")
    ]


def test_roles_and_key_limits(bot: Api) -> None:
    viewer = bot.as_role("viewer")
    bot.assert_problem(
        viewer.post("/v1/executions", json={"items": [item()]}), 403, "role_required"
    )
    limited = bot.as_role("runtime", prompt_patterns=["bot"], environments=["staging"])
    response = limited.post(
        "/v1/executions",
        json={
            "items": [
                item(environment="staging"),
                item(prompt="other", environment="staging"),
                item(),
            ]
        },
    )
    body = response.json()
    assert body["accepted"] == 1
    assert [(e["index"], e["code"]) for e in body["errors"]] == [
        (1, "prompt_not_allowed"),
        (2, "environment_not_allowed"),
    ]


def test_costs_are_priced_from_the_table_when_missing(bot: Api) -> None:
    runtime = bot.as_role("runtime")
    items = [
        item(cost_usd=None, model="claude-sonnet-4-5-20250929", tokens_in=1000, tokens_out=100),
        item(cost_usd=None, model="my-own-model"),
        item(cost_usd=None),
    ]
    runtime.post("/v1/executions", json={"items": items})
    group = runtime.get("/v1/prompts/bot/metrics", params=window()).json()["groups"][0]
    assert group["cost_usd"] == pytest.approx((1000 * 3.0 + 100 * 15.0) / 1e6)
    assert group["unpriced"] == 2


def test_feedback(bot: Api) -> None:
    runtime = bot.as_role("runtime")
    first, second = item(), item()
    runtime.post("/v1/executions", json={"items": [first, second]})
    for execution, rating in ((first, "up"), (first, "up"), (second, "down")):
        response = runtime.post(
            f"/v1/executions/{execution['id']}/feedback", json={"rating": rating, "comment": "ok"}
        )
        assert response.status_code == 201, response.text
        assert response.json()["version"] == 1
    unknown = runtime.post(f"/v1/executions/{uuid.uuid4()}/feedback", json={"rating": "up"})
    bot.assert_problem(unknown, 404, "execution_not_found", "path.execution_id")
    bot.assert_problem(
        runtime.post("/v1/executions/garbage/feedback", json={"rating": "up"}),
        404,
        "execution_not_found",
    )
    bad = runtime.post(f"/v1/executions/{first['id']}/feedback", json={"rating": "meh"})
    bot.assert_problem(bad, 422, "validation_failed", "body.rating")
    group = runtime.get("/v1/prompts/bot/metrics", params=window()).json()["groups"][0]
    assert (group["feedback_up"], group["feedback_down"]) == (2, 1)
    assert group["feedback_rate"] == pytest.approx(2 / 3)


def test_metrics_by_hour_and_window(bot: Api) -> None:
    runtime = bot.as_role("runtime")
    runtime.post(
        "/v1/executions",
        json={"items": [item(started_at=at(5)), item(started_at=at(65)), item(started_at=at(70))]},
    )
    by_hour = runtime.get(
        "/v1/prompts/bot/metrics", params={**window(), "group_by": "version,hour"}
    ).json()
    assert [(g["version"], g["count"]) for g in by_hour["groups"]] == [(1, 1), (1, 2)]
    assert by_hour["groups"][1]["hour"].startswith(
        (HOUR + timedelta(hours=1)).strftime("%Y-%m-%dT%H")
    )
    assert "whole hours" in by_hour["note"]
    # A window inside the first hour is widened to that whole hour.
    inside = {"from": at(10), "to": at(20)}
    narrow = runtime.get("/v1/prompts/bot/metrics", params=inside).json()
    assert narrow["groups"][0]["count"] == 1
    assert narrow["from"].startswith(HOUR.strftime("%Y-%m-%dT%H:00:00"))
    bot.assert_problem(
        runtime.get("/v1/prompts/bot/metrics", params={"group_by": "tenant"}),
        422,
        "invalid_group_by",
        "query.group_by",
    )
    bot.assert_problem(runtime.get("/v1/prompts/nope/metrics"), 404, "prompt_not_found")
    reversed_window = {"from": at(60), "to": at(0)}
    bot.assert_problem(
        runtime.get("/v1/prompts/bot/metrics", params=reversed_window), 422, "empty_window"
    )


def test_compare_two_versions(bot: Api) -> None:
    runtime = bot.as_role("runtime")
    items = [
        item(version=1, status="error" if n < 10 else "ok", latency_ms=100.0 + n % 50)
        for n in range(500)
    ] + [
        item(version=2, status="error" if n < 60 else "ok", latency_ms=200.0 + n % 50)
        for n in range(500)
    ]
    assert runtime.post("/v1/executions", json={"items": items}).json()["accepted"] == 1000
    response = runtime.get("/v1/prompts/bot/metrics/compare", params={**window(), "a": 1, "b": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["a"]["count"], body["b"]["count"]) == (500, 500)
    errors = body["differences"]["error_rate"]
    assert errors["difference"] == pytest.approx(0.1)
    assert errors["p_value"] < 1e-6 and errors["test"] == "two-proportion z-test"
    latency = body["differences"]["latency_p95_ms"]
    assert latency["difference"] == pytest.approx(100, rel=0.03)
    assert latency["ci_low"] > 0 and "bootstrap" in latency["test"]
    assert body["differences"]["mean_score"]["p_value"] is None  # no scores sent
    missing = runtime.get("/v1/prompts/bot/metrics/compare", params={"a": 1, "b": 7})
    bot.assert_problem(missing, 404, "version_not_found", "query.b")


def test_the_audit_shows_what_was_observed(
    bot: Api,
    backend: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime = bot.as_role("runtime")
    items = [
        item(tenant="acme-corp", version=1),
        item(tenant="acme-corp", version=2),
        item(tenant="acme-corp", version=2),
        item(tenant="globex", version=1),
        item(tenant="acme-corp", version=1, environment="staging"),
    ]
    runtime.post("/v1/executions", json={"items": items})
    intervals = bot.admin.get("/v1/audit/tenants/acme-corp/prompts/bot/intervals", params=window())
    assert intervals.status_code == 200, intervals.text
    assert intervals.json()["observed"] == [
        {"version": 1, "executions": 1},
        {"version": 2, "executions": 2},
    ]
    elsewhere = bot.admin.get("/v1/audit/tenants/initech/prompts/bot/intervals", params=window())
    assert elsewhere.json()["observed"] == []
    monkeypatch.setenv("PROMPTRECORD_DATABASE_URL", backend.database_url)
    if backend.database_schema:
        monkeypatch.setenv("PROMPTRECORD_DATABASE_SCHEMA", backend.database_schema)
    argv = ["audit", "--tenant", "acme-corp", "--prompt", "bot", "--workspace", "acme"]
    span = ["--from", window()["from"], "--to", window()["to"]]
    assert cli_audit.main([*argv, *span]) == 0
    assert "observed: v1 ran 1 executions, v2 ran 2 executions" in capsys.readouterr().out
