"""The webhook endpoints view folded from a scripted history, on SQLite and PostgreSQL: every
column, no secret anywhere in the views, audit rows for each command, and a rebuild equal to
what folding gave."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from support.histories import START, Clock

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.projections.views import VIEW_NAMES, ViewStore

World = tuple[PromptRecord, Clock, ViewStore]
ADMIN = Actor("key-admin", "admin", on_behalf_of="ops")
WS = "acme"


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def script(app: PromptRecord, clock: Clock) -> tuple[str, str, str]:
    app.create_workspace(WS)
    app.create_workspace("other")
    kept = app.register_webhook(
        WS, "https://a.example.com/h", ["Deployment.*"], "deploys", "SEALED-A", ADMIN
    ).value
    clock.now = at(1)
    gone = app.register_webhook(WS, "https://b.example.com/h", ["*"], None, "SEALED-B", ADMIN).value
    other = app.register_webhook(
        "other", "https://c.example.com/h", ["*"], None, "SEALED-C", ADMIN
    ).value
    clock.now = at(2)
    app.update_webhook(WS, kept, ADMIN, event_types=["Deployment.Promoted"], description="")
    clock.now = at(3)
    app.rotate_webhook_secret(WS, kept, "SEALED-A2", timedelta(hours=1), ADMIN)
    clock.now = at(4)
    app.disable_webhook(WS, kept, "receiver answered 410 Gone", ADMIN)
    clock.now = at(5)
    app.enable_webhook(WS, kept, ADMIN)
    app.disable_webhook(WS, kept, "maintenance", ADMIN)
    clock.now = at(6)
    app.remove_webhook(WS, gone, ADMIN)
    return kept, gone, other


def test_the_view_lists_endpoints_without_secrets(world: World) -> None:
    app, clock, store = world
    kept, gone, other = script(app, clock)
    store.apply(0, list(app.read_events(0, 1000)))
    [entry] = store.webhook_endpoints(WS)
    assert entry.endpoint_id == kept
    assert entry.url == "https://a.example.com/h"
    assert entry.event_types == ["Deployment.Promoted"]
    assert entry.description is None
    assert (entry.enabled, entry.removed, entry.disabled_reason) == (False, False, "maintenance")
    assert entry.created_by == ADMIN.as_dict()
    assert (entry.created_at, entry.updated_at, entry.secret_rotated_at) == (at(0), at(5), at(3))
    assert entry.revision == app.webhook_endpoint(WS, kept).version == 6
    assert [e.endpoint_id for e in store.webhook_endpoints("other")] == [other]
    assert store.webhook_endpoints(WS, after=kept) == []
    dumped = {name: store.dump(name) for name in (*VIEW_NAMES, "subjects")}
    assert "SEALED" not in json.dumps(dumped, default=str)  # no secret reaches any view
    removed = [r for r in dumped["webhook_endpoints"] if r["endpoint_id"] == gone]
    assert removed[0]["removed"] is True
    audit = [r["type"] for r in dumped["audit_log"] if r["type"].startswith("WebhookEndpoint.")]
    assert audit.count("WebhookEndpoint.Registered") == 3
    assert "WebhookEndpoint.Removed" in audit and "WebhookEndpoint.SecretRotated" in audit
    assert {"webhook"} <= {row["kind"] for row in dumped["subjects"]}
    reasons = {r.reason for r in store.audit_log(WS, types=["WebhookEndpoint.Disabled"])}
    assert reasons == {"receiver answered 410 Gone", "maintenance"}


@pytest.mark.parametrize("batch", [1, 5])
def test_rebuild_equals_the_view_applied_in_batches(world: World, batch: int) -> None:
    app, clock, store = world
    script(app, clock)
    events = list(app.read_events(0, 1000))
    position = 0
    for start in range(0, len(events), batch):
        position = store.apply(position, events[start : start + batch])
    dumped = {name: store.dump(name) for name in (*VIEW_NAMES, "subjects")}
    assert dumped["webhook_endpoints"]
    store.rebuild(app.read_events)
    assert {name: store.dump(name) for name in dumped} == dumped
    store.rebuild(app.read_events, ["webhook_endpoints"])
    assert {name: store.dump(name) for name in dumped} == dumped
