"""The live state seeded from the views equals the live state folded from the log, at every
position of a history that touches every kind of event; and the workspace views (workspaces,
API keys, deployment details, promotion requests) hold what the aggregates hold."""

from __future__ import annotations

import contextlib
import random
from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any

from support.histories import SMALL_POOL, Clock, content

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import DomainError
from promptrecord.domain.policy import EnvironmentPolicy
from promptrecord.domain.resolution import ResolutionState
from promptrecord.projections.folding import TEXT, Column
from promptrecord.projections.folding_admin import WORKSPACES, WorkspacesView
from promptrecord.projections.live_seed import seed_state
from promptrecord.projections.views import ViewStore, open_view_store
from promptrecord.settings import Settings

ALICE = Actor("key-alice", "alice")
BOB = Actor("key-bob", "bob")
CAROL = Actor("key-carol", "carol")
ENVS = ["staging", "production"]
PROMPTS = ["bot", "summary"]


# Weighted by repetition, so rollouts, pins and requests see their follow-up commands.
WEIGHTS = {"commit": 1, "promote": 3, "rollout": 3, "adjust": 2, "complete": 1, "abort": 1}
WEIGHTS |= {"rollback": 2, "pin": 3, "unpin": 2, "archive": 1, "unarchive": 2, "key": 1}
WEIGHTS |= {"revoke": 1, "policy": 1, "environments": 1, "request": 2, "approve": 1}
WEIGHTS |= {"reject": 1, "wait": 2}
KINDS = [kind for kind, weight in WEIGHTS.items() for _ in range(weight)]


def random_history(app: PromptRecord, clock: Clock, seed: int, steps: int) -> None:
    """Commands chosen at random (refusals included), over two workspaces and two prompts."""
    rng = random.Random(seed)
    keys: dict[str, list[str]] = {"acme": [], "globex": []}
    for ws in ("acme", "globex"):
        app.create_workspace(ws, environments=list(ENVS))
        for name in PROMPTS:
            app.create_prompt(ws, ALICE, name=name, content=content(f"{ws} {name} v1"))
    requests: list[tuple[str, str, str, str]] = []

    def step() -> None:
        ws, name, env = rng.choice(["acme", "globex"]), rng.choice(PROMPTS), rng.choice(ENVS)
        version = rng.randint(1, len(app.prompt(ws, name, copy=False).versions))
        share = rng.choice([0.1, 0.5, 0.9])
        kind = rng.choice(KINDS)
        if kind == "commit":
            app.commit_version(ws, name, content(f"{clock.now}"), ALICE)
        elif kind == "promote":
            app.promote(ws, name, env, version, ALICE)
        elif kind == "rollout":
            key_by = rng.choice(["tenant", "user"])
            app.start_rollout(ws, name, env, version, share, ALICE, key_by=key_by)
        elif kind in ("adjust", "complete", "abort"):
            rolling = [
                (w, n, e)
                for w in ("acme", "globex")
                for n in PROMPTS
                for e in ENVS
                if (d := app.deployment(w, n, e)) is not None and d.rollout is not None
            ]
            if rolling:
                ws, name, env = rng.choice(rolling)
                if kind == "adjust":
                    app.adjust_rollout(ws, name, env, share, ALICE)
                elif kind == "complete":
                    app.complete_rollout(ws, name, env, ALICE)
                else:
                    app.abort_rollout(ws, name, env, ALICE)
        elif kind == "rollback":
            to = rng.choice([None, version])
            app.rollback(ws, name, env, "test", ALICE, to_version=to)
        elif kind == "pin":
            tenant = rng.choice(["t1", "t2"])
            app.pin(ws, tenant, name, env, version, ALICE, ttl_seconds=rng.choice([30, 600]))
        elif kind == "unpin":
            app.unpin(ws, rng.choice(["t1", "t2"]), name, env, ALICE)
        elif kind == "archive":
            app.archive(ws, name, "test", ALICE, None)
        elif kind == "unarchive":
            app.unarchive(ws, name, "test", ALICE, None)
        elif kind == "key":
            _, token = app.issue_key(ws, f"key {len(keys[ws])}", "runtime", ALICE, ["production"])
            keys[ws].append(token.key_id)
        elif kind == "revoke" and keys[ws]:
            app.revoke_key(ws, keys[ws].pop(rng.randrange(len(keys[ws]))), "rotated", ALICE)
        elif kind == "policy":
            approvals = rng.choice([0, 1])
            app.set_policy(ws, env, EnvironmentPolicy(required_approvals=approvals), ALICE)
        elif kind == "environments":
            app.set_environments(ws, list(reversed(app.workspace(ws).environments)), ALICE, None)
        elif kind == "request":
            result = app.promote(ws, name, env, version, BOB)
            if result.value.get("status") == "pending_approval":
                requests.append((ws, name, env, result.value["request_id"]))
        elif kind in ("approve", "reject") and requests:
            ws, name, env, request_id = requests.pop(rng.randrange(len(requests)))
            decide = app.approve if kind == "approve" else app.reject
            decide(ws, name, env, request_id, CAROL, "looked at it")
        elif kind == "wait":
            clock.now += timedelta(seconds=rng.choice([10, 45, 900]))

    for _ in range(steps):
        clock.now += timedelta(seconds=1)
        with contextlib.suppress(DomainError):  # a refusal writes nothing, as in real use
            step()


def folded(events: list[tuple[int, Any]], upto: int) -> ResolutionState:
    state = ResolutionState()
    for position, event in events:
        if position > upto:
            break
        state.apply(event, position)
    return state


