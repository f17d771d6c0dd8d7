"""Audit answers from replay of the log, held against a brute-force model on generated histories.

Hypothesis draws a history of commands run against the real application with a clock the test
drives: commits, promotions, rollouts keyed by tenant, user or request and adjusted many
times, completions, aborts, rollbacks during rollouts, pins with short expiries (so they lapse
between events), unpins, archive and unarchive, an environment added late, and clock steps
(or none, so several events share a time). The model below is written for this test: after
every command that wrote an event it records, at the command's time, what each tenant should
get — with its own sha256 bucketing — and which events cause it. Then, at many sampled times
(every event time, just before and after it, every pin expiry and the instant before it):

- `answer_at` equals the model, refusals included;
- `intervals` over a window covering the history tiles it end-exclusively, adjacent intervals
  differ, and `answer_at` at each `valid_from`, inside, and at the last instant before
  `valid_to` gives that interval's answer.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid5

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptrecord.domain.application import CommandResult, PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import Conflict, DomainError, NotFound
from promptrecord.domain.resolution import bucket
from promptrecord.projections.audit import AuditAnswer, Served
from promptrecord.projections.replay import (
    TenantHistory,
    answer_at,
    intervals,
    replay_state,
)
from promptrecord.settings import Settings

START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
ALICE = Actor("key-alice", "alice")
BOB = Actor("key-bob", "bob", on_behalf_of="bob@example.com")
MODEL = {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929"}

# (tenant, prompt, environment, routing key) asked about in every history.
QUESTIONS = [
    ("t0", "alpha", "production", None),
    ("t1", "alpha", "production", "u1"),
    ("t2", "alpha", "staging", None),
    ("t0", "alpha", "qa", None),
    ("t1", "beta", "production", None),
]


def text(body: str) -> dict[str, Any]:
    return {"type": "text", "text": body, "model": MODEL}


class Clock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# --------------------------------------------------------------------------- the model


def model_bucket(rollout_id: str, key: str) -> float:
    digest = hashlib.sha256(f"{rollout_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def model_event_id(event: Any) -> str:
    return str(uuid5(event.originator_id, str(event.originator_version)))


@dataclass
class ModelDeployment:
    stack: list[int] = field(default_factory=list)
    rollout: dict[str, Any] | None = None  # id, baseline, candidate, share, key_by
    cause: str | None = None  # the event `promoted` answers cite
    serving_event: str | None = None  # the last event that put a version in place
    rollout_events: list[str] = field(default_factory=list)  # started, latest adjusted


@dataclass
class ModelState:
    environments: list[str]
    hashes: dict[str, dict[int, str]] = field(default_factory=dict)  # prompt -> version -> hash
    archived: dict[str, str | None] = field(default_factory=dict)  # prompt -> Archived event
    deployments: dict[tuple[str, str], ModelDeployment] = field(default_factory=dict)
    pins: dict[tuple[str, str, str], tuple[int, datetime, str]] = field(default_factory=dict)


Expected = tuple[Any, ...]


def model_answer(
    state: ModelState | None,
    tenant: str,
    prompt: str,
    env: str,
    key: str | None,
    at: datetime,
) -> tuple[Expected, set[str]]:
    """(the answer, the ids of the events that cause it), or a refusal and its cause."""
    if state is None or prompt not in state.hashes:
        return ("refused", "prompt_not_found", None), set()
    archived = state.archived.get(prompt)
    if archived is not None:
        return ("refused", "prompt_archived", archived), {archived}
    if env not in state.environments:
        return ("refused", "environment_not_found", None), set()
    pin = state.pins.get((tenant, prompt, env))
    if pin is not None and at < pin[1]:
        number, expires, pinned = pin
        return (number, "pinned", None, expires, pinned, state.hashes[prompt][number]), {pinned}
    deployment = state.deployments.get((prompt, env))
    if deployment is None or not deployment.stack:
        return ("refused", "not_deployed", None), set()
    assert deployment.serving_event is not None and deployment.cause is not None
    rollout = deployment.rollout
    if rollout is None:
        number = deployment.stack[-1]
        expected = (number, "promoted", None, None, deployment.cause, state.hashes[prompt][number])
        return expected, {deployment.cause, deployment.serving_event}
    routing = tenant if rollout["key_by"] == "tenant" else key
    place = model_bucket(rollout["id"], routing) if routing is not None else None
    arm = None if place is None else "candidate" if place < rollout["share"] else "baseline"
    number = None if arm is None else rollout[arm]
    split = (rollout["baseline"], rollout["candidate"], rollout["share"], rollout["key_by"])
    cause = deployment.rollout_events[-1]
    content = state.hashes[prompt][number] if number is not None else None
    expected = (number, "rollout", (*split, place, arm), None, cause, content)
    return expected, {deployment.serving_event, *deployment.rollout_events}


def observed(answer: AuditAnswer) -> Expected:
    split = answer.rollout
    shown = None
    if split is not None:
        shown = (
            split.baseline,
            split.candidate,
            split.share,
            split.key_by,
            split.bucket,
            split.arm,
        )
    return (
        answer.version,
        answer.reason,
        shown,
        answer.pin_expires_at,
        answer.cause,
        answer.content_hash,
    )


def served_or_refused(history: TenantHistory, at: datetime, key: str | None) -> Served:
    """`answer_at` as an interval states it: the answer proper, or the refusal and its cause."""
    try:
        return history.answer_at(at, key).served
    except DomainError as refusal:
        events = refusal.extra.get("events") or [{}]
        return Served.refused(refusal.code, events[0].get("id"))


# --------------------------------------------------------------------------- the histories


class History:
    """Drives the application from step seeds and keeps the model's timeline beside it."""

    def __init__(self, app: PromptRecord, clock: Clock, ws: str) -> None:
        self.app, self.clock, self.ws = app, clock, ws
        self.state = ModelState(environments=["staging", "production"])
        self.timeline: list[tuple[datetime, ModelState]] = []
        self.commits = 0
        app.create_workspace(ws, environments=["staging", "production"])
        clock.advance(30)
        self.create("alpha")

    def model_at(self, at: datetime) -> ModelState | None:
        found = None
        for when, state in self.timeline:  # in time order: the clock never goes back
            if when > at:
                break
            found = state
        return found

    def _event_at(self, position: int) -> Any:
        [(found, event)] = list(self.app.read_events(position - 1, 1))
        assert found == position
        return event

    def run(self, command: Callable[[], CommandResult], change: Callable[[Any, str], None]) -> None:
        """Run a command; if it wrote, change the model by its last event and note the time."""
        try:
            result = command()
        except DomainError:
            return
        if result.position is None:
            return
        event = self._event_at(result.position)
        change(event, model_event_id(event))
        self.timeline.append((self.clock.now, copy.deepcopy(self.state)))

    # ---- the commands, each with what it does to the model

    def create(self, prompt: str) -> None:
        self.commits += 1

        def change(event: Any, ident: str) -> None:
            self.state.hashes[prompt] = {1: event.content_hash}
            self.state.archived[prompt] = None

        self.run(
            lambda: self.app.create_prompt(
                self.ws, ALICE, name=prompt, content=text(f"c{self.commits}")
            ),
            change,
        )

    def commit(self, prompt: str) -> None:
        self.commits += 1

        def change(event: Any, ident: str) -> None:
            self.state.hashes[prompt][event.number] = event.content_hash

        self.run(
            lambda: self.app.commit_version(self.ws, prompt, text(f"c{self.commits}"), ALICE),
            change,
        )

    def _deployment(self, prompt: str, env: str) -> ModelDeployment:
        return self.state.deployments.setdefault((prompt, env), ModelDeployment())

    def _serve(self, prompt: str, env: str, number: int, ident: str) -> None:
        deployment = self._deployment(prompt, env)
        if not deployment.stack or deployment.stack[-1] != number:
            deployment.stack.append(number)
        deployment.rollout, deployment.rollout_events = None, []
        deployment.cause = deployment.serving_event = ident

    def promote(self, prompt: str, env: str, number: int) -> None:
        self.run(
            lambda: self.app.promote(self.ws, prompt, env, number, BOB, reason="ship"),
            lambda event, ident: self._serve(prompt, env, number, ident),
        )

    def start_rollout(self, prompt: str, env: str, number: int, share: float, key_by: str) -> None:
        def change(event: Any, ident: str) -> None:
            deployment = self._deployment(prompt, env)
            baseline = deployment.stack[-1]
            deployment.rollout = {
                "id": event.rollout_id,
                "baseline": baseline,
                "candidate": number,
                "share": share,
                "key_by": key_by,
            }
            deployment.rollout_events = [ident]

        self.run(
            lambda: self.app.start_rollout(
                self.ws, prompt, env, number, share, BOB, key_by=key_by, reason="canary"
            ),
            change,
        )

    def adjust_rollout(self, prompt: str, env: str, share: float) -> None:
        def change(event: Any, ident: str) -> None:
            deployment = self._deployment(prompt, env)
            assert deployment.rollout is not None
            deployment.rollout["share"] = share
            deployment.rollout_events = [deployment.rollout_events[0], ident]

        self.run(
            lambda: self.app.adjust_rollout(self.ws, prompt, env, share, BOB, reason="widen"),
            change,
        )

    def complete_rollout(self, prompt: str, env: str) -> None:
        def change(event: Any, ident: str) -> None:
            rollout = self._deployment(prompt, env).rollout
            assert rollout is not None
            self._serve(prompt, env, rollout["candidate"], ident)

        self.run(lambda: self.app.complete_rollout(self.ws, prompt, env, BOB), change)

    def abort_rollout(self, prompt: str, env: str) -> None:
        def change(event: Any, ident: str) -> None:
            deployment = self._deployment(prompt, env)
            deployment.rollout, deployment.rollout_events = None, []
            deployment.cause = ident  # serving_event stays: the baseline kept serving

        self.run(lambda: self.app.abort_rollout(self.ws, prompt, env, BOB), change)

    def rollback(self, prompt: str, env: str, to: int | None) -> None:
        def change(event: Any, ident: str) -> None:
            deployment = self._deployment(prompt, env)
            if to is None and deployment.rollout is None:
                deployment.stack.pop()  # back to what served before
            target = to if to is not None else deployment.stack[-1]
            self._serve(prompt, env, target, ident)

        self.run(
            lambda: self.app.rollback(self.ws, prompt, env, "incident", BOB, to_version=to),
            change,
        )

    def pin(self, tenant: str, prompt: str, env: str, number: int, ttl: int) -> None:
        expires = self.clock.now + timedelta(seconds=ttl)

        def change(event: Any, ident: str) -> None:
            self.state.pins[(tenant, prompt, env)] = (number, expires, ident)

        self.run(
            lambda: self.app.pin(
                self.ws, tenant, prompt, env, number, ALICE, reason="hold", ttl_seconds=ttl
            ),
            change,
        )

    def unpin(self, tenant: str, prompt: str, env: str) -> None:
        self.run(
            lambda: self.app.unpin(self.ws, tenant, prompt, env, ALICE, reason="done"),
            lambda event, ident: self.state.pins.pop((tenant, prompt, env)),
        )

    def archive(self, prompt: str, archived: bool) -> None:
        def change(event: Any, ident: str) -> None:
            self.state.archived[prompt] = ident if archived else None

        if archived:
            self.run(lambda: self.app.archive(self.ws, prompt, "retire", ALICE, None), change)
        else:
            self.run(lambda: self.app.unarchive(self.ws, prompt, "revive", ALICE, None), change)

    def add_qa(self) -> None:
        envs = ["staging", "production", "qa"]

        def change(event: Any, ident: str) -> None:
            self.state.environments = envs

        self.run(lambda: self.app.set_environments(self.ws, envs, ALICE, None), change)

    # ---- one step, chosen by a seed

    def step(self, seed: int) -> None:
        pick = random.Random(seed)
        prompt = pick.choices(["alpha", "beta"], [85, 15])[0]
        env = pick.choices(["production", "staging", "qa"], [60, 35, 5])[0]
        tenant = pick.choice(["t0", "t1", "t2"])
        have = len(self.state.hashes.get(prompt, {}))
        deployment = self.state.deployments.get((prompt, env))
        serving = deployment.stack[-1] if deployment and deployment.stack else None
        # Mostly a version that exists and does not serve there, so commands mostly succeed.
        others = [n for n in range(1, have + 1) if n != serving]
        number = pick.choice(others) if others and pick.random() < 0.9 else pick.randint(1, 9)
        share = pick.choice([0.1, 0.3, 0.5, 0.7, 0.9, round(pick.uniform(0.01, 0.99), 3)])
        rolling = deployment is not None and deployment.rollout is not None
        archived = self.state.archived.get(prompt) is not None
        weights = {
            "commit": 8,
            "promote": 12,
            "start_rollout": 3 if rolling else 14,
            "adjust_rollout": 16 if rolling else 1,
            "complete_rollout": 4 if rolling else 1,
            "abort_rollout": 3 if rolling else 1,
            "rollback": 5,
            "pin": 10,
            "unpin": 4,
            "archive": 0 if archived else 1,
            "unarchive": 20 if archived else 0,
            "create_beta": 3 if "beta" not in self.state.hashes else 0,
            "add_qa": 1,
            "advance": 18,
        }
        command = pick.choices(list(weights), list(weights.values()))[0]
        if command == "commit":
            self.commit(prompt)
        elif command == "promote":
            self.promote(prompt, env, number)
        elif command == "start_rollout":
            key_by = pick.choices(["tenant", "user", "request"], [50, 30, 20])[0]
            self.start_rollout(prompt, env, number, share, key_by)
        elif command == "adjust_rollout":
            self.adjust_rollout(prompt, env, share)
        elif command == "complete_rollout":
            self.complete_rollout(prompt, env)
        elif command == "abort_rollout":
            self.abort_rollout(prompt, env)
        elif command == "rollback":
            self.rollback(prompt, env, number if pick.random() < 0.3 else None)
        elif command == "pin":
            self.pin(tenant, prompt, env, number, pick.choice([5, 30, 60, 120, 600]))
        elif command == "unpin":
            self.unpin(tenant, prompt, env)
        elif command in ("archive", "unarchive"):
            self.archive(prompt, command == "archive")
        elif command == "create_beta":
            self.create("beta")
        elif command == "add_qa":
            self.add_qa()
        else:
            self.clock.advance(pick.choice([0.5, 1, 5, 29, 60, 61, 300]))

    # ---- the checks

    def sample_times(self) -> list[datetime]:
        times = {START - timedelta(hours=1), self.clock.now + timedelta(hours=1)}
        for when, state in self.timeline:
            times.update({when - TICK, when, when + timedelta(milliseconds=500)})
            for _, expires, _ in state.pins.values():
                times.update({expires - TICK, expires})
        return sorted(times)

    def check(self, checks_module_functions: bool = True) -> None:
        times = self.sample_times()
        for tenant, prompt, env, key in QUESTIONS:
            history = TenantHistory.read(self.app, self.ws, tenant, prompt, env)
            for at in times:
                self.check_answer(history, tenant, prompt, env, key, at)
            self.check_intervals(history, tenant, prompt, env, key)
        if checks_module_functions:  # the reading path, at a few times
            tenant, prompt, env, key = QUESTIONS[1]
            history = TenantHistory.read(self.app, self.ws, tenant, prompt, env)
            for at in times[:: max(1, len(times) // 5)]:
                assert served_or_refused(history, at, key) == _module_answer(
                    self.app, self.ws, tenant, prompt, env, key, at
                )
            window = (START - timedelta(minutes=5), self.clock.now + timedelta(minutes=15))
            assert history.intervals(*window, key) == intervals(
                self.app, self.ws, tenant, prompt, env, *window, key
            )

    def check_answer(
        self,
        history: TenantHistory,
        tenant: str,
        prompt: str,
        env: str,
        key: str | None,
        at: datetime,
    ) -> None:
        expected, causes = model_answer(self.model_at(at), tenant, prompt, env, key, at)
        where = f"{tenant} {prompt} {env} key={key} at +{(at - START).total_seconds()}s"
        try:
            answer = history.answer_at(at, key)
        except DomainError as refusal:
            events = [event["id"] for event in refusal.extra.get("events", [])]
            actual: Expected = ("refused", refusal.code, events[0] if events else None)
            assert actual == expected, where
            return
        assert observed(answer) == expected, where
        assert {event.id for event in answer.events} == causes, where
        positions = [event.position for event in answer.events]
        assert positions == sorted(positions)
        assert all(event.timestamp <= at for event in answer.events), where

    def check_intervals(
        self, history: TenantHistory, tenant: str, prompt: str, env: str, key: str | None
    ) -> None:
        start, end = START - timedelta(minutes=5), self.clock.now + timedelta(minutes=15)
        try:
            found = history.intervals(start, end, key)
        except NotFound as refusal:
            # Only a prompt or environment that never existed in the window has no intervals.
            assert refusal.code in ("prompt_not_found", "environment_not_found")
            last = self.model_at(end)
            assert last is None or prompt not in last.hashes or env not in last.environments
            return
        assert found[0].valid_from == start and found[-1].valid_to is None
        for before, after in itertools.pairwise(found):
            assert before.valid_to == after.valid_from and before.valid_from < after.valid_from
            assert before.served != after.served, f"{before} and {after} do not differ"
        for interval in found:
            until = interval.valid_to or end
            inside = interval.valid_from + (until - interval.valid_from) / 2
            for at in (interval.valid_from, inside, until - TICK):
                assert served_or_refused(history, at, key) == interval.served, (interval, at)
                assert interval.holds_at(at)


def _module_answer(
    app: PromptRecord, ws: str, tenant: str, prompt: str, env: str, key: str | None, at: datetime
) -> Served:
    try:
        return answer_at(app, ws, tenant, prompt, env, at, key).served
    except DomainError as refusal:
        events = refusal.extra.get("events") or [{}]
        return Served.refused(refusal.code, events[0].get("id"))


HISTORY_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
STEPS = st.lists(st.integers(0, 2**32 - 1), min_size=30, max_size=120)


@pytest.fixture
def sqlite_app_factory() -> Iterator[Callable[[Clock], PromptRecord]]:
    folders: list[str] = []
    apps: list[PromptRecord] = []

    def open_app(clock: Clock) -> PromptRecord:
        folder = tempfile.mkdtemp(prefix="promptrecord-audit-")
        folders.append(folder)
        url = f"sqlite:///{folder}/audit.db"
        app = PromptRecord(env=Settings(database_url=url).eventsourcing_env(), clock=clock)
        apps.append(app)
        return app

    yield open_app
    for app in apps:
        app.close()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def test_replay_answers_equal_the_model_on_sqlite(
    sqlite_app_factory: Callable[[Clock], PromptRecord],
) -> None:
    @settings(max_examples=40, **HISTORY_SETTINGS)
    @given(steps=STEPS)
    def run(steps: list[int]) -> None:
        clock = Clock()
        history = History(sqlite_app_factory(clock), clock, "acme")
        for seed in steps:
            history.step(seed)
        history.check()

    run()


def test_replay_answers_equal_the_model_on_postgres(postgres_settings: Settings) -> None:
    # One schema for the run; each example works in a workspace of its own.
    env = {**postgres_settings.eventsourcing_env(), "POSTGRES_POOL_SIZE": "2"}
    clock = Clock()
    app = PromptRecord(env=env, clock=clock)
    examples = iter(range(1000))

    @settings(max_examples=6, **HISTORY_SETTINGS)
    @given(steps=STEPS)
    def run(steps: list[int]) -> None:
        clock.now = START
        history = History(app, clock, f"w{next(examples)}")
        for seed in steps:
            history.step(seed)
        history.check()

    try:
        run()
    finally:
        app.close()


# --------------------------------------------------------------------------- examples


@pytest.fixture
def scene(backend: Settings) -> Iterator[tuple[PromptRecord, Clock]]:
    """An application on each backend, its clock at START, workspace acme, prompt bot v1..v3."""
    clock = Clock()
    app = PromptRecord(env=backend.eventsourcing_env(), clock=clock)
    try:
        app.create_workspace("acme")
        clock.advance(60)
        app.create_prompt("acme", ALICE, name="bot", content=text("one"))
        app.commit_version("acme", "bot", text("two"), ALICE)
        app.commit_version("acme", "bot", text("three"), ALICE)
        clock.advance(60)
        yield app, clock
    finally:
        app.close()


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def test_a_pin_expiring_mid_window_splits_the_interval(scene: Any) -> None:
    app, clock = scene
    app.promote("acme", "bot", "production", 1, BOB, reason="ship")  # at +2 min
    clock.advance(60)
    app.pin("acme", "acme-corp", "bot", "production", 2, ALICE, "validated", ttl_seconds=600)
    clock.advance(3600)
    found = intervals(app, "acme", "acme-corp", "bot", "production", at(0), at(120))
    shape = [(i.valid_from, i.valid_to, i.version, i.reason, i.refusal) for i in found]
    assert shape == [
        (at(0), at(1), None, "refused", "prompt_not_found"),
        (at(1), at(2), None, "refused", "not_deployed"),
        (at(2), at(3), 1, "promoted", None),
        (at(3), at(13), 2, "pinned", None),  # no event at +13: the pin expired
        (at(13), None, 1, "promoted", None),
    ]
    assert found[3].pin_expires_at == at(13) and found[2].cause == found[4].cause
    pinned = answer_at(app, "acme", "acme-corp", "bot", "production", at(12))
    assert (pinned.version, pinned.reason, pinned.pin_expires_at) == (2, "pinned", at(13))
    [event] = pinned.events
    assert event.type == "TenantPin.Pinned" and event.reason == "validated"
    assert event.actor["key_name"] == "alice" and event.timestamp == at(3)
    after = answer_at(app, "acme", "acme-corp", "bot", "production", at(13))
    assert (after.version, after.reason) == (1, "promoted")
    # Another tenant was never pinned: one promoted interval from the promotion on.
    other = intervals(app, "acme", "globex", "bot", "production", at(2), at(120))
    assert [(i.valid_from, i.valid_to, i.version) for i in other] == [(at(2), None, 1)]


def test_a_per_user_rollout_is_answered_with_its_split(scene: Any) -> None:
    app, clock = scene
    app.promote("acme", "bot", "production", 1, BOB)
    clock.advance(60)
    app.start_rollout("acme", "bot", "production", 2, 0.2, BOB, key_by="user", reason="canary")
    clock.advance(60)
    app.adjust_rollout("acme", "bot", "production", 0.5, BOB, reason="looks fine")
    clock.advance(60)
    split = answer_at(app, "acme", "acme-corp", "bot", "production", at(5))
    assert split.version is None and split.is_split and split.content_hash is None
    assert split.rollout is not None
    rollout = split.rollout
    assert (rollout.baseline, rollout.candidate, rollout.share, rollout.key_by) == (
        1,
        2,
        0.5,
        "user",
    )
    assert rollout.bucket is None and rollout.arm is None
    assert [e.type for e in split.events] == [
        "Deployment.Promoted",
        "Deployment.RolloutStarted",
        "Deployment.RolloutAdjusted",
    ]
    assert split.cause == split.events[-1].id
    one_user = answer_at(app, "acme", "acme-corp", "bot", "production", at(5), key="u-7")
    assert one_user.rollout is not None
    place = bucket(one_user.rollout.rollout_id, "u-7")
    assert one_user.rollout.bucket == place
    assert one_user.version == (2 if place < 0.5 else 1)
    assert one_user.rollout.arm == ("candidate" if place < 0.5 else "baseline")
    # The share in force at +3.5 min was the first one.
    earlier = answer_at(app, "acme", "acme-corp", "bot", "production", at(3.5))
    assert earlier.rollout is not None and earlier.rollout.share == 0.2
    found = intervals(app, "acme", "acme-corp", "bot", "production", at(2), at(10))
    assert [(i.version, i.reason, i.rollout and i.rollout.share) for i in found] == [
        (1, "promoted", None),
        (None, "rollout", 0.2),
        (None, "rollout", 0.5),
    ]


def test_refusals_at_a_time_say_what_was_missing_then(scene: Any) -> None:
    app, clock = scene
    with pytest.raises(NotFound) as not_yet:
        answer_at(app, "acme", "acme-corp", "bot", "production", at(0.5))
    assert not_yet.value.code == "prompt_not_found" and "created at" in not_yet.value.detail
    with pytest.raises(NotFound) as undeployed:
        answer_at(app, "acme", "acme-corp", "bot", "production", at(1.5))
    assert undeployed.value.code == "not_deployed"
    assert "nothing has ever been promoted" in undeployed.value.detail
    app.promote("acme", "bot", "production", 1, BOB)
    with pytest.raises(NotFound) as before:
        answer_at(app, "acme", "acme-corp", "bot", "production", at(1.5))
    assert "first promotion there was at 2026-03-14 09:02:00 UTC" in before.value.detail
    clock.advance(60)
    archived = app.archive("acme", "bot", "retired", ALICE, None)
    clock.advance(60)
    app.unarchive("acme", "bot", "needed again", ALICE, None)
    with pytest.raises(Conflict) as refusal:
        answer_at(app, "acme", "acme-corp", "bot", "production", at(3.5))
    assert refusal.value.code == "prompt_archived"
    [event] = refusal.value.extra["events"]
    assert event["type"] == "Prompt.Archived" and event["position"] == archived.position
    assert answer_at(app, "acme", "acme-corp", "bot", "production", at(4)).version == 1
    with pytest.raises(NotFound) as no_env:
        answer_at(app, "acme", "acme-corp", "bot", "qa", at(4))
    assert no_env.value.code == "environment_not_found"
    with pytest.raises(NotFound) as never:
        intervals(app, "acme", "acme-corp", "bot", "qa", at(0), at(10))
    assert never.value.code == "environment_not_found"
    with pytest.raises(NotFound) as ghost:
        intervals(app, "acme", "acme-corp", "ghost", "production", at(0), at(10))
    assert ghost.value.code == "prompt_not_found"
    with pytest.raises(NotFound) as no_workspace:
        answer_at(app, "nobody", "acme-corp", "bot", "production", at(4))
    assert no_workspace.value.code == "workspace_not_found"


def test_a_rollback_during_a_rollout_cites_what_serves(scene: Any) -> None:
    app, clock = scene
    app.promote("acme", "bot", "production", 1, BOB)
    clock.advance(60)
    app.start_rollout("acme", "bot", "production", 3, 0.9, BOB, reason="canary")
    clock.advance(60)
    rolled = app.rollback("acme", "bot", "production", "errors", BOB)
    answer = answer_at(app, "acme", "acme-corp", "bot", "production", at(4))
    assert (answer.version, answer.reason, answer.rollout) == (1, "promoted", None)
    [event] = answer.events
    assert event.type == "Deployment.RolledBack" and event.position == rolled.position
    assert event.reason == "errors" and event.actor["on_behalf_of"] == "bob@example.com"


def test_replay_filters_on_time_where_writers_clocks_disagree(
    scene: Any, backend: Settings
) -> None:
    app, clock = scene
    behind = Clock(clock.now - timedelta(seconds=30))  # a second writer whose clock lags
    lagging = PromptRecord(env=backend.eventsourcing_env(), clock=behind)
    try:
        app.promote("acme", "bot", "production", 1, BOB)  # logged first, at +2:00
        lagging.pin("acme", "acme-corp", "bot", "production", 2, ALICE, ttl_seconds=600)
        # ^ logged after it, but timed +1:30: a replay that stopped at the first later event
        # would miss it.
        app.start_rollout("acme", "bot", "production", 3, 0.5, BOB)  # +2:00
        lagging.adjust_rollout("acme", "bot", "production", 0.7, BOB)  # same aggregate, +1:30
    finally:
        lagging.close()
    pinned = answer_at(app, "acme", "acme-corp", "bot", "production", at(1.75))
    assert (pinned.version, pinned.reason) == (2, "pinned")
    # The adjustment's own time went back: it counts from its aggregate's latest time, +2:00,
    # so it is never folded without the deployment it adjusts.
    with pytest.raises(NotFound) as before:
        answer_at(app, "acme", "globex", "bot", "production", at(1.75))
    assert before.value.code == "not_deployed"
    during = answer_at(app, "acme", "globex", "bot", "production", at(2))
    assert during.rollout is not None and during.rollout.share == 0.7
    state = replay_state(app, at(1.75), workspace="acme")
    assert ("acme", "bot", "production") not in state.deployments
    assert ("acme", "acme-corp", "bot", "production") in state.pins
    later = replay_state(app, at(2), workspace="acme").deployments[("acme", "bot", "production")]
    assert later.serving == 1 and later.rollout is not None and later.rollout.share == 0.7


def test_replay_state_keeps_to_one_workspace_and_time(scene: Any) -> None:
    app, clock = scene
    app.promote("acme", "bot", "production", 1, BOB)
    app.create_workspace("other")
    app.create_prompt("other", ALICE, name="bot", content=text("theirs"))
    clock.advance(60)
    app.promote("acme", "bot", "production", 2, BOB)
    everything = replay_state(app, at(10))
    assert set(everything.workspaces) == {"acme", "other"}
    ours = replay_state(app, at(10), workspace="acme")
    assert set(ours.workspaces) == {"acme"} and set(ours.prompts) == {("acme", "bot")}
    assert ours.deployments[("acme", "bot", "production")].serving == 2
    earlier = replay_state(app, at(2), workspace="acme")
    assert earlier.deployments[("acme", "bot", "production")].serving == 1
    assert replay_state(app, at(-1)).workspaces == {}


def test_a_log_with_an_event_missing_is_refused_naming_where(scene: Any) -> None:
    app, clock = scene
    app.promote("acme", "bot", "production", 1, BOB)
    app.start_rollout("acme", "bot", "production", 2, 0.5, BOB)
    app.adjust_rollout("acme", "bot", "production", 0.6, BOB)
    clock.advance(60)
    events = list(app.read_events(0, 1000))
    kept = [(p, e) for p, e in events if type(e).__qualname__ != "Deployment.RolloutStarted"]
    adjusted = next(p for p, e in kept if type(e).__qualname__ == "Deployment.RolloutAdjusted")
    history = TenantHistory("acme", "acme-corp", "bot", "production", kept)
    with pytest.raises(Conflict) as broken:
        history.answer_at(at(5))
    assert broken.value.code == "log_inconsistent" and broken.value.extra["position"] == adjusted
    assert "promptrecord verify" in broken.value.detail
