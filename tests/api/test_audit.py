"""The audit over real HTTP (both backends) and `promptrecord audit` on the command line.

The server's application runs on a clock the test drives, so events carry known times; the
audited workspace is created on that clock, apart from the fixture's own `acme`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from promptrecord.api import cli_audit
from promptrecord.api.routes.audit import CSV_COLUMNS
from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.settings import Settings

if TYPE_CHECKING:
    from tests.api.conftest import Api

START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
BASE = "/v1/audit/tenants/acme-corp/prompts/bot"
ALICE = Actor("key-alice", "alice")
BOB = Actor("key-bob", "bob")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


def at(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


@dataclass
class Audited:
    """Workspace `compliance` on the test's clock: its admin client, a viewer, the clock."""

    admin: httpx.Client
    viewer: httpx.Client
    clock: Clock


@pytest.fixture
def audited(api: Api) -> Iterator[Audited]:
    """bot v1, v2 at +0; v1 promoted at +1; acme-corp pinned to v2 at +2 for 10 minutes."""
    clock = Clock()
    saved = api.services.app.clock
    api.services.app.clock = clock
    try:
        _, token = api.services.app.create_workspace("compliance")
        admin = api.client(token)
        created = admin.post("/v1/prompts", json={"name": "bot", "content": api.content("one")})
        assert created.status_code == 201, created.text
        admin.post("/v1/prompts/bot/versions", json={"content": api.content("two")})
        key = admin.post("/v1/keys", json={"name": "auditor", "role": "viewer"})
        viewer = api.client(key.json()["token"])
        clock.advance(1)
        promoted = admin.post(
            "/v1/prompts/bot/environments/production/promote",
            json={"version": 1, "reason": "first release"},
        )
        assert promoted.status_code == 200, promoted.text
        clock.advance(1)
        pinned = admin.post(
            "/v1/tenants/acme-corp/pins",
            json={
                "prompt": "bot",
                "environment": "production",
                "version": 2,
                "ttl_seconds": 600,
                "reason": "acme-corp validated v2 only",
            },
        )
        assert pinned.status_code == 201, pinned.text
        clock.advance(60)
        yield Audited(admin, viewer, clock)
    finally:
        api.services.app.clock = saved


def test_the_answer_names_version_reason_and_causing_events(audited: Audited) -> None:
    response = audited.viewer.get(BASE, params={"environment": "production", "at": at(5)})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["version"] == 2 and answer["reason"] == "pinned"
    assert answer["at"] == at(5) and answer["method"] == "views"
    assert answer["pin_expires_at"] == at(12) and answer["content_hash"].startswith("sha256:")
    [event] = answer["events"]
    assert event["type"] == "TenantPin.Pinned" and event["id"] == answer["cause_event_id"]
    assert event["actor"]["key_name"] == "bootstrap admin" and event["timestamp"] == at(2)
    assert event["reason"] == "acme-corp validated v2 only" and event["position"] > 0
    # The same instant with an offset; and after the pin lapsed, the promoted version.
    same = audited.viewer.get(BASE, params={"at": "2026-03-14T10:05:00+01:00"}).json()
    assert same["version"] == 2 and same["at"] == at(5)
    after = audited.viewer.get(BASE, params={"at": at(12)}).json()
    assert (after["version"], after["reason"], after["pin_expires_at"]) == (1, "promoted", None)
    assert [e["type"] for e in after["events"]] == ["Deployment.Promoted"]
    assert after["events"][0]["reason"] == "first release"


def test_a_per_user_rollout_is_answered_with_its_split(audited: Audited) -> None:
    started = audited.admin.post(
        "/v1/prompts/bot/environments/production/rollout",
        json={"candidate": 2, "share": 0.25, "key_by": "user", "reason": "canary"},
    )
    assert started.status_code == 200, started.text
    split = audited.viewer.get(BASE, params={"tenant": "x", "at": at(70)}).json()
    assert split["version"] is None and split["reason"] == "rollout"
    assert split["rollout"]["bucket"] is None and split["rollout"]["arm"] is None
    assert (split["rollout"]["baseline"], split["rollout"]["candidate"]) == (1, 2)
    one = audited.viewer.get(BASE, params={"at": at(70), "key": "user-42"}).json()
    assert one["version"] in (1, 2) and one["rollout"]["bucket"] is not None


