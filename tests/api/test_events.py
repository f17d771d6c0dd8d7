"""The event feed over real HTTP: workspace isolation, paging by position, type filters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from promptrecord.api.routes import events as feed
from promptrecord.domain.base import Actor, event_id
from promptrecord.domain.prompt import Prompt
from promptrecord.domain.workspace import Workspace

if TYPE_CHECKING:
    from tests.api.conftest import Api

OUTSIDER = Actor("key-globex", "globex ci")


def read_all(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every item of the feed, page by page, checking each page continues the last."""
    items: list[dict[str, Any]] = []
    after = 0
    for _ in range(1000):
        response = client.get("/v1/events", params={**params, "after": after})
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["next_after"] >= after
        items += page["items"]
        after = page["next_after"]
        if not page["has_more"]:
            return items
    raise AssertionError("the feed never reached the end of the log")


def two_workspaces(api: Api) -> None:
    """acme gets `support-bot` with two versions, promoted; globex gets a prompt of its own."""
    app = api.services.app
    acme = Actor("key-acme", "acme ci")
    app.create_prompt("acme", acme, name="support-bot", content=api.content("one {{ x }}"))
    app.create_workspace("globex")
    app.create_prompt("globex", OUTSIDER, name="secret-plans", content=api.content("globex"))
    app.commit_version("acme", "support-bot", api.content("two {{ x }}"), acme, message="v2")
    app.promote("acme", "support-bot", "development", 2, acme)
    app.commit_version("globex", "secret-plans", api.content("more"), OUTSIDER, message="v2")
    api.services.live.catch_up()


def test_the_feed_shows_the_callers_workspace_only(api: Api) -> None:
    two_workspaces(api)
    items = read_all(api.as_role("viewer", "auditor"), limit=1000)
    acme_ids = {str(Workspace.create_id("acme")), str(Prompt.create_id("acme", "support-bot"))}
    types = [item["type"] for item in items]
    assert {item["aggregate_id"] for item in items} - acme_ids == {
        item["aggregate_id"] for item in items if item["type"].startswith("Deployment.")
    }
    assert "globex" not in str(items) and "secret-plans" not in str(items)
    assert types[:2] == ["Workspace.Created", "Workspace.ApiKeyIssued"]
    assert types.count("Prompt.VersionCommitted") == 2
    assert "Deployment.Promoted" in types
    positions = [item["position"] for item in items]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_an_item_is_the_stored_event(api: Api) -> None:
    two_workspaces(api)
    items = read_all(api.admin)
    created, issued = items[0], items[1]
    stored = dict(api.services.app.read_events(0, 1))
    assert created["position"] == 1
    assert created["id"] == event_id(stored[1])
    assert created["aggregate_id"] == str(Workspace.create_id("acme"))
    assert created["aggregate_version"] == 1
    assert created["prev_hash"] == ""
    assert created["actor"]["key_id"] == "system"
    assert created["data"]["slug"] == "acme"
    assert created["timestamp"].startswith(stored[1].timestamp.isoformat()[:19])
    assert not {"originator_id", "originator_version", "timestamp", "prev_hash", "actor"} & set(
        created["data"]
    )
    assert len(issued["prev_hash"]) == 64
    assert "secret_hash" not in issued["data"]
    assert issued["data"]["role"] == "admin"
    committed = next(item for item in items if item["type"] == "Prompt.VersionCommitted")
    assert committed["data"]["number"] == 1
    assert committed["data"]["content"]["model"]["provider"] == "anthropic"


def test_paging_with_after_and_next_after(api: Api) -> None:
    two_workspaces(api)
    everything = read_all(api.admin, limit=1000)
    paged = read_all(api.admin, limit=2)
    assert paged == everything
    first = api.admin.get("/v1/events", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["has_more"] is True
    assert first["next_after"] == first["items"][-1]["position"]
    rest = api.admin.get("/v1/events", params={"after": first["next_after"]}).json()
    assert rest["items"] == everything[2:]
    assert rest["has_more"] is False
    assert rest["next_after"] == api.services.app.recorder.max_notification_id()


def test_reading_past_the_end_waits_at_the_same_place(api: Api) -> None:
    end = api.services.app.recorder.max_notification_id()
    page = api.admin.get("/v1/events", params={"after": end + 5}).json()
    assert page == {"items": [], "next_after": end + 5, "has_more": False}


def test_one_request_reads_a_bounded_stretch_of_the_log(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_workspaces(api)
    app = api.services.app
    for number in range(12):  # a busy neighbour: a stretch of the log with nothing for acme
        app.commit_version("globex", "secret-plans", api.content(f"n{number}"), OUTSIDER)
    app.archive("acme", "support-bot", "done", Actor("key-acme", "acme ci"), None)
    monkeypatch.setattr(feed, "SCAN_WINDOW", 5)
    monkeypatch.setattr(feed, "BATCH", 2)
    start = app.recorder.max_notification_id() - 13
    first = api.admin.get("/v1/events", params={"after": start}).json()
    assert first == {"items": [], "next_after": start + 5, "has_more": True}
    items = read_all(api.admin)
    assert items[-1]["type"] == "Prompt.Archived"
    assert items == read_all(api.admin, limit=1000)


def test_types_filter_the_feed(api: Api) -> None:
    two_workspaces(api)
    commits = read_all(api.admin, types="Prompt.VersionCommitted")
    assert [item["data"]["number"] for item in commits] == [1, 2]
    both = read_all(api.admin, types="Prompt.VersionCommitted, Deployment.Promoted")
    assert sorted({item["type"] for item in both}) == [
        "Deployment.Promoted",
        "Prompt.VersionCommitted",
    ]
    assert len(both) == 3


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"after": -1}, "validation_failed", "query.after"),
        ({"after": "soon"}, "validation_failed", "query.after"),
        ({"limit": 0}, "validation_failed", "query.limit"),
        ({"limit": 1001}, "validation_failed", "query.limit"),
        ({"types": "Prompt.Deleted,Prompt.Created,Nope"}, "unknown_event_type", "query.types"),
        ({"types": " , "}, "unknown_event_type", "query.types"),
    ],
)
def test_bad_parameters_are_problems(
    api: Api, params: dict[str, Any], code: str, field: str
) -> None:
    body = api.assert_problem(api.admin.get("/v1/events", params=params), 422, code, field)
    if code == "unknown_event_type":
        assert "Prompt.VersionCommitted" in body["known_types"]
        if "Nope" in params["types"]:
            assert "'Prompt.Deleted', 'Nope'" in body["detail"]


def test_keys_with_limits_and_strangers_cannot_read_the_feed(api: Api) -> None:
    limited = api.as_role("viewer", "support team", prompt_patterns=["support-*"])
    api.assert_problem(limited.get("/v1/events"), 403, "limited_key")
    api.assert_problem(api.client().get("/v1/events"), 401, "unauthenticated")


def test_membership_is_found_in_the_log_when_the_live_state_lacks_it(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_workspaces(api)
    expected = read_all(api.admin)
    # As for aggregates another process created a moment ago: only the log knows them.
    monkeypatch.setattr(api.services.live.state, "_subjects", {})
    monkeypatch.setattr(feed, "_memberships", feed.weakref.WeakKeyDictionary())
    wanted = {"Prompt.VersionCommitted", "Deployment.Promoted"}
    # Filtered by type, no Created event is read: each aggregate's is looked up.
    filtered = read_all(api.admin, types=",".join(sorted(wanted)))
    assert filtered == [item for item in expected if item["type"] in wanted]
    assert read_all(api.admin) == expected
