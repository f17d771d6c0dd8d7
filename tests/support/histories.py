"""Random command histories of one prompt in two environments, for the tests that compare
the views with replay (and with `resolve` over the folded log).

Hypothesis draws `COMMANDS`: commits, promotions, rollouts started, adjusted (often),
completed and aborted, rollbacks during rollouts and after, pins with short expiries that
lapse between events, re-pins, unpins, archive and unarchive, and waits that move the clock.
`history` runs them in a workspace of their own on a controlled `Clock`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import note
from hypothesis import strategies as st

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import DomainError
from promptrecord.projections.views import ViewStore, open_view_store
from promptrecord.settings import Settings

START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
MODEL = "claude-sonnet-4-5-20250929"
ACTOR = Actor("key-history", "history test")
BOT = "bot"
ENVS = ("staging", "production")
# Small pools: each hypothesis example opens no new pool, but a test may hold several apps.
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
    """The application's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def content(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "model": {"provider": "anthropic", "name": MODEL}}


def run(app: PromptRecord, clock: Clock, ws: str, command: tuple[Any, ...]) -> None:
    """Carry out one drawn command; a refusal is noted and writes nothing."""
    kind, *args = command
    calls: dict[str, Callable[..., Any]] = {
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


def history(
    app: PromptRecord,
    clock: Clock,
    ws: str,
    commands: list[tuple[Any, ...]],
    promoted: Sequence[str] = ("production",),
) -> None:
    """Workspace `ws`, the prompt with v1..v3, v1 promoted in `promoted`, then `commands`."""
    clock.now = START
    app.create_workspace(ws, environments=list(ENVS))
    app.create_prompt(ws, ACTOR, name=BOT, content=content("v1"))
    app.commit_version(ws, BOT, content("v2"), ACTOR)
    app.commit_version(ws, BOT, content("v3"), ACTOR)
    for environment in promoted:
        app.promote(ws, BOT, environment, 1, ACTOR)
    for command in commands:
        run(app, clock, ws, command)


def open_world(settings: Settings) -> Iterator[tuple[PromptRecord, Clock, ViewStore]]:
    """An application on a controlled clock and its view store (the `world` fixture)."""
    clock = Clock()
    app = PromptRecord(env={**settings.eventsourcing_env(), **SMALL_POOL}, clock=clock)
    try:
        yield app, clock, open_view_store(app)
    finally:
        app.close()