def test_intervals_as_json_and_csv(audited: Audited) -> None:
    window = {"from": at(0), "to": at(30), "environment": "production"}
    response = audited.viewer.get(f"{BASE}/intervals", params=window)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"], body["method"]) == (at(0), at(30), "views")
    shape = [
        (i["valid_from"], i["valid_to"], i["version"], i["reason"], i["refusal"])
        for i in body["intervals"]
    ]
    assert shape == [
        (at(0), at(1), None, "refused", "not_deployed"),
        (at(1), at(2), 1, "promoted", None),
        (at(2), at(12), 2, "pinned", None),
        (at(12), None, 1, "promoted", None),
    ]
    exported = audited.viewer.get(f"{BASE}/intervals", params={**window, "format": "csv"})
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 4
    assert rows[2]["version"] == "2" and rows[2]["reason"] == "pinned"
    assert rows[2]["pin_expires_at"] == at(12) and rows[3]["valid_to"] == ""
    assert rows[0]["refusal"] == "not_deployed" and rows[2]["tenant"] == "acme-corp"
    assert [row["cause_event_id"] or None for row in rows] == [
        i["cause_event_id"] for i in body["intervals"]
    ]


def test_refusals_then_are_problems_not_errors(api: Api, audited: Audited) -> None:
    api.assert_problem(
        audited.viewer.get(BASE, params={"at": at(0.5)}), 404, "not_deployed", "environment"
    )
    api.assert_problem(
        audited.viewer.get(BASE, params={"at": "2026-03-13T09:00:00Z"}), 404, "prompt_not_found"
    )
    archived = audited.admin.post("/v1/prompts/bot/archive", json={"reason": "retired"})
    assert archived.status_code == 200, archived.text
    body = api.assert_problem(
        audited.viewer.get(BASE, params={"at": at(90)}), 409, "prompt_archived"
    )
    assert body["events"][0]["type"] == "Prompt.Archived"
    api.assert_problem(
        audited.viewer.get(BASE, params={"at": at(5), "environment": "qa"}),
        404,
        "environment_not_found",
    )


def test_another_workspace_sees_nothing(api: Api, audited: Audited) -> None:
    # `api.admin` belongs to workspace acme, which has no prompt bot.
    api.assert_problem(api.admin.get(BASE, params={"at": at(5)}), 404, "prompt_not_found")
    window = {"from": at(0), "to": at(30)}
    api.assert_problem(api.admin.get(f"{BASE}/intervals", params=window), 404, "prompt_not_found")


def test_times_windows_and_options_are_checked(api: Api, audited: Audited) -> None:
    viewer = audited.viewer
    for bad in ("yesterday", "2026-03-14T09:00", "2026-03-14", "2026-13-01T00:00Z"):
        body = api.assert_problem(viewer.get(BASE, params={"at": bad}), 422, "invalid_time")
        assert body["field"] == "query.at" and bad in body["detail"]
    api.assert_problem(viewer.get(BASE), 422, "validation_failed", "query.at")
    intervals = f"{BASE}/intervals"
    reversed_window = {"from": at(30), "to": at(30)}
    body = api.assert_problem(
        viewer.get(intervals, params=reversed_window), 422, "invalid_window", "query.to"
    )
    assert "must be after" in body["detail"]
    too_long = {"from": "2025-01-01T00:00Z", "to": "2026-03-14T00:00Z"}
    api.assert_problem(viewer.get(intervals, params=too_long), 422, "window_too_long", "query.to")
    api.assert_problem(
        viewer.get(intervals, params={"from": "soon", "to": at(1)}),
        422,
        "invalid_time",
        "query.from",
    )
    body = api.assert_problem(
        viewer.get(BASE, params={"at": at(5), "method": "guess"}),
        422,
        "unknown_method",
        "query.method",
    )
    assert body["allowed"] == ["views", "replay"]
    api.assert_problem(
        viewer.get(intervals, params={"from": at(0), "to": at(1), "format": "xml"}),
        422,
        "validation_failed",
        "query.format",
    )


def test_key_limits_apply(api: Api, audited: Audited) -> None:
    def limited(**limits: Any) -> httpx.Client:
        key = audited.admin.post("/v1/keys", json={"name": "narrow", "role": "viewer", **limits})
        assert key.status_code == 201, key.text
        return api.client(key.json()["token"])

    elsewhere = limited(prompt_patterns=["other-*"])
    api.assert_problem(elsewhere.get(BASE, params={"at": at(5)}), 403, "prompt_not_allowed")
    staging_only = limited(environments=["staging"])
    api.assert_problem(
        staging_only.get(BASE, params={"at": at(5)}),
        403,
        "environment_not_allowed",
        "query.environment",
    )
    api.assert_problem(httpx.get(api.base_url + BASE), 401, "unauthenticated")


