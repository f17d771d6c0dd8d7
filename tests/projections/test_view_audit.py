"""Audit answers read from the views equal replay's, at sampled times and over windows.

Hypothesis writes random histories of one prompt in two environments (rollouts adjusted
often, rollbacks during rollouts, pins lapsing between events, re-pins, unpins, archive and
unarchive), each in its own workspace; the views then apply the new events. At every event
time, a second after, and around every pin expiry, `ViewAudit.answer_at` equals
`ReplayAudit.answer_at` (the same dataclass, causing events included, or the same refusal),
and both give the same intervals over the whole history and over windows inside it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.histories import ACTOR, BOT, COMMANDS, ENVS, START, Clock, content, history

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import DomainError
from promptrecord.projections.audit import AuditSource
from promptrecord.projections.replay import ReplayAudit
from promptrecord.projections.view_audit import ViewAudit
from promptrecord.projections.views import ViewStore

TENANTS = ("t1", "t2", "t3")  # t3 never pinned


def sample_times(events: list[tuple[int, Any]]) -> list[datetime]:
    times = {event.timestamp for _, event in events}
    times |= {t + timedelta(seconds=1) for t in times} | {START - timedelta(seconds=1)}
    for _, event in events:
        expires = getattr(event, "expires_at", None)
        if expires is not None:
            times |= {expires - timedelta(microseconds=1), expires, expires + timedelta(seconds=5)}
    return sorted(times)


def outcome(ask: Callable[..., Any], *question: Any) -> Any:
    """The answer, or the refusal's code and message (both sources word refusals alike)."""
    try:
        return ask(*question)
    except DomainError as refused:
        return (refused.code, str(refused))


def test_views_answer_as_replay_does(world: tuple[PromptRecord, Clock, ViewStore]) -> None:
    app, clock, store = world
    views, replay = ViewAudit(store, app), ReplayAudit(app)
    workspaces = itertools.count()
    counts: Counter[str] = Counter()

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(COMMANDS, min_size=1, max_size=20), st.sampled_from([None, "user-7"]))
    def check(commands: list[tuple[Any, ...]], key: str | None) -> None:
        ws = f"w{next(workspaces)}"
        begin = app.recorder.max_notification_id() or 0
        history(app, clock, ws, commands)
        events = list(app.read_events(begin, 10_000))
        store.apply(store.position(), events)
        times = sample_times(events)
        for environment in ENVS:
            for tenant in TENANTS:
                for t in times:
                    question = (ws, tenant, BOT, environment, t, key)
                    expected = outcome(replay.answer_at, *question)
                    found = outcome(views.answer_at, *question)
                    counts[type(expected).__name__] += 1
                    assert found == expected, f"{environment} {tenant} at {t:%H:%M:%S.%f}"
                compare_windows(views, replay, (ws, tenant, environment), times, key)

    check()
    # Both answers and refusals were compared, not only one kind.
    assert counts["AuditAnswer"] > 100 and counts["tuple"] > 0, counts


def compare_windows(
    views: AuditSource,
    replay: AuditSource,
    subject: tuple[str, str, str],
    times: list[datetime],
    key: str | None,
) -> None:
    ws, tenant, environment = subject
    windows = [(times[0], times[-1] + timedelta(minutes=10))]
    middle = len(times) // 2
    windows += [(times[middle], times[-1]), (times[1], times[middle + 1])]
    for start, end in windows:
        if start >= end:
            continue
        question = (ws, tenant, BOT, environment, start, end, key)
        expected, found = outcome(replay.intervals, *question), outcome(views.intervals, *question)
        assert found == expected, f"{environment} {tenant} from {start} to {end}"


def test_views_cite_and_refuse_as_replay_across_environment_changes(
    world: tuple[PromptRecord, Clock, ViewStore],
) -> None:
    """Environments added later, an actor acting for a person, reasons empty and written: the
    views' answers (causing events cited from the audit log, environments remembered per
    store) equal replay's, and a second `ViewAudit` on the same store answers alike."""
    app, clock, store = world
    ci = Actor("key-ci", "ci", on_behalf_of="dana@example.com")
    clock.now = START
    app.create_workspace("envs", environments=["staging", "production"])
    app.create_prompt("envs", ACTOR, name=BOT, content=content("v1"))
    app.commit_version("envs", BOT, content("v2"), ci)
    app.promote("envs", BOT, "production", 1, ci, reason="first release")
    clock.now += timedelta(seconds=30)
    app.start_rollout("envs", BOT, "production", 2, 0.5, ci, key_by="tenant")
    clock.now += timedelta(seconds=30)
    app.set_environments("envs", ["staging", "production", "canary"], ACTOR, None)
    clock.now += timedelta(seconds=30)
    app.promote("envs", BOT, "canary", 2, ACTOR)
    app.pin("envs", "t1", BOT, "canary", 1, ci, reason="hold", ttl_seconds=60)
    clock.now += timedelta(seconds=30)
    app.archive("envs", BOT, "", ci, None)
    clock.now += timedelta(seconds=30)
    app.unarchive("envs", BOT, "back", ACTOR, None)
    store.apply(store.position(), list(app.read_events(0, 10_000)))
    events = [(p, e) for p, e in app.read_events(0, 10_000) if e.timestamp >= START]
    times = sample_times(events)
    replay = ReplayAudit(app)
    first, second = ViewAudit(store, app), ViewAudit(store, app)
    cited = Counter[str]()
    for environment in ("production", "canary", "nowhere"):
        for tenant in ("t1", "t2"):
            for t in times:
                question = ("envs", tenant, BOT, environment, t)
                expected = outcome(replay.answer_at, *question)
                assert outcome(first.answer_at, *question) == expected, (environment, t)
                assert outcome(second.answer_at, *question) == expected, (environment, t)
                if not isinstance(expected, tuple):
                    cited.update(event.actor["on_behalf_of"] or "-" for event in expected.events)
            window = ("envs", tenant, BOT, environment, times[0], times[-1])
            expected_intervals = outcome(replay.intervals, *window)
            assert outcome(first.intervals, *window) == expected_intervals
    # Events of both actors were cited, and canary was refused before it existed.
    assert cited["dana@example.com"] > 0 and cited["-"] > 0, cited
    before = outcome(first.answer_at, "envs", "t2", BOT, "canary", START + timedelta(seconds=1))
    assert isinstance(before, tuple) and before[0] == "environment_not_found", before
