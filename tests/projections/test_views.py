"""The views folded from a scripted history, row by row, on SQLite and PostgreSQL.

The history: three commits, a promotion, a rollout started, adjusted and completed, another
rollout aborted, a rollback, a pin left to expire, a pin re-pinned and then unpinned, and an
archive. Every view's rows are asserted exactly; a rebuild (of all views, and of each alone)
gives the same rows as applying the log in batches; applying events again changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from support.histories import SMALL_POOL, START, Clock, content

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor, event_id
from promptrecord.projections.folding import Column, Table
from promptrecord.projections.folding_state import PINS, PinsView
from promptrecord.projections.runner import Projector
from promptrecord.projections.views import (
    VIEW_NAMES,
    CatalogEntry,
    CurrentDeployment,
    CurrentPin,
    DeploymentInterval,
    PinInterval,
    PositionMoved,
    RolloutSplit,
    ViewsOutdated,
    ViewStore,
    open_view_store,
)
from promptrecord.settings import Settings

ALICE = Actor("key-alice", "alice (editor)")
BOB = Actor("key-ci", "ci pipeline", on_behalf_of="bob")
WS, BOT, PROD = "acme", "support-bot", "production"


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(backend: Settings, clock: Clock) -> Iterator[PromptRecord]:
    application = PromptRecord(env={**backend.eventsourcing_env(), **SMALL_POOL}, clock=clock)
    try:
        yield application
    finally:
        application.close()


@pytest.fixture
def store(app: PromptRecord) -> ViewStore:
    return open_view_store(app)


def script(app: PromptRecord, clock: Clock) -> None:
    """The history every test here folds; minute marks are what the assertions use."""

    def step(minutes: float) -> None:
        clock.now = at(minutes)

    app.create_workspace(WS)
    app.create_prompt(WS, ALICE, name=BOT, title="Support bot", content=content("Hi {{ name }}"))
    step(1)
    app.commit_version(WS, BOT, content("Hello {{ name }}"), ALICE, message="friendlier")
    step(2)
    app.commit_version(WS, BOT, content("Hey"), ALICE, message="short", git_sha="abc123")
    step(3)
    app.promote(WS, BOT, PROD, 1, BOB, reason="first release")
    step(4)
    app.start_rollout(WS, BOT, PROD, 2, 0.1, BOB, reason="canary")
    step(5)
    app.adjust_rollout(WS, BOT, PROD, 0.5, BOB)
    step(6)
    app.complete_rollout(WS, BOT, PROD, BOB)
    step(7)
    app.start_rollout(WS, BOT, PROD, 3, 0.2, BOB, key_by="user")
    step(8)
    app.abort_rollout(WS, BOT, PROD, BOB, reason="errors up")
    step(9)
    app.rollback(WS, BOT, PROD, "incident 42", BOB)
    step(10)
    app.pin(WS, "t1", BOT, PROD, 3, ALICE, reason="beta", ttl_seconds=600)
    step(12)
    app.pin(WS, "t2", BOT, PROD, 2, ALICE, ttl_seconds=60)
    step(14)
    app.pin(WS, "t1", BOT, PROD, 2, ALICE, ttl_seconds=3600)
    step(15)
    app.unpin(WS, "t1", BOT, PROD, ALICE, reason="done")
    step(16)
    app.archive(WS, BOT, "retired", ALICE, None)


def log(app: PromptRecord) -> list[tuple[int, Any]]:
    return list(app.read_events(0, 10_000))


def apply_in_batches(store: ViewStore, events: list[tuple[int, Any]], size: int) -> None:
    position = store.position()
    for start in range(0, len(events), size):
        position = store.apply(position, events[start : start + size])
    assert position == events[-1][0]


class Ids:
    """Event ids and positions of the log by type and occurrence."""

    def __init__(self, events: list[tuple[int, Any]]) -> None:
        self.events = events

    def find(self, type_name: str, n: int = 0) -> tuple[int, Any]:
        found = [item for item in self.events if type(item[1]).__qualname__ == type_name]
        return found[n]

    def __call__(self, type_name: str, n: int = 0) -> str:
        return event_id(self.find(type_name, n)[1])

    def position(self, type_name: str, n: int = 0) -> int:
        return self.find(type_name, n)[0]


def dump_all(store: ViewStore) -> dict[str, list[dict[str, Any]]]:
    return {name: store.dump(name) for name in (*VIEW_NAMES, "subjects")}


def test_scripted_history_folds_into_exact_rows(
    app: PromptRecord, clock: Clock, store: ViewStore
) -> None:
    script(app, clock)
    events = log(app)
    apply_in_batches(store, events, 4)
    ids = Ids(events)
    assert store.position() == events[-1][0]

    assert store.catalog(WS) == [
        CatalogEntry(WS, BOT, "Support bot", "", True, 3, START, at(16), revision=5),
    ]

    versions = store.versions(WS, BOT)
    aggregate = app.prompt(WS, BOT).versions
    assert [v.number for v in versions] == [1, 2, 3]
    for entry, expected in zip(versions, aggregate, strict=True):
        assert entry.content == expected["content"]
        assert entry.content_hash == expected["content_hash"]
        assert entry.variables == expected["variables"]
        assert entry.warnings == expected["warnings"]
        assert entry.author == expected["author"] == ALICE.as_dict()
        assert (entry.message, entry.parent, entry.restored_from) == (
            expected["message"],
            expected["parent"],
            expected["restored_from"],
        )
        assert (entry.git_sha, entry.git_path) == (expected["git_sha"], expected["git_path"])
        assert entry.committed_at == expected["committed_at"]
        assert entry.event_id == ids("Prompt.VersionCommitted", entry.number - 1)
        assert entry.position == ids.position("Prompt.VersionCommitted", entry.number - 1)
    assert [v.git_sha for v in versions] == [None, None, "abc123"]
    assert store.version(WS, BOT, 2) == versions[1]
    assert store.version(WS, BOT, 4) is None

    assert store.deployments(WS) == [
        CurrentDeployment(
            WS,
            BOT,
            PROD,
            1,
            None,
            ids("Deployment.RolledBack"),
            at(9),
            stack=[1],  # 1, then 2 by the completed rollout, popped by the rollback
            ever_served=[1, 2],
            rollout_started_at=None,
            serving_event_id=ids("Deployment.RolledBack"),
            revision=8,
        ),
    ]

    # t1 was unpinned; t2's pin expired at 12:13 but stays until re-pinned.
    assert store.pins(WS) == [
        CurrentPin(WS, "t2", BOT, PROD, 2, at(13), at(12), ids("TenantPin.Pinned", 1)),
    ]
    assert store.pins(WS, active_at=at(12.5))[0].tenant == "t2"
    assert store.pins(WS, active_at=at(13)) == []

    first = ids.find("Deployment.RolloutStarted", 0)[1]
    second = ids.find("Deployment.RolloutStarted", 1)[1]
    canary = RolloutSplit(first.rollout_id, 1, 2, 0.1, "tenant")
    by_user = RolloutSplit(second.rollout_id, 2, 3, 0.2, "user")

    def interval(start: float, end: float | None, version: int, split: Any, cause: str, n: int = 0):
        return DeploymentInterval(
            WS,
            BOT,
            PROD,
            at(start),
            None if end is None else at(end),
            version,
            split,
            ids(cause, n),
            cause,
            ids.position(cause, n),
        )

    assert store.deployment_intervals(WS, BOT, PROD) == [
        interval(3, 4, 1, None, "Deployment.Promoted"),
        interval(4, 5, 1, canary, "Deployment.RolloutStarted"),
        interval(
            5,
            6,
            1,
            RolloutSplit(canary.rollout_id, 1, 2, 0.5, "tenant"),
            "Deployment.RolloutAdjusted",
        ),
        interval(6, 7, 2, None, "Deployment.RolloutCompleted"),
        interval(7, 8, 2, by_user, "Deployment.RolloutStarted", 1),
        interval(8, 9, 2, None, "Deployment.RolloutAborted"),
        interval(9, None, 1, None, "Deployment.RolledBack"),
    ]

    def pin(
        tenant: str, version: int, start: float, end: float, expires: float, n: int, cut: str | None
    ):
        return PinInterval(
            WS,
            tenant,
            BOT,
            PROD,
            version,
            at(start),
            at(end),
            at(expires),
            ids("TenantPin.Pinned", n),
            cut,
            ids.position("TenantPin.Pinned", n),
        )

    assert store.pin_intervals(WS, None, BOT, PROD) == [
        pin("t1", 3, 10, 14, 20, 0, ids("TenantPin.Pinned", 2)),  # cut short by the re-pin
        pin("t2", 2, 12, 13, 13, 1, None),  # ran to its expiry
        pin("t1", 2, 14, 15, 74, 2, ids("TenantPin.Unpinned")),  # cut short by the unpin
    ]

    audit = store.audit_log(WS, limit=1000)
    assert [entry.position for entry in audit] == [position for position, _ in events]
    assert [(e.type, e.prompt, e.environment, e.tenant, e.version) for e in audit] == [
        ("Workspace.Created", None, None, None, None),
        ("Workspace.ApiKeyIssued", None, None, None, None),
        ("Prompt.Created", BOT, None, None, None),
        ("Prompt.VersionCommitted", BOT, None, None, 1),
        ("Prompt.VersionCommitted", BOT, None, None, 2),
        ("Prompt.VersionCommitted", BOT, None, None, 3),
        ("Deployment.Created", BOT, PROD, None, None),
        ("Deployment.Promoted", BOT, PROD, None, 1),
        ("Deployment.RolloutStarted", BOT, PROD, None, 2),
        ("Deployment.RolloutAdjusted", BOT, PROD, None, None),
        ("Deployment.RolloutCompleted", BOT, PROD, None, 2),
        ("Deployment.RolloutStarted", BOT, PROD, None, 3),
        ("Deployment.RolloutAborted", BOT, PROD, None, None),
        ("Deployment.RolledBack", BOT, PROD, None, 1),
        ("TenantPin.Created", BOT, PROD, "t1", None),
        ("TenantPin.Pinned", BOT, PROD, "t1", 3),
        ("TenantPin.Created", BOT, PROD, "t2", None),
        ("TenantPin.Pinned", BOT, PROD, "t2", 2),
        ("TenantPin.Pinned", BOT, PROD, "t1", 2),
        ("TenantPin.Unpinned", BOT, PROD, "t1", None),
        ("Prompt.Archived", BOT, None, None, None),
    ]
    promoted = next(e for e in audit if e.type == "Deployment.Promoted")
    assert (promoted.actor_key_id, promoted.actor_key_name, promoted.on_behalf_of) == (
        "key-ci",
        "ci pipeline",
        "bob",
    )
    assert (promoted.reason, promoted.timestamp, promoted.event_id) == (
        "first release",
        at(3),
        ids("Deployment.Promoted"),
    )
    assert [e.reason for e in audit if e.reason] == [
        "first release",
        "canary",
        "errors up",
        "incident 42",
        "beta",
        "done",
        "retired",
    ]
    assert audit[0].actor_key_id == "system"
    assert store.audit_event(promoted.event_id) == promoted


def test_reads_by_window_time_and_page(app: PromptRecord, clock: Clock, store: ViewStore) -> None:
    script(app, clock)
    for n in range(3):
        app.create_prompt(WS, ALICE, name=f"other-{n}")
    apply_in_batches(store, log(app), 100)

    assert [c.prompt for c in store.catalog(WS, limit=2)] == ["other-0", "other-1"]
    assert [c.prompt for c in store.catalog(WS, after="other-1")] == ["other-2", BOT]
    assert store.catalog("nobody") == []
    assert [v.number for v in store.versions(WS, BOT, limit=1, after=1)] == [2]

    window = store.deployment_intervals(WS, BOT, PROD, start=at(5), end=at(7))
    assert [(i.valid_from, i.version) for i in window] == [(at(5), 1), (at(6), 2)]
    assert [i.valid_from for i in store.deployment_intervals(WS, BOT, PROD, start=at(30))] == [
        at(9)
    ]
    assert store.deployment_at(WS, BOT, PROD, at(2.9)) is None
    assert store.deployment_at(WS, BOT, PROD, at(3)).version == 1  # type: ignore[union-attr]
    found = store.deployment_at(WS, BOT, PROD, at(4.5))
    assert found is not None and found.rollout is not None and found.rollout.share == 0.1
    assert store.deployment_at(WS, BOT, PROD, at(999)).cause_type == "Deployment.RolledBack"  # type: ignore[union-attr]
    assert store.deployment_at(WS, BOT, "staging", at(5)) is None

    assert store.pin_at(WS, "t1", BOT, PROD, at(13)).version == 3  # type: ignore[union-attr]
    assert store.pin_at(WS, "t1", BOT, PROD, at(14)).version == 2  # type: ignore[union-attr]
    assert store.pin_at(WS, "t1", BOT, PROD, at(15)) is None
    assert store.pin_at(WS, "t2", BOT, PROD, at(13) - timedelta(microseconds=1)) is not None
    assert store.pin_at(WS, "t2", BOT, PROD, at(13)) is None
    assert [p.tenant for p in store.pin_intervals(WS, "t1", BOT, PROD, start=at(14.5))] == ["t1"]
    assert store.pin_intervals(WS, None, BOT, PROD, start=at(20), end=at(30)) == []

    page = store.audit_log(WS, limit=5)
    rest = store.audit_log(WS, after=page[-1].position, limit=1000)
    assert len(page) == 5 and rest[0].position > page[-1].position
    pins = store.audit_log(WS, types=["TenantPin.Pinned", "TenantPin.Unpinned"])
    assert [e.type for e in pins] == ["TenantPin.Pinned"] * 3 + ["TenantPin.Unpinned"]
    assert {e.prompt for e in store.audit_log(WS, prompt="other-1")} == {"other-1"}

    with pytest.raises(ValueError, match="timezone"):
        store.deployment_at(WS, BOT, PROD, datetime(2026, 3, 14, 9, 5))


@pytest.mark.parametrize("batch", [1, 7])
def test_rebuild_equals_the_views_applied_in_batches(
    app: PromptRecord, clock: Clock, store: ViewStore, batch: int
) -> None:
    script(app, clock)
    events = log(app)
    apply_in_batches(store, events, batch)
    applied = dump_all(store)
    # every view has rows (the script makes no promotion request: test_live_seed's does; nor
    # datasets and eval runs: test_views_evals rebuilds those; nor webhook endpoints:
    # test_views_webhooks does)
    untouched = ("promotion_requests", "datasets", "eval_runs", "webhook_endpoints")
    assert all(applied[name] for name in VIEW_NAMES if name not in untouched)

    report = store.rebuild(app.read_events)
    assert report.views == VIEW_NAMES
    assert (report.events, report.position) == (len(events), events[-1][0])
    assert dump_all(store) == applied
    assert store.position() == events[-1][0]

    for name in VIEW_NAMES:
        assert store.rebuild(app.read_events, [name]).views == (name,)
        assert dump_all(store) == applied, name


def test_a_single_view_rebuild_stops_where_the_others_are(
    app: PromptRecord, clock: Clock, store: ViewStore
) -> None:
    script(app, clock)
    events = log(app)
    half = len(events) // 2
    store.apply(0, events[:half])
    before = store.dump("audit_log")
    report = store.rebuild(app.read_events, ["audit_log"])
    assert (report.events, report.position) == (half, events[half - 1][0])
    assert store.dump("audit_log") == before
    assert store.position() == events[half - 1][0]
    with pytest.raises(ValueError, match="no view named 'audit'; the views are catalog"):
        store.rebuild(app.read_events, ["audit"])


def test_applying_events_again_changes_nothing(
    app: PromptRecord, clock: Clock, store: ViewStore
) -> None:
    script(app, clock)
    events = log(app)
    last = events[-1][0]
    assert store.apply(0, events) == last
    applied = dump_all(store)

    assert store.apply(0, events) == last  # the whole log again
    assert store.apply(0, events[3:4]) == last  # one event again
    assert store.apply(events[5][0], events[6:]) == last  # an overlapping tail
    assert dump_all(store) == applied

    # A batch that claims to follow a position the views never reached is refused.
    with pytest.raises(PositionMoved) as moved:
        store.apply(last + 10, [])
    assert moved.value.position == last


def test_applying_the_same_tail_twice_after_a_restart(
    app: PromptRecord, clock: Clock, store: ViewStore
) -> None:
    """A second store on the same tables (a restarted projector) skips what is tracked."""
    script(app, clock)
    events = log(app)
    store.apply(0, events[:10])
    again = open_view_store(app)
    assert again.position() == events[9][0]
    assert again.apply(0, events) == events[-1][0]
    fresh = open_view_store(app)
    assert fresh.apply(events[9][0], events[10:]) == events[-1][0]
    assert dump_all(fresh) == dump_all(store)
    store.rebuild(app.read_events)
    assert dump_all(store) == dump_all(fresh)


class PinsWithNote(PinsView):
    """The pins view as a later release might define it: one more column."""

    tables = (Table(PINS.name, (*PINS.columns, Column("note", "text")), PINS.key),)


def test_views_of_another_version_must_be_rebuilt_first(
    app: PromptRecord, clock: Clock, store: ViewStore
) -> None:
    script(app, clock)
    events = log(app)
    store.apply(0, events)

    class NotePins(PinsWithNote):
        def fold(self, logged: Any, ctx: Any) -> None:
            super().fold(logged, ctx)

    views = [NotePins() if v.name == "pins" else v for v in store.views]
    newer = open_view_store(app, views)
    assert newer.outdated == ("pins",)
    with pytest.raises(ViewsOutdated, match=r"rebuild pins"):
        Projector(app, newer).run()
    newer.rebuild(app.read_events, ["pins"])
    assert newer.outdated == ()
    assert [set(row) for row in newer.dump("pins")] == [
        {"workspace", "tenant", "prompt", "environment", "version", "expires_at", "pinned_at"}
        | {"event_id", "note"}
    ]
    assert open_view_store(app, views).outdated == ()
    assert open_view_store(app).outdated == ("pins",)  # the older code sees a newer table
