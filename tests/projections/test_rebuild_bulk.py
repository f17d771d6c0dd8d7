"""A rebuild writes in spans and bulk-loads its fresh tables; its rows equal incremental apply.

`rebuild` folds the whole log into freshly created tables, writing a span of rows at a time
(rows changed again within a span written once, rows new to a table by COPY on PostgreSQL
and plain INSERT on SQLite, rows flushed before by upsert) and building the indexes after.
Here the page and span are made tiny so that every path is taken many times: rows updated,
deleted and re-created across spans, and a view that reads back rows of a table it does not
keep in memory. The rows must be exactly those of applying the log page by page, on SQLite
and PostgreSQL; a view failing, or writing a bad row, must leave the old views untouched.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from support.histories import SMALL_POOL, Clock

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor, event_id
from promptrecord.domain.errors import DomainError
from promptrecord.projections import view_sql
from promptrecord.projections.folding import (
    INT,
    TEXT,
    TIME,
    Column,
    FoldContext,
    LoggedEvent,
    Table,
    View,
    fast_event_id,
)
from promptrecord.projections.view_rows import ViewWriteError
from promptrecord.projections.views import ViewError, ViewStore, open_view_store
from promptrecord.settings import Settings

ACTOR = Actor("key-ci", "ci pipeline", on_behalf_of="bob")
WS = "acme"

COUNTS = Table(
    "test_event_counts",
    (
        Column("aggregate_id", TEXT, False),
        Column("events", INT, False),
        Column("last_event_id", TEXT, False),
        Column("last_at", TIME, False),
    ),
    key=("aggregate_id",),
    indexes=(("last_at",),),
)


class CountingView(View):
    """Events per aggregate, read back through `get` from a table it does not cache; a pin's
    row is deleted on unpin, so a re-pin starts counting again."""

    name = "test_event_counts"
    tables = (COUNTS,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        key = (logged.aggregate_id,)
        if logged.type == "TenantPin.Unpinned":
            ctx.delete(COUNTS, key)
            return
        row = ctx.get(COUNTS, key)
        ctx.put(
            COUNTS,
            {
                "aggregate_id": logged.aggregate_id,
                "events": 1 if row is None else row["events"] + 1,
                "last_event_id": logged.event_id,
                "last_at": logged.timestamp,
            },
        )


def content(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "model": {"provider": "anthropic", "name": "m"}}


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
def small_spans(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pages of 5 events and a flush once 7 rows are buffered: spans cross every kind of row."""
    monkeypatch.setattr(view_sql, "REBUILD_PAGE", 5)
    monkeypatch.setattr(view_sql, "REBUILD_FLUSH_ROWS", 7)
    return 5


