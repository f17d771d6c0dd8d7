"""Concurrent writers on PostgreSQL: optimistic concurrency loses no event and lets exactly one
command through per expected revision.

Each thread has its own `PromptRecord` (its own connections and aggregate cache) on one schema,
as separate API replicas would. A barrier lines the threads up before every round so that
their commands really collide.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import Conflict
from promptrecord.domain.resolution import ResolutionState, resolve
from promptrecord.settings import Settings

THREADS = 20
ROUNDS = 10
WS = "acme"
MODEL = {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929"}


def text(body: str) -> dict[str, Any]:
    return {"type": "text", "text": body, "model": MODEL}


def all_events(app: PromptRecord) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    while True:
        page = list(app.read_events(out[-1][0] if out else 0, 500))
        out += page
        if len(page) < 500:
            return out


@pytest.fixture
def apps(postgres_settings: Settings) -> Any:
    env = {
        **postgres_settings.eventsourcing_env(),
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "1",
    }
    setup = PromptRecord(env=env)
    setup.create_workspace(WS)
    setup.create_prompt(WS, Actor("key-alice", "alice"), name="bot", content=text("seed"))
    replicas = [PromptRecord(env=env) for _ in range(THREADS)]
    try:
        yield setup, replicas
    finally:
        for app in [setup, *replicas]:
            app.close()


def run_threads(work: Callable[[int], None]) -> list[str]:
    """Run `work(i)` in THREADS threads; returns the errors any of them raised."""
    errors: list[str] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:
            errors.append(f"thread {i}: {exc!r}")
            BARRIER.abort()

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    return errors


BARRIER = threading.Barrier(THREADS)


@pytest.fixture(autouse=True)
def _fresh_barrier() -> None:
    BARRIER.reset()


def test_twenty_committers_lose_nothing_and_one_wins_per_revision(apps: Any) -> None:
    setup, replicas = apps
    attempts: list[tuple[int, str, str, Any]] = []  # expected revision, content, outcome, value
    lock = threading.Lock()

    def work(i: int) -> None:
        app = replicas[i]
        actor = Actor(f"key-{i}", f"writer {i}")
        for round_ in range(ROUNDS):
            revision = app.prompt(WS, "bot").version
            body = f"thread {i} round {round_}"
            BARRIER.wait(timeout=60)
            try:
                result = app.commit_version(
                    WS, "bot", text(body), actor, expected_revision=revision
                )
                outcome, value = "ok", result
            except Conflict as exc:
                outcome, value = exc.code, exc
            with lock:
                attempts.append((revision, body, outcome, value))

    assert run_threads(work) == []
    assert len(attempts) == THREADS * ROUNDS
    outcomes = Counter(outcome for _, _, outcome, _ in attempts)
    assert set(outcomes) <= {"ok", "stale_revision", "concurrent_change"}, outcomes
    # The commands really collided: some lost the race at the store, not at the check.
    assert outcomes["concurrent_change"] > 0, outcomes

    by_revision: dict[int, list[str]] = defaultdict(list)
    for revision, _, outcome, _ in attempts:
        by_revision[revision].append(outcome)
    for revision, seen in by_revision.items():
        assert seen.count("ok") == 1, f"revision {revision}: {Counter(seen)}"

    successes = [(rev, body, value) for rev, body, outcome, value in attempts if outcome == "ok"]
    assert len(successes) >= ROUNDS  # each round's winner reads the newest revision next
    for revision, _, result in successes:
        assert result.revision == revision + 1
        assert result.value[1] is True

    # No event lost: the log holds exactly the seed version and one version per success.
    committed = [
        event
        for _, event in all_events(setup)
        if type(event).__qualname__ == "Prompt.VersionCommitted"
    ]
    assert len(committed) == 1 + len(successes)
    assert [event.number for event in committed] == list(range(1, len(committed) + 1))
    assert [event.content["text"] for event in committed[1:]] == [
        body for _, body, _ in sorted(successes, key=lambda s: s[2].value[0])
    ]
    numbers = sorted(result.value[0] for _, _, result in successes)
    assert numbers == list(range(2, len(successes) + 2))
    # Every replica, and a fresh read, agree on the head.
    head = len(committed)
    assert setup.prompt(WS, "bot").head["number"] == head
    assert {app.prompt(WS, "bot").version for app in replicas} == {head + 1}


def test_twenty_deployers_on_one_deployment(apps: Any) -> None:
    setup, replicas = apps
    actor = Actor("key-bob", "bob")
    for body in ("two", "three", "four"):
        setup.commit_version(WS, "bot", text(body), actor)
    setup.promote(WS, "bot", "production", 1, actor)
    attempts: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        app = replicas[i]
        for _ in range(ROUNDS // 2):
            deployment = app.deployment(WS, "bot", "production")
            assert deployment is not None
            revision, serving = deployment.version, deployment.serving
            target = 1 + (serving + i) % 4  # never the one serving
            if target == serving:
                target = 1 + serving % 4
            BARRIER.wait(timeout=60)
            try:
                app.promote(
                    WS,
                    "bot",
                    "production",
                    target,
                    Actor(f"key-{i}", f"deployer {i}"),
                    expected_revision=revision,
                )
                outcome = "ok"
            except Conflict as exc:
                outcome = exc.code
            with lock:
                attempts.append((revision, target, outcome))

    assert run_threads(work) == []
    assert {outcome for *_, outcome in attempts} <= {"ok", "stale_revision", "concurrent_change"}
    wins = sorted((rev, target) for rev, target, outcome in attempts if outcome == "ok")
    revisions = [rev for rev, _ in wins]
    assert len(revisions) == len(set(revisions))
    assert {rev for rev, _, _ in attempts} == set(revisions)
    # The log has one Promoted per win, in revision order, and the state folded from it
    # serves the last winner's version.
    state = ResolutionState()
    promoted = []
    for position, event in all_events(setup):
        state.apply(event, position)
        if type(event).__qualname__ == "Deployment.Promoted":
            promoted.append(event.version)
    assert promoted == [1] + [target for _, target in wins]
    answer = resolve(state, WS, "bot", "production", "t1", None, setup.clock())
    assert answer.version.number == wins[-1][1]


def test_commands_on_different_aggregates_never_conflict(apps: Any) -> None:
    setup, replicas = apps
    setup.promote(WS, "bot", "production", 1, Actor("key-bob", "bob"))

    def work(i: int) -> None:
        app = replicas[i]
        actor = Actor(f"key-{i}", f"pinner {i}")
        for round_ in range(ROUNDS // 2):
            BARRIER.wait(timeout=60)
            app.pin(WS, f"tenant-{i}-{round_}", "bot", "production", 1, actor)

    assert run_threads(work) == []
    pinned = [e for _, e in all_events(setup) if type(e).__qualname__ == "TenantPin.Pinned"]
    assert len(pinned) == THREADS * (ROUNDS // 2)
    positions = [position for position, _ in all_events(setup)]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_twenty_threads_sharing_one_instance(apps: Any) -> None:
    """An API process runs commands for many requests at once through one instance (and one
    aggregate cache): the same guarantees hold."""
    setup, _ = apps
    attempts: list[tuple[int, str]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        actor = Actor(f"key-{i}", f"writer {i}")
        for round_ in range(ROUNDS):
            revision = setup.prompt(WS, "bot").version
            BARRIER.wait(timeout=60)
            try:
                setup.commit_version(
                    WS, "bot", text(f"shared {i} {round_}"), actor, expected_revision=revision
                )
                outcome = "ok"
            except Conflict as exc:
                outcome = exc.code
            with lock:
                attempts.append((revision, outcome))

    assert run_threads(work) == []
    assert {outcome for _, outcome in attempts} <= {"ok", "stale_revision", "concurrent_change"}
    wins = [revision for revision, outcome in attempts if outcome == "ok"]
    assert len(wins) == len(set(wins)) and set(wins) == {revision for revision, _ in attempts}
    committed = [
        e for _, e in all_events(setup) if type(e).__qualname__ == "Prompt.VersionCommitted"
    ]
    assert [e.number for e in committed] == list(range(1, len(wins) + 2))
    assert setup.prompt(WS, "bot").head["number"] == len(wins) + 1
    # A fresh instance, with nothing cached, reads the same prompt.
    fresh = PromptRecord(env=dict(setup.env))
    try:
        assert fresh.prompt(WS, "bot").versions == setup.prompt(WS, "bot").versions
    finally:
        fresh.close()
