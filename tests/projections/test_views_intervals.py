"""Deployment and pin intervals agree with `resolve` over the log folded up to any time.

Hypothesis writes random histories of one prompt in two environments — commits, promotions,
rollouts started, adjusted (often), completed and aborted, rollbacks during rollouts and
after, pins with short expiries that lapse between events, re-pins, unpins, archive and
unarchive, with the clock moving on between some commands. Each history runs in its own
workspace of one store per backend; the views then apply the new events.

At every event time, a second after it, and around every pin expiry, the answer read from
the views (pin interval at t, else the deployment interval at t bucketed for the tenant,
with its split; archival from the audit log) equals `resolve` over a `ResolutionState`
folded from the events stamped at or before t: the same version, reason, causing event and
split, or the same refusal.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import DomainError
from promptrecord.domain.resolution import ResolutionState, bucket, resolve
from promptrecord.projections.views import RolloutSplit, ViewStore, open_view_store
from promptrecord.settings import Settings

START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
MODEL = "claude-sonnet-4-5-20250929"
ACTOR = Actor("key-intervals", "interval test")
BOT = "bot"
ENVS = ("staging", "production")
TENANTS = ("t1", "t2", "t3", "t4", None)  # t3, t4 never pinned; None: no tenant
SMALL_POOL = {"POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "4"}

env = st.sampled_from(ENVS)
version = st.integers(1, 4)
share = st.sampled_from([0.05, 0.3, 0.5, 0.9])
PIN = st.tuples(
    st.just("pin"), st.sampled_from(["t1", "t2"]), env, version, st.sampled_from([20, 60, 300])
)
ROLLOUT = st.tuples(st.just("rollout"), env, version, share, st.sampled_from(["tenant", "user"]))
WAIT = st.tuples(st.just("wait"), st.sampled_from([1, 15, 40, 120]))
# Weighted by repetition: rollouts, adjustments, pins and waits come most often.
COMMANDS = st.one_of(
    st.tuples(st.just("commit")),
    st.tuples(st.just("promote"), env, version),
    ROLLOUT,
    ROLLOUT,
    ROLLOUT,
    st.tuples(st.just("adjust"), env, share),
    st.tuples(st.just("adjust"), env, share),
    st.tuples(st.just("complete"), env),
    st.tuples(st.just("abort"), env),
    st.tuples(st.just("rollback"), env, st.one_of(st.none(), version)),
    PIN,
    PIN,
    st.tuples(st.just("unpin"), st.sampled_from(["t1", "t2"]), env),
    st.tuples(st.just("archive"), st.sampled_from([0, 30])),
    WAIT,
    WAIT,
)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def content(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "model": {"provider": "anthropic", "name": MODEL}}


def run(app: PromptRecord, clock: Clock, ws: str, command: tuple[Any, ...]) -> None:
    kind, *args = command
    calls = {
        "commit": lambda: app.commit_version(ws, BOT, content(f"v{clock.now}"), ACTOR),
        "promote": lambda e, v: app.promote(ws, BOT, e, v, ACTOR),
        "rollout": lambda e, v, s, k: app.start_rollout(ws, BOT, e, v, s, ACTOR, key_by=k),
        "adjust": lambda e, s: app.adjust_rollout(ws, BOT, e, s, ACTOR),
        "complete": lambda e: app.complete_rollout(ws, BOT, e, ACTOR),
        "abort": lambda e: app.abort_rollout(ws, BOT, e, ACTOR),
        "rollback": lambda e, v: app.rollback(ws, BOT, e, "test", ACTOR, to_version=v),
        "pin": lambda t, e, v, ttl: app.pin(ws, t, BOT, e, v, ACTOR, ttl_seconds=ttl),
        "unpin": lambda t, e: app.unpin(ws, t, BOT, e, ACTOR),
    }
    if kind == "wait":
        clock.now += timedelta(seconds=args[0])
        return
    if kind == "archive":  # archived for a while, then served again: later commands still work
        app.archive(ws, BOT, "test", ACTOR, None)
        clock.now += timedelta(seconds=args[0])
        app.unarchive(ws, BOT, "test", ACTOR, None)
        note(f"{clock.now:%H:%M:%S} archived for {args[0]}s")
        return
    try:
        calls[kind](*args)
        note(f"{clock.now:%H:%M:%S} {command}")
    except DomainError as refused:
        note(f"{clock.now:%H:%M:%S} {command} refused: {refused.code}")


def from_views(store: ViewStore, ws: str, environment: str, tenant: str | None, t: datetime):
    """The answer the audit will give from the views alone."""
    archival = [e for e in store.audit_log(ws, prompt=BOT, types=ARCHIVAL) if e.timestamp <= t]
    if archival and archival[-1].type == "Prompt.Archived":
        return "prompt_archived"
    if tenant is not None:
        pin = store.pin_at(ws, tenant, BOT, environment, t)
        if pin is not None:
            return ("pinned", pin.version, pin.cause_event_id)
    deployment = store.deployment_at(ws, BOT, environment, t)
    if deployment is None:
        return "not_deployed"
    split = deployment.rollout
    if split is None:
        return ("promoted", deployment.version, deployment.cause_event_id)
    key = tenant if split.key_by == "tenant" else None
    candidate = key is not None and bucket(split.rollout_id, key) < split.share
    number = split.candidate if candidate else split.baseline
    return ("rollout", number, deployment.cause_event_id, split)


ARCHIVAL = ["Prompt.Archived", "Prompt.Unarchived"]


def from_replay(state: ResolutionState, ws: str, environment: str, tenant: str | None, t: datetime):
    try:
        found = resolve(state, ws, BOT, environment, tenant, None, t)
    except DomainError as refused:
        return refused.code
    split = found.rollout
    if split is None:
        return (found.reason, found.version.number, found.cause)
    rollout = RolloutSplit(
        split.rollout_id, split.baseline, split.candidate, split.share, split.key_by
    )
    return (found.reason, found.version.number, found.cause, rollout)


def sample_times(events: list[tuple[int, Any]]) -> list[datetime]:
    times = {event.timestamp for _, event in events}
    times |= {t + timedelta(seconds=1) for t in times}
    for _, event in events:
        expires = getattr(event, "expires_at", None)
        if expires is not None:
            times |= {expires - timedelta(microseconds=1), expires, expires + timedelta(seconds=5)}
    return sorted(times)


@pytest.fixture
def world(backend: Settings) -> Iterator[tuple[PromptRecord, Clock, ViewStore]]:
    clock = Clock()
    app = PromptRecord(env={**backend.eventsourcing_env(), **SMALL_POOL}, clock=clock)
    try:
        yield app, clock, open_view_store(app)
    finally:
        app.close()


def test_intervals_agree_with_resolve_at_sampled_times(
    world: tuple[PromptRecord, Clock, ViewStore],
) -> None:
    app, clock, store = world
    workspaces = itertools.count()

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(COMMANDS, min_size=1, max_size=25))
    def check(commands: list[tuple[Any, ...]]) -> None:
        ws = f"w{next(workspaces)}"
        clock.now = START
        begin = app.recorder.max_notification_id() or 0
        app.create_workspace(ws, environments=list(ENVS))
        app.create_prompt(ws, ACTOR, name=BOT, content=content("v1"))
        app.commit_version(ws, BOT, content("v2"), ACTOR)
        app.commit_version(ws, BOT, content("v3"), ACTOR)
        for environment in ENVS:
            app.promote(ws, BOT, environment, 1, ACTOR)
        for command in commands:
            run(app, clock, ws, command)
        events = list(app.read_events(begin, 10_000))
        store.apply(store.position(), events)

        state, pending = ResolutionState(), iter(events)
        upcoming = next(pending, None)
        for t in sample_times(events):
            while upcoming is not None and upcoming[1].timestamp <= t:
                state.apply(upcoming[1], upcoming[0])
                upcoming = next(pending, None)
            for environment in ENVS:
                for tenant in TENANTS:
                    expected = from_replay(state, ws, environment, tenant, t)
                    assert from_views(store, ws, environment, tenant, t) == expected, (
                        f"{environment} {tenant} at {t:%H:%M:%S.%f}"
                    )

    check()