def test_the_openapi_document_describes_the_audit(api: Api) -> None:
    paths = api.admin.get("/openapi.json").json()["paths"]
    answer = paths["/v1/audit/tenants/{tenant}/prompts/{name}"]["get"]
    assert answer["tags"] == ["audit"]
    at_param = next(p for p in answer["parameters"] if p["name"] == "at")
    assert at_param["required"] and at_param["schema"]["examples"]
    interval_list = paths["/v1/audit/tenants/{tenant}/prompts/{name}/intervals"]["get"]
    assert "text/csv" in interval_list["responses"]["200"]["content"]


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def store(backend: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The backend's database seen by the CLI through PROMPTRECORD_* variables, holding workspace
    default: support-bot v1 promoted at +1, acme pinned to v2 at +2 for 10 minutes."""
    monkeypatch.setenv("PROMPTRECORD_DATABASE_URL", backend.database_url)
    if backend.database_schema:
        monkeypatch.setenv("PROMPTRECORD_DATABASE_SCHEMA", backend.database_schema)
    clock = Clock()
    app = PromptRecord(env=backend.eventsourcing_env(), clock=clock)
    try:
        app.create_workspace("default")
        content = {"type": "text", "text": "one", "model": {"provider": "openai", "name": "o3"}}
        app.create_prompt("default", ALICE, name="support-bot", content=content)
        app.commit_version("default", "support-bot", {**content, "text": "two"}, ALICE)
        clock.advance(1)
        app.promote("default", "support-bot", "production", 1, BOB, reason="release")
        clock.advance(1)
        app.pin("default", "acme", "support-bot", "production", 2, ALICE, "validated", None, 600)
    finally:
        app.close()
    yield backend


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_audit.main(["audit", "--tenant", "acme", "--prompt", "support-bot", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_answer_and_its_events(
    store: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--environment", "production", "--at", "2026-03-14T09:05Z")
    assert code == 0
    assert out.startswith(
        "tenant acme got support-bot v2 in production at 2026-03-14 09:05:00 UTC — pinned by "
        "alice (key key-alice) on 2026-03-14 09:02:00 UTC 'validated', expires "
        "2026-03-14 09:12:00 UTC"
    )
    assert "TenantPin.Pinned" in out
    code, out, _ = run(capsys, "--at", "2026-03-14T09:12Z")
    assert code == 0 and "support-bot v1" in out and "promoted by bob" in out
    code, out, _ = run(capsys, "--at", "2026-03-14T09:05Z", "--json")
    assert code == 0 and json.loads(out)["version"] == 2


def test_cli_prints_intervals_as_a_table(
    store: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--from", "2026-03-14T09:00Z", "--to", "2026-03-14T10:00Z")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[1].split() == ["FROM", "TO", "VERSION", "REASON", "DETAIL", "CAUSE"]
    assert "not_deployed" in lines[2] and "v1" in lines[3] and "promoted" in lines[3]
    assert "v2" in lines[4] and "pinned" in lines[4] and "pin until 2026-03-14 09:12:00" in lines[4]
    assert "(still at end)" in lines[5]
    code, out, _ = run(capsys, "--from", "2026-03-14T09:00Z", "--to", "2026-03-14T10:00Z", "--json")
    assert code == 0 and [i["version"] for i in json.loads(out)] == [None, 1, 2, 1]


def test_cli_exit_codes(store: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    code, _, err = run(capsys, "--at", "2026-03-14T09:00:30Z")
    assert code == 1 and "refused: nothing was deployed" in err
    code, _, err = run(capsys, "--at", "2026-03-14T09:05Z", "--workspace", "nobody")
    assert code == 2 and "workspace 'nobody' does not exist" in err  # a wrong question
    code, _, err = run(capsys, "--at", "2026-03-14T09:05Z", "--json", "--workspace", "nobody")
    assert code == 2 and json.loads(err)["code"] == "workspace_not_found"
    code, _, err = run(capsys, "--at", "09:05")
    assert code == 2 and "--at" in err
    code, _, err = run(capsys, "--from", "2026-03-14T10:00Z", "--to", "2026-03-14T09:00Z")
    assert code == 2 and "must be after" in err
    code, _, err = run(capsys)
    assert code == 2 and "--at" in err
    missing = f"sqlite:///{tmp_path}/nowhere.db"
    code, _, err = run(capsys, "--at", "2026-03-14T09:05Z", "--database-url", missing)
    assert code == 2 and "no database at" in err
