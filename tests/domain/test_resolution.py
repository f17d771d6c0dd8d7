"""The resolution rule: its order (archived, pin, rollout, promoted, nothing) and the bucketing.

Rule-order tests build histories with the application (on both backends) and fold the log into
a `ResolutionState`; the bucketing tests drive the pure function over 100,000 keys.
"""

from __future__ import annotations

import hashlib
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from promptrecord.domain.base import event_id
from promptrecord.domain.errors import Conflict, NotFound
from promptrecord.domain.policy import EnvironmentPolicy
from promptrecord.domain.resolution import (
    DeploymentView,
    PromptView,
    ResolutionState,
    RolloutView,
    VersionView,
    WorkspaceView,
    bucket,
    resolve,
)

WS = "acme"
KEYS = 100_000


def own_bucket(rollout_id: str, key: str) -> float:
    digest = hashlib.sha256(f"{rollout_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def fold(record: Any, app: Any = None) -> ResolutionState:
    state = ResolutionState()
    for position, event in record.events(app):
        state.apply(event, position)
    return state


def last_event(record: Any, name: str) -> Any:
    return [event for _, event in record.events() if type(event).__qualname__ == name][-1]


def resolve_now(record: Any, tenant: str | None, key: str | None = None, **kw: Any) -> Any:
    state = fold(record)
    return resolve(
        state,
        WS,
        kw.get("prompt", "bot"),
        kw.get("env", "production"),
        tenant,
        key,
        kw.get("at", record.clock.now),
    )


def refusal(record: Any, *args: Any, **kwargs: Any) -> tuple[type, str]:
    with pytest.raises((NotFound, Conflict)) as caught:
        resolve_now(record, *args, **kwargs)
    return type(caught.value), caught.value.code


@pytest.fixture
def deployed(record: Any) -> Any:
    """bot v1..v3, production serves v1."""
    record.new_prompt("bot", "one", "two", "three")
    record.app.promote(WS, "bot", "production", 1, record.bob)
    return record


# --------------------------------------------------------------------------- rule order


def test_promoted_version_with_its_cause(deployed: Any) -> None:
    answer = resolve_now(deployed, "t1")
    promoted = last_event(deployed, "Deployment.Promoted")
    assert (answer.version.number, answer.reason) == (1, "promoted")
    assert answer.cause == event_id(promoted)
    assert answer.rollout is None and answer.pin_expires_at is None
    assert answer.version.content["text"] == "one"
    assert resolve_now(deployed, None).version.number == 1


def test_archived_prompt_is_refused_before_anything_else(deployed: Any) -> None:
    app = deployed.app
    app.start_rollout(WS, "bot", "production", 2, 0.5, deployed.bob)
    app.pin(WS, "t1", "bot", "production", 3, deployed.bob)
    app.archive(WS, "bot", "retired", deployed.bob, None)
    for tenant in ("t1", "t2", None):
        assert refusal(deployed, tenant) == (Conflict, "prompt_archived")
    assert refusal(deployed, "t1", env="qa") == (Conflict, "prompt_archived")
    assert refusal(deployed, "t1", env="staging") == (Conflict, "prompt_archived")
    app.unarchive(WS, "bot", "back", deployed.bob, None)
    assert resolve_now(deployed, "t1").reason == "pinned"


def test_valid_pin_beats_a_rollout(deployed: Any) -> None:
    app = deployed.app
    app.start_rollout(WS, "bot", "production", 2, 0.99, deployed.bob)
    result = app.pin(WS, "t1", "bot", "production", 3, deployed.bob, ttl_seconds=600)
    answer = resolve_now(deployed, "t1", "user-1")
    pinned = last_event(deployed, "TenantPin.Pinned")
    assert (answer.version.number, answer.reason) == (3, "pinned")
    assert answer.cause == event_id(pinned)
    assert answer.pin_expires_at == result.value["expires_at"]
    assert answer.rollout is None
    assert resolve_now(deployed, "t2").reason == "rollout"
    # A pin is per environment and per tenant.
    assert refusal(deployed, "t1", env="staging") == (NotFound, "not_deployed")


def test_pin_beats_nothing_deployed(record: Any) -> None:
    record.new_prompt("bot", "one")
    record.app.pin(WS, "t1", "bot", "staging", 1, record.bob)
    assert resolve_now(record, "t1", env="staging").reason == "pinned"
    assert refusal(record, "t2", env="staging") == (NotFound, "not_deployed")


def test_expired_pin_is_ignored_from_its_expiry_on(deployed: Any) -> None:
    expires = deployed.app.pin(WS, "t1", "bot", "production", 2, deployed.bob, ttl_seconds=300)
    expires_at = expires.value["expires_at"]
    tick = timedelta(microseconds=1)
    assert resolve_now(deployed, "t1", at=expires_at - tick).reason == "pinned"
    for at in (expires_at, expires_at + tick, expires_at + timedelta(days=400)):
        answer = resolve_now(deployed, "t1", at=at)
        assert (answer.version.number, answer.reason) == (1, "promoted")
    # An unpinned pin is ignored at once.
    deployed.app.pin(WS, "t2", "bot", "production", 2, deployed.bob)
    deployed.app.unpin(WS, "t2", "bot", "production", deployed.bob)
    assert resolve_now(deployed, "t2").reason == "promoted"


def test_rollout_arms_follow_the_bucket(deployed: Any) -> None:
    deployed.app.start_rollout(WS, "bot", "production", 2, 0.3, deployed.bob)
    started = last_event(deployed, "Deployment.RolloutStarted")
    state = fold(deployed)
    arms = {"candidate": 0, "baseline": 0}
    for i in range(400):
        tenant = f"tenant-{i}"
        answer = resolve(state, WS, "bot", "production", tenant, None, deployed.clock.now)
        place = own_bucket(started.rollout_id, tenant)
        arm = "candidate" if place < 0.3 else "baseline"
        arms[arm] += 1
        assert answer.reason == "rollout"
        assert answer.cause == event_id(started)
        assert answer.version.number == (2 if arm == "candidate" else 1)
        decision = answer.rollout
        assert decision is not None
        assert (decision.arm, decision.bucket, decision.share) == (arm, place, 0.3)
        assert (decision.rollout_id, decision.key_by) == (started.rollout_id, "tenant")
        assert (decision.baseline, decision.candidate) == (1, 2)
    assert arms["candidate"] > 60 and arms["baseline"] > 200
    deployed.app.adjust_rollout(WS, "bot", "production", 0.6, deployed.bob)
    adjusted = last_event(deployed, "Deployment.RolloutAdjusted")
    answer = resolve_now(deployed, "tenant-0")
    assert answer.cause == event_id(adjusted)
    assert answer.rollout.share == 0.6


@pytest.mark.parametrize("key_by", ["user", "request"])
def test_routing_key_rollouts(deployed: Any, key_by: str) -> None:
    deployed.app.start_rollout(WS, "bot", "production", 2, 0.5, deployed.bob, key_by=key_by)
    rollout_id = last_event(deployed, "Deployment.RolloutStarted").rollout_id
    state = fold(deployed)
    now = deployed.clock.now
    # Without a routing key: the baseline, and no bucket.
    for tenant in ("t1", "t2", None):
        answer = resolve(state, WS, "bot", "production", tenant, None, now)
        assert (answer.version.number, answer.reason) == (1, "rollout")
        assert answer.rollout.arm == "baseline" and answer.rollout.bucket is None
    # With one: the routing key decides, whatever the tenant.
    for i in range(200):
        key = f"user-{i}"
        expected = 2 if own_bucket(rollout_id, key) < 0.5 else 1
        for tenant in ("t1", "t2", None):
            answer = resolve(state, WS, "bot", "production", tenant, key, now)
            assert answer.version.number == expected
            assert answer.rollout.bucket == own_bucket(rollout_id, key)


def test_tenant_rollout_without_tenant_gets_the_baseline(deployed: Any) -> None:
    deployed.app.start_rollout(WS, "bot", "production", 2, 0.99, deployed.bob)
    answer = resolve_now(deployed, None, "user-1")
    assert answer.version.number == 1
    assert (answer.rollout.arm, answer.rollout.bucket) == ("baseline", None)


def test_nothing_deployed_unknown_prompt_and_environment(record: Any) -> None:
    record.new_prompt("bot", "one")
    error_of = refusal
    assert error_of(record, "t1") == (NotFound, "not_deployed")
    assert error_of(record, "t1", prompt="ghost") == (NotFound, "prompt_not_found")
    assert error_of(record, "t1", env="qa") == (NotFound, "environment_not_found")
    with pytest.raises(NotFound) as caught:
        resolve(fold(record), "globex", "bot", "production", None, None, record.clock.now)
    assert caught.value.code == "prompt_not_found"
    # A pending promotion request serves nothing yet.
    record.app.set_policy(WS, "production", EnvironmentPolicy(required_approvals=1), record.bob)
    record.app.promote(WS, "bot", "production", 1, record.bob)
    assert error_of(record, "t1") == (NotFound, "not_deployed")
    with pytest.raises(NotFound) as caught:
        resolve_now(record, "t1")
    assert "'bot'" in caught.value.detail and "production" in caught.value.detail


def test_environments_added_later_resolve(deployed: Any) -> None:
    assert refusal(deployed, "t1", env="canary") == (NotFound, "environment_not_found")
    envs = ["development", "staging", "canary", "production"]
    deployed.app.set_environments(WS, envs, deployed.bob, None)
    assert refusal(deployed, "t1", env="canary") == (NotFound, "not_deployed")
    deployed.app.promote(WS, "bot", "canary", 2, deployed.bob)
    assert resolve_now(deployed, "t1", env="canary").version.number == 2


def test_rollback_and_abort_answers(deployed: Any) -> None:
    app = deployed.app
    app.start_rollout(WS, "bot", "production", 2, 0.99, deployed.bob)
    app.abort_rollout(WS, "bot", "production", deployed.bob)
    answer = resolve_now(deployed, "t1")
    assert (answer.version.number, answer.reason) == (1, "promoted")
    app.promote(WS, "bot", "production", 3, deployed.bob)
    app.rollback(WS, "bot", "production", "bad", deployed.bob)
    answer = resolve_now(deployed, "t1")
    assert (answer.version.number, answer.reason) == (1, "promoted")
    assert answer.cause == event_id(last_event(deployed, "Deployment.RolledBack"))


def test_state_folded_by_a_second_instance_answers_the_same(deployed: Any) -> None:
    deployed.app.start_rollout(WS, "bot", "production", 2, 0.4, deployed.bob)
    deployed.app.pin(WS, "t7", "bot", "production", 3, deployed.bob)
    ours, theirs = fold(deployed), fold(deployed, deployed.second_app())
    later = deployed.clock.now + timedelta(hours=1)
    for i in range(300):
        tenant = f"t{i}"
        a = resolve(ours, WS, "bot", "production", tenant, None, deployed.clock.now)
        b = resolve(theirs, WS, "bot", "production", tenant, None, later)
        assert (a.version.number, a.reason, a.cause) == (b.version.number, b.reason, b.cause)


# --------------------------------------------------------------------------- bucketing


def rollout_state(rollout_id: str, share: float, key_by: str = "tenant") -> ResolutionState:
    def version(n: int) -> VersionView:
        return VersionView(n, {"type": "text", "text": str(n)}, f"h{n}", [], f"e{n}")

    rollout = RolloutView(rollout_id, 1, 2, share, key_by, "started")
    return ResolutionState(
        workspaces={WS: WorkspaceView(WS, ["production"])},
        prompts={(WS, "bot"): PromptView(WS, "bot", versions={1: version(1), 2: version(2)})},
        deployments={(WS, "bot", "production"): DeploymentView(1, rollout, "promoted")},
    )


AT = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
ROLLOUT_A = "6f1c1c0e3b0d4c54a3f0a7d2c9e8b111"
ROLLOUT_B = "0a9b8c7d6e5f40312233445566778899"


def test_bucket_is_sha256_of_salt_and_key() -> None:
    for key in ("acme", "", "ünïcode", "a:b", "x" * 300):
        assert bucket(ROLLOUT_A, key) == own_bucket(ROLLOUT_A, key)
        assert 0 <= bucket(ROLLOUT_A, key) < 1
    assert bucket(ROLLOUT_A, "acme") != bucket(ROLLOUT_B, "acme")


@pytest.mark.parametrize("share", [0.01, 0.1, 0.5, 0.9])
def test_candidate_share_within_half_a_point(share: float) -> None:
    state = rollout_state(ROLLOUT_A, share)
    candidates = 0
    for i in range(KEYS):
        answer = resolve(state, WS, "bot", "production", f"tenant-{i}", None, AT)
        candidates += answer.version.number == 2
    assert abs(candidates / KEYS - share) <= 0.005, candidates / KEYS


@pytest.mark.parametrize("key_by", ["user", "request"])
def test_candidate_share_by_routing_key(key_by: str) -> None:
    state = rollout_state(ROLLOUT_B, 0.25, key_by)
    candidates = sum(
        resolve(state, WS, "bot", "production", "one-tenant", f"k{i}", AT).version.number == 2
        for i in range(KEYS)
    )
    assert abs(candidates / KEYS - 0.25) <= 0.005


def test_a_key_always_gets_the_same_arm_for_the_same_rollout() -> None:
    first = rollout_state(ROLLOUT_A, 0.5)
    again = rollout_state(ROLLOUT_A, 0.5)
    later = AT + timedelta(days=90)
    for i in range(5_000):
        tenant = f"tenant-{i}"
        arms = {
            resolve(first, WS, "bot", "production", tenant, None, AT).rollout.arm,
            resolve(first, WS, "bot", "production", tenant, None, later).rollout.arm,
            resolve(again, WS, "bot", "production", tenant, None, AT).rollout.arm,
            resolve(again, WS, "bot", "production", tenant, "some-user", AT).rollout.arm,
        }
        assert len(arms) == 1, tenant


def test_raising_the_share_never_moves_a_candidate_back() -> None:
    shares = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
    previous: set[str] = set()
    for share in shares:
        state = rollout_state(ROLLOUT_A, share)
        candidates = {
            f"t{i}"
            for i in range(20_000)
            if resolve(state, WS, "bot", "production", f"t{i}", None, AT).rollout.arm == "candidate"
        }
        assert previous <= candidates, share
        assert len(candidates) > len(previous)
        previous = candidates


def test_raising_the_share_through_the_application(deployed: Any) -> None:
    deployed.app.start_rollout(WS, "bot", "production", 2, 0.1, deployed.bob)

    def candidates() -> set[str]:
        state, now = fold(deployed), deployed.clock.now
        return {
            f"t{i}"
            for i in range(2_000)
            if resolve(state, WS, "bot", "production", f"t{i}", None, now).rollout.arm
            == "candidate"
        }

    low = candidates()
    deployed.app.adjust_rollout(WS, "bot", "production", 0.5, deployed.bob)
    high = candidates()
    assert low < high
    assert 100 < len(low) < 300 and 850 < len(high) < 1150


def test_two_rollouts_bucket_independently() -> None:
    keys = [f"tenant-{i}" for i in range(KEYS)]
    a = [bucket(ROLLOUT_A, key) for key in keys]
    b = [bucket(ROLLOUT_B, key) for key in keys]
    assert abs(statistics.correlation(a, b)) < 0.02
    both = sum(x < 0.5 and y < 0.5 for x, y in zip(a, b, strict=True))
    assert abs(both / KEYS - 0.25) < 0.01
    # And a rollout gets a new id when started again, so its split is a new draw.
    state_a, state_b = rollout_state(ROLLOUT_A, 0.5), rollout_state(ROLLOUT_B, 0.5)
    differ = sum(
        resolve(state_a, WS, "bot", "production", key, None, AT).rollout.arm
        != resolve(state_b, WS, "bot", "production", key, None, AT).rollout.arm
        for key in keys[:10_000]
    )
    assert 4_500 < differ < 5_500