def history(app: PromptRecord, clock: Clock) -> None:
    """Two prompts with versions, promotions, rollouts adjusted, completed, aborted and rolled
    back, and tenants pinned, re-pinned and unpinned, in a seeded random order."""
    rng = random.Random(20261121)

    def tick() -> None:
        clock.now += timedelta(seconds=rng.choice((0, 1, 7)))

    app.create_workspace(WS)
    prompts = ["bot-a", "bot-b"]
    versions = dict.fromkeys(prompts, 1)
    rollout: dict[str, bool] = dict.fromkeys(prompts, False)
    for name in prompts:
        app.create_prompt(WS, ACTOR, name=name, content=content(f"{name} 1"))
    for name in prompts:
        for number in range(2, 5):
            tick()
            app.commit_version(WS, name, content(f"{name} {number}"), ACTOR)
            versions[name] = number
        app.promote(WS, name, "production", 1, ACTOR)
    pinned: set[tuple[str, str]] = set()

    def attempt(command: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            command(*args, **kwargs)
        except DomainError:  # refused in this state (say, nothing to roll back to): skip it
            return False
        return True

    for step in range(120):
        tick()
        name = rng.choice(prompts)
        move = rng.randrange(8)
        if move == 0:
            versions[name] += 1
            app.commit_version(WS, name, content(f"{name} {versions[name]}"), ACTOR)
        elif move == 1 and not rollout[name]:
            candidate = rng.randint(2, versions[name])
            rollout[name] = attempt(
                app.start_rollout, WS, name, "production", candidate, 0.1, ACTOR
            )
        elif move == 2 and rollout[name]:
            attempt(app.adjust_rollout, WS, name, "production", rng.choice((0.2, 0.9)), ACTOR)
        elif move == 3 and rollout[name]:
            if rng.random() < 0.5:
                app.complete_rollout(WS, name, "production", ACTOR)
            else:
                app.abort_rollout(WS, name, "production", ACTOR, reason="errors")
            rollout[name] = False
        elif move == 4 and not rollout[name]:
            attempt(app.promote, WS, name, "production", rng.randint(1, versions[name]), ACTOR)
        elif move == 5 and not rollout[name]:
            attempt(app.rollback, WS, name, "production", f"incident {step}", ACTOR)
        else:
            tenant = f"t{rng.randrange(4)}"
            if (tenant, name) in pinned and rng.random() < 0.5:
                attempt(app.unpin, WS, tenant, name, "production", ACTOR, reason="done")
                pinned.discard((tenant, name))
            else:
                version = rng.randint(1, versions[name])
                ttl = rng.choice((5, 60, 3600))
                app.pin(WS, tenant, name, "production", version, ACTOR, ttl_seconds=ttl)
                pinned.add((tenant, name))
    app.archive(WS, "bot-b", "retired", ACTOR, None)


def log(app: PromptRecord) -> list[tuple[int, Any]]:
    return list(app.read_events(0, 100_000))


def dump_all(store: ViewStore) -> dict[str, list[dict[str, Any]]]:
    return {name: store.dump(name) for name in [view.name for view in store.views]}


def with_counts(app: PromptRecord) -> ViewStore:
    return open_view_store(app, [*open_view_store(app).views, CountingView()])


def test_rebuild_in_small_spans_equals_applying_page_by_page(
    app: PromptRecord, clock: Clock, small_spans: int
) -> None:
    history(app, clock)
    events = log(app)
    kinds = {type(event).__qualname__ for _, event in events}
    assert {"TenantPin.Unpinned", "Deployment.RolloutAdjusted", "Deployment.RolledBack"} <= kinds
    store = with_counts(app)
    position = 0
    for start in range(0, len(events), small_spans):
        position = store.apply(position, events[start : start + small_spans])
    applied = dump_all(store)
    fed = ["catalog", "versions", "deployments", "pins", "deployment_intervals", "pin_intervals"]
    assert all(applied[name] for name in [*fed, "audit_log", COUNTS.name])
    # The counting view read its rows back across flushes: every event is counted.
    unpinned = {str(e.originator_id) for _, e in events if type(e).__name__ == "Unpinned"}
    counted = {row["aggregate_id"]: row["events"] for row in applied["test_event_counts"]}
    for aggregate_id, count in counted.items():
        if aggregate_id not in unpinned:
            assert count == sum(1 for _, e in events if str(e.originator_id) == aggregate_id)

    report = store.rebuild(app.read_events)
    assert (report.events, report.position) == (len(events), events[-1][0])
    assert dump_all(store) == applied
    assert store.position() == events[-1][0]

    # The same with the default page and span (everything in one span), and view by view.
    again = with_counts(app)
    view_sql.REBUILD_PAGE, view_sql.REBUILD_FLUSH_ROWS = 1000, 20_000
    again.rebuild(app.read_events)
    assert dump_all(again) == applied
    for name in ("deployment_intervals", "pins", "test_event_counts"):
        again.rebuild(app.read_events, [name])
        assert dump_all(again) == applied, name


def test_the_event_ids_views_store_are_the_domain_event_ids(
    app: PromptRecord, clock: Clock
) -> None:
    history(app, clock)
    events = log(app)
    assert [fast_event_id(e) for _, e in events] == [event_id(e) for _, e in events]


class FailingOn(CountingView):
    def __init__(self, position: int) -> None:
        self.position = position

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        if logged.position == self.position:
            raise RuntimeError("this view cannot fold it")
        super().fold(logged, ctx)


class WritingBadRows(CountingView):
    """Writes a row the table refuses (per `bad`) once past a position, after some spans."""

    def __init__(self, position: int, bad: dict[str, Any]) -> None:
        self.position = position
        self.bad = bad

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        super().fold(logged, ctx)
        if logged.position == self.position:
            row = {
                "aggregate_id": "bad",
                "events": 0,
                "last_event_id": "x",
                "last_at": logged.timestamp,
            }
            ctx.put(COUNTS, {**row, **self.bad})


def test_a_view_failing_in_a_rebuild_names_the_event_and_keeps_the_old_views(
    app: PromptRecord, clock: Clock, small_spans: int
) -> None:
    history(app, clock)
    events = log(app)
    store = with_counts(app)
    store.apply(0, events)
    before = dump_all(store)
    position, event = events[len(events) // 2]
    failing = open_view_store(app, [*open_view_store(app).views, FailingOn(position)])
    with pytest.raises(ViewError) as failed:
        failing.rebuild(app.read_events)
    error = failed.value
    assert (error.view, error.position) == ("test_event_counts", position)
    assert (error.type_name, error.aggregate_id) == (
        type(event).__qualname__,
        str(event.originator_id),
    )
    assert "this view cannot fold it" in str(error)
    assert dump_all(store) == before
    assert store.position() == events[-1][0]


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"events": None}, ""),  # NULL into a NOT NULL column
        ({"last_at": datetime(2026, 3, 14, 9, 0)}, "timezone"),  # a time without a zone
    ],
)
def test_a_row_the_table_refuses_fails_the_rebuild_naming_the_table(
    app: PromptRecord, clock: Clock, small_spans: int, bad: dict[str, Any], words: str
) -> None:
    history(app, clock)
    events = log(app)
    store = with_counts(app)
    store.apply(0, events[:-3])
    before = dump_all(store)
    position = events[len(events) // 2][0]
    broken = open_view_store(app, [*open_view_store(app).views, WritingBadRows(position, bad)])
    with pytest.raises(ViewWriteError, match=COUNTS.full_name) as failed:
        broken.rebuild(app.read_events)
    assert words in str(failed.value)
    assert dump_all(store) == before
    assert store.position() == events[-4][0]
    # The connection the failed COPY or INSERT ran on is usable again, and so are the views.
    assert store.apply(events[-4][0], events[-3:]) == events[-1][0]
    store.rebuild(app.read_events)
    assert store.position() == events[-1][0]