def test_seeded_state_equals_the_folded_log_at_every_position(
    world: tuple[PromptRecord, Clock, ViewStore],
) -> None:
    app, clock, store = world
    random_history(app, clock, seed=11, steps=400)
    events = list(app.read_events(0, 100_000))
    kinds = {type(event).__qualname__ for _, event in events}
    # the history reached every event the live state folds
    assert {
        "Workspace.ApiKeyRevoked",
        "Workspace.PolicySet",
        "Workspace.EnvironmentsSet",
        "Prompt.Archived",
        "Prompt.Unarchived",
        "Deployment.RolloutAdjusted",
        "Deployment.RolloutCompleted",
        "Deployment.RolloutAborted",
        "Deployment.RolledBack",
        "Deployment.PromotionApproved",
        "Deployment.PromotionRejected",
        "TenantPin.Unpinned",
    } <= kinds, kinds
    assert seed_state(store) == ResolutionState()  # nothing applied yet: the empty state
    applied = 0
    for position, event in events:
        applied = store.apply(applied, [(position, event)])
        if position % 7 and position != events[-1][0]:
            continue  # every 7th position and the last: enough prefixes, a quick test
        seeded = seed_state(store)
        assert seeded is not None
        assert seeded == folded(events, position), f"differs after position {position}"


def test_workspace_views_hold_what_the_aggregates_hold(
    world: tuple[PromptRecord, Clock, ViewStore],
) -> None:
    app, clock, store = world
    random_history(app, clock, seed=11, steps=400)
    events = list(app.read_events(0, 100_000))
    store.apply(0, events)
    for ws in ("acme", "globex"):
        aggregate = app.workspace(ws)
        entry = store.workspace(ws)
        assert entry is not None
        assert (entry.name, entry.environments, entry.revision) == (
            aggregate.name,
            aggregate.environments,
            aggregate.version,
        )
        assert entry.policies == aggregate.policies
        listed = store.api_keys(ws)
        assert [k.key_id for k in listed] == list(aggregate.keys)  # in order of issue
        for key in listed:
            held = aggregate.keys[key.key_id]
            assert (key.name, key.role, key.revoked) == (
                held["name"],
                held["role"],
                held["revoked"],
            )
            assert (key.environments, key.prompt_patterns) == (
                held["environments"],
                held["prompt_patterns"],
            )
            assert key.secret_hash == held["secret_hash"]
            assert (key.revoked_at is not None) == key.revoked
        assert [k.key_id for k in store.api_keys(ws, limit=1, after=listed[0].number)] == [
            k.key_id for k in listed[1:2]
        ]
        for name in PROMPTS:
            catalog = store.catalog_entry(ws, name)
            assert catalog is not None
            assert catalog.revision == app.prompt(ws, name).version
            for env in ENVS:
                deployment = app.deployment(ws, name, env)
                found = store.deployments(ws, name, env)
                requests = store.promotion_requests(ws, name, env)
                if deployment is None:
                    assert found == [] and requests == []
                    continue
                [detail] = found
                assert detail.stack == deployment.stack
                assert detail.ever_served == deployment.ever_served
                assert detail.serving_version == deployment.serving
                assert detail.revision == deployment.version
                held = deployment.rollout
                if held is None:
                    assert detail.rollout is None and detail.rollout_started_at is None
                else:
                    assert detail.rollout is not None
                    split = asdict(detail.rollout)
                    assert {**split, "started_at": detail.rollout_started_at} == held
                expected = [dict(r) for r in deployment.requests.values()]
                got = [{k: v for k, v in asdict(r).items() if k not in _PLACE} for r in requests]
                assert got == expected


_PLACE = ("workspace", "prompt", "environment", "number")


def test_outdated_views_seed_nothing(world: tuple[PromptRecord, Clock, ViewStore]) -> None:
    """A table from another release cannot be trusted: the live state replays the log."""
    app, clock, store = world
    random_history(app, clock, seed=11, steps=40)
    store.apply(0, list(app.read_events(0, 100_000)))
    assert seed_state(store) is not None

    class NotedWorkspaces(WorkspacesView):
        tables = (replace(WORKSPACES, columns=(*WORKSPACES.columns, Column("note", TEXT))),)

    views = [NotedWorkspaces() if v.name == "workspaces" else v for v in store.views]
    newer = open_view_store(app, views)
    assert newer.outdated == ("workspaces",)
    assert seed_state(newer) is None


def test_rebuild_of_the_workspace_views_equals_applying_the_log(
    world: tuple[PromptRecord, Clock, ViewStore],
) -> None:
    app, clock, store = world
    random_history(app, clock, seed=11, steps=400)
    events = list(app.read_events(0, 100_000))
    for start in range(0, len(events), 13):  # in batches, as the projector applies them
        store.apply(events[start - 1][0] if start else 0, events[start : start + 13])
    names = ("workspaces", "api_keys", "deployments", "promotion_requests")
    applied = {name: store.dump(name) for name in names}
    assert all(applied.values())
    store.rebuild(app.read_events)
    assert {name: store.dump(name) for name in names} == applied


def test_analyse_gathers_statistics_of_every_view_table(postgres_settings: Settings) -> None:
    import psycopg

    app = PromptRecord(env={**postgres_settings.eventsourcing_env(), **SMALL_POOL})
    try:
        store = open_view_store(app)
        app.create_workspace("acme")
        store.rebuild(app.read_events)
        store.analyse()
        with psycopg.connect(postgres_settings.database_url) as conn:
            rows = conn.execute(
                "SELECT relname, last_analyze FROM pg_stat_user_tables "
                "WHERE schemaname = %s AND relname LIKE 'promptrecord_view_%%'",
                [postgres_settings.database_schema],
            ).fetchall()
        tables = {t.full_name for view in store.views for t in view.tables}
        assert {name for name, analysed in rows if analysed is not None} >= tables
    finally:
        app.close()
