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
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.histories import BOT, COMMANDS, ENVS, Clock, history

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.errors import DomainError
from promptrecord.domain.resolution import ResolutionState, bucket, resolve
from promptrecord.projections.views import RolloutSplit, ViewStore

TENANTS = ("t1", "t2", "t3", "t4", None)  # t3, t4 never pinned; None: no tenant


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
        begin = app.recorder.max_notification_id() or 0
        history(app, clock, ws, commands, promoted=ENVS)
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
