"""Random command histories against the real application, checked against a brute-force model.

Hypothesis drives a `RuleBasedStateMachine`: each example is a fresh store (a SQLite file of
its own; on PostgreSQL a workspace of its own in one schema) and a clock the test controls.
Each step issues one command — commit, restore, promote, rollout start / adjust / complete /
abort, rollback (default and named), pin with a short expiry, unpin, archive / unarchive — or
advances the clock so pins expire between events. A failure report lists every command of
the history with its outcome.

The model below is plain Python written for this test, not derived from the domain code: per
(prompt, environment) the stack of served versions and the active rollout (baseline,
candidate, share, key_by, rollout id read from the event log), per (tenant, prompt,
environment) the pin and its expiry, per prompt its versions and archived flag. It buckets
with its own sha256 code. After every command:

- the command succeeds exactly when the model says it should, and otherwise fails with the
  error class and code the model predicts;
- `resolve` over a `ResolutionState` folded from `app.read_events` gives, for several
  prompts, environments, tenants, routing keys and times at or after the last event, the
  same version and reason (and rollout arm) as the model, or the same refusal.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from promptrecord.domain import application as application_module
from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from promptrecord.domain.policy import EnvironmentPolicy
from promptrecord.domain.resolution import ResolutionState, resolve
from promptrecord.settings import Settings

ACTOR = Actor("key-history", "history test")
START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)

PROMPTS = ("alpha", "beta")
ENVS = ("staging", "production")  # in this order: staging comes before production

# (text, provider, model name, floats) — the model knows which names float, by this table.
CONTENTS: list[tuple[str, str, str, bool]] = [
    ("Hello {{ name }}", "anthropic", "claude-sonnet-4-5-20250929", False),
    ("Hi {{ name }}, I am {{ bot }}", "anthropic", "claude-sonnet-4-5-20250929", False),
    ("Bye", "openai", "gpt-4o", True),
    ("Bye", "openai", "gpt-4o-2024-08-06", False),
    ("Hey", "anthropic", "claude-3-5-haiku-latest", True),
    ("Broken {{ name", "anthropic", "claude-sonnet-4-5-20250929", False),  # does not parse
]
BROKEN = 5

# Where resolve is asked: every real place, plus an unknown prompt and an unknown environment.
PLACES = [(p, e) for p in PROMPTS for e in ENVS] + [("ghost", "staging"), ("alpha", "qa")]
# Who asks what: (tenant, routing key) pairs probed at every check.
PROBES = [("t0", None), ("t1", "r0"), ("t2", "r1"), ("t3", None), (None, "r2"), (None, None)]
PROBE_OFFSETS = (0, 5, 60, 601)  # seconds after the last event


def content(index: int) -> dict[str, Any]:
    text, provider, model, _ = CONTENTS[index]
    return {"type": "text", "text": text, "model": {"provider": provider, "name": model}}


# --------------------------------------------------------------------------- the model


class Refused(Exception):
    def __init__(self, error: type[DomainError], code: str) -> None:
        super().__init__(f"{error.__name__}:{code}")
        self.outcome = (error, code)


def model_bucket(rollout_id: str, key: str) -> float:
    digest = hashlib.sha256(f"{rollout_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class ModelPolicy:
    refuse_floating: bool
    require_previous: bool
    default_ttl: int
    max_ttl: int


@dataclass
class ModelRollout:
    rollout_id: str
    baseline: int
    candidate: int
    share: float
    key_by: str


@dataclass
class ModelDeployment:
    stack: list[int] = field(default_factory=list)  # versions served in turn; last serves
    rollout: ModelRollout | None = None
    promoted: set[int] = field(default_factory=set)  # every version that has served here


@dataclass
class ModelPin:
    version: int | None  # None once unpinned
    expires_at: datetime | None


class Model:
    """What the history should have done, by brute force."""

    def __init__(self, policies: dict[str, ModelPolicy]) -> None:
        self.policies = policies
        self.versions: dict[str, list[int]] = {p: [] for p in PROMPTS}  # content index each
        self.archived: dict[str, bool] = dict.fromkeys(PROMPTS, False)
        self.deployments: dict[tuple[str, str], ModelDeployment] = {}
        self.pins: dict[tuple[str, str, str], ModelPin] = {}

    # ---- checks the commands share

    def _prompt(self, prompt: str) -> list[int]:
        if prompt not in self.versions:
            raise Refused(NotFound, "prompt_not_found")
        return self.versions[prompt]

    @staticmethod
    def _env(env: str) -> None:
        if env not in ENVS:
            raise Refused(NotFound, "environment_not_found")

    def _version(self, prompt: str, number: int) -> None:
        if not 1 <= number <= len(self.versions[prompt]):
            raise Refused(NotFound, "version_not_found")

    def _deployable(self, prompt: str, env: str, number: int) -> None:
        if self.archived[prompt]:
            raise Refused(Conflict, "prompt_archived")
        self._version(prompt, number)
        policy = self.policies[env]
        if policy.refuse_floating and CONTENTS[self.versions[prompt][number - 1]][3]:
            raise Refused(Conflict, "floating_model")
        index = ENVS.index(env)
        if policy.require_previous and index > 0:
            before = self.deployments.get((prompt, ENVS[index - 1]))
            if before is None or number not in before.promoted:
                raise Refused(Conflict, "previous_environment_required")

    def _deployed(self, prompt: str, env: str) -> ModelDeployment:
        deployment = self.deployments.get((prompt, env))
        if deployment is None or not deployment.stack:
            raise Refused(NotFound, "not_deployed")
        return deployment

    @staticmethod
    def _share(share: float) -> None:
        if not 0 < share < 1:
            raise Refused(InvalidInput, "share_out_of_range")

    # ---- commands; each raises Refused before changing anything

    def commit(self, prompt: str, index: int) -> tuple[int, bool]:
        if index == BROKEN:
            raise Refused(InvalidInput, "template_syntax")
        versions = self._prompt(prompt)
        if versions and CONTENTS[versions[-1]][:3] == CONTENTS[index][:3]:
            return len(versions), False
        if self.archived[prompt]:
            raise Refused(Conflict, "prompt_archived")
        versions.append(index)
        return len(versions), True

    def restore(self, prompt: str, number: int) -> tuple[int, bool]:
        versions = self._prompt(prompt)
        self._version(prompt, number)
        if versions[-1] == versions[number - 1]:
            return len(versions), False
        if self.archived[prompt]:
            raise Refused(Conflict, "prompt_archived")
        versions.append(versions[number - 1])
        return len(versions), True

    def archive(self, prompt: str, archived: bool) -> None:
        self._prompt(prompt)
        if self.archived[prompt] == archived:
            raise Refused(Conflict, "already_archived" if archived else "not_archived")
        self.archived[prompt] = archived

    def promote(self, prompt: str, env: str, number: int) -> None:
        self._prompt(prompt)
        self._env(env)
        self._deployable(prompt, env, number)
        deployment = self.deployments.get((prompt, env), ModelDeployment())
        if deployment.rollout is not None:
            raise Refused(Conflict, "rollout_active")
        if deployment.stack and deployment.stack[-1] == number:
            raise Refused(Conflict, "already_serving")
        deployment.stack.append(number)
        deployment.promoted.add(number)
        self.deployments[(prompt, env)] = deployment

    def start_rollout(
        self, prompt: str, env: str, candidate: int, share: float, key_by: str, rollout_id: str
    ) -> ModelRollout:
        self._share(share)
        self._prompt(prompt)
        self._env(env)
        self._deployable(prompt, env, candidate)
        deployment = self.deployments.get((prompt, env), ModelDeployment())
        if deployment.rollout is not None:
            raise Refused(Conflict, "rollout_active")
        if not deployment.stack:
            raise Refused(Conflict, "no_baseline")
        if deployment.stack[-1] == candidate:
            raise Refused(Conflict, "already_serving")
        deployment.rollout = ModelRollout(
            rollout_id, deployment.stack[-1], candidate, share, key_by
        )
        self.deployments[(prompt, env)] = deployment
        return deployment.rollout

    def adjust_rollout(self, prompt: str, env: str, share: float) -> None:
        self._env(env)
        self._prompt(prompt)
        deployment = self._deployed(prompt, env)
        if deployment.rollout is None:
            raise Refused(Conflict, "no_rollout")
        self._share(share)
        deployment.rollout.share = share

    def complete_rollout(self, prompt: str, env: str) -> int:
        self._prompt(prompt)
        self._env(env)
        deployment = self._deployed(prompt, env)
        if deployment.rollout is None:
            raise Refused(Conflict, "no_rollout")
        candidate = deployment.rollout.candidate
        self._deployable(prompt, env, candidate)
        deployment.stack.append(candidate)
        deployment.promoted.add(candidate)
        deployment.rollout = None
        return candidate

    def abort_rollout(self, prompt: str, env: str) -> None:
        self._env(env)
        self._prompt(prompt)
        deployment = self._deployed(prompt, env)
        if deployment.rollout is None:
            raise Refused(Conflict, "no_rollout")
        deployment.rollout = None

    def rollback(self, prompt: str, env: str, to: int | None, reason: str) -> int:
        self._prompt(prompt)
        if to is not None:
            self._version(prompt, to)
        self._env(env)
        deployment = self._deployed(prompt, env)
        if not reason.strip():
            raise Refused(InvalidInput, "invalid_input")
        serving = deployment.stack[-1]
        if to is None:
            if deployment.rollout is not None:
                target = deployment.rollout.baseline  # the baseline is what serves
            elif len(deployment.stack) >= 2:
                target = deployment.stack[-2]
                deployment.stack.pop()
            else:
                raise Refused(Conflict, "nothing_to_roll_back_to")
        else:
            if to == serving and deployment.rollout is None:
                raise Refused(Conflict, "already_serving")
            target = to
            if to != serving:
                deployment.stack.append(to)
            deployment.promoted.add(to)
        deployment.rollout = None
        return target

    def pin(
        self, tenant: str, prompt: str, env: str, number: int, expires_in: int | None, now: datetime
    ) -> datetime:
        self._env(env)
        self._prompt(prompt)
        if self.archived[prompt]:
            raise Refused(Conflict, "prompt_archived")
        self._version(prompt, number)
        policy = self.policies[env]
        if policy.refuse_floating and CONTENTS[self.versions[prompt][number - 1]][3]:
            raise Refused(Conflict, "floating_model")  # pins skip only the ordering rule
        seconds = policy.default_ttl if expires_in is None else expires_in
        expires_at = now + timedelta(seconds=seconds)
        if seconds > policy.max_ttl:
            raise Refused(InvalidInput, "pin_too_long")
        if seconds <= 0:
            raise Refused(InvalidInput, "invalid_input")
        self.pins[(tenant, prompt, env)] = ModelPin(number, expires_at)
        return expires_at

    def unpin(self, tenant: str, prompt: str, env: str, now: datetime) -> None:
        pin = self.pins.get((tenant, prompt, env))
        if pin is None:
            raise Refused(NotFound, "not_pinned")
        if pin.version is None:
            raise Refused(Conflict, "not_pinned")
        assert pin.expires_at is not None
        if now >= pin.expires_at:
            raise Refused(Conflict, "pin_expired")
        pin.version = pin.expires_at = None

    # ---- the answer

    def resolve(
        self, prompt: str, env: str, tenant: str | None, key: str | None, at: datetime
    ) -> tuple[int, str, str | None]:
        self._prompt(prompt)
        if self.archived[prompt]:
            raise Refused(Conflict, "prompt_archived")
        self._env(env)
        pin = self.pins.get((tenant, prompt, env)) if tenant is not None else None
        if pin is not None and pin.expires_at is not None and at < pin.expires_at:
            assert pin.version is not None  # both are None once unpinned
            return pin.version, "pinned", None
        deployment = self._deployed(prompt, env)
        rollout = deployment.rollout
        if rollout is None:
            return deployment.stack[-1], "promoted", None
        routing = tenant if rollout.key_by == "tenant" else key
        if routing is not None and model_bucket(rollout.rollout_id, routing) < rollout.share:
            return rollout.candidate, "rollout", "candidate"
        return rollout.baseline, "rollout", "baseline"


# --------------------------------------------------------------------------- the machine


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


Outcome = tuple[type[DomainError], str] | None
AppOpener = Callable[[], tuple[PromptRecord, Callable[[], None]]]


class HistoryMachine(RuleBasedStateMachine):
    """Subclassed per backend with `open_app` set.

    One rule, `step`, draws a seed; the seed picks a command and its arguments, weighted and
    mostly aimed at things that exist, so that histories reach deployments, rollouts and pins
    rather than piling up refusals (hypothesis alone spreads too thinly over 13 rules).
    """

    open_app: AppOpener

    def __init__(self) -> None:
        super().__init__()
        self.app, self._close = type(self).open_app()
        self.clock = Clock()
        self.app.clock = self.clock
        self.ws = f"h-{uuid.uuid4().hex[:12]}"
        self.start = int(self.app.recorder.max_notification_id() or 0)
        self.model: Model | None = None
        self.steps = 0

    def teardown(self) -> None:
        self._close()

    @initialize(
        floating=st.tuples(st.booleans(), st.booleans()),
        previous=st.tuples(st.booleans(), st.booleans()),
        default_ttl=st.tuples(st.sampled_from([60, 120, 600]), st.sampled_from([60, 120, 600])),
        headroom=st.tuples(st.sampled_from([0, 60, 600]), st.sampled_from([0, 60, 600])),
        firsts=st.lists(st.integers(0, len(CONTENTS) - 1), min_size=1, max_size=4),
        uuid_seed=st.integers(0, 2**32 - 1),
    )
    def setup(
        self,
        floating: tuple[bool, bool],
        previous: tuple[bool, bool],
        default_ttl: tuple[int, int],
        headroom: tuple[int, int],
        firsts: list[int],
        uuid_seed: int,
    ) -> None:
        UUIDS.seed(uuid_seed)
        self.app.create_workspace(self.ws, environments=list(ENVS))
        policies = {}
        for i, env in enumerate(ENVS):
            maximum = default_ttl[i] + headroom[i]
            policy = EnvironmentPolicy(
                refuse_floating_models=floating[i],
                require_previous_environment=previous[i],
                pin_default_ttl_seconds=default_ttl[i],
                pin_max_ttl_seconds=maximum,
            )
            self.app.set_policy(self.ws, env, policy, ACTOR)
            policies[env] = ModelPolicy(floating[i], previous[i], default_ttl[i], maximum)
        for name in PROMPTS:
            self.app.create_prompt(self.ws, ACTOR, name=name)
        self.model = Model(policies)
        # A head start, checked like any other command: versions, and deployments.
        for index in firsts:
            self.commit("alpha", index)
        self.commit("beta", 3)
        for env in ENVS:
            self.promote("alpha", env, 1)

    # ---- running a command on both sides

    def _both(
        self, what: str, on_app: Callable[[], Any], on_model: Callable[[Any], Any]
    ) -> tuple[Any, Any]:
        try:
            result = on_app()
            actual: Outcome = None
        except DomainError as exc:
            result, actual = None, (type(exc), exc.code)
        try:
            expected_value = on_model(result)
            expected: Outcome = None
        except Refused as refusal:
            expected_value, expected = None, refusal.outcome
        shown = "ok" if actual is None else f"{actual[0].__name__} {actual[1]}"
        note(f"{what} -> {shown}")
        assert actual == expected, f"{what}: app {actual}, model {expected}"
        return result, expected_value

    def _event_at(self, position: int) -> Any:
        [(found, event)] = list(self.app.read_events(position - 1, 1))
        assert found == position
        return event

    @property
    def m(self) -> Model:
        assert self.model is not None
        return self.model

    # ---- the commands

    def commit(self, prompt: str, index: int) -> None:
        result, expected = self._both(
            f"commit {prompt} content#{index}",
            lambda: self.app.commit_version(self.ws, prompt, content(index), ACTOR),
            lambda _: self.m.commit(prompt, index),
        )
        if result is not None:
            assert result.value == expected
            assert (result.position is None) == (not expected[1])

    def restore(self, prompt: str, number: int) -> None:
        result, expected = self._both(
            f"restore {prompt} v{number}",
            lambda: self.app.restore_version(self.ws, prompt, number, ACTOR),
            lambda _: self.m.restore(prompt, number),
        )
        if result is not None:
            assert result.value == expected

    def archive(self, prompt: str, archived: bool) -> None:
        if archived:
            self._both(
                f"archive {prompt}",
                lambda: self.app.archive(self.ws, prompt, "retire", ACTOR, None),
                lambda _: self.m.archive(prompt, True),
            )
        else:
            self._both(
                f"unarchive {prompt}",
                lambda: self.app.unarchive(self.ws, prompt, "revive", ACTOR, None),
                lambda _: self.m.archive(prompt, False),
            )

    def promote(self, prompt: str, env: str, number: int) -> None:
        result, _ = self._both(
            f"promote {prompt} {env} v{number}",
            lambda: self.app.promote(self.ws, prompt, env, number, ACTOR),
            lambda _: self.m.promote(prompt, env, number),
        )
        if result is not None:
            assert result.value == {"status": "promoted"}

    def start_rollout(
        self, prompt: str, env: str, candidate: int, share: float, key_by: str
    ) -> None:
        def on_model(result: Any) -> ModelRollout:
            rollout_id = "?"
            if result is not None:
                rollout_id = self._event_at(result.position).rollout_id
            return self.m.start_rollout(prompt, env, candidate, share, key_by, rollout_id)

        result, expected = self._both(
            f"start_rollout {prompt} {env} v{candidate} share={share} key_by={key_by}",
            lambda: self.app.start_rollout(
                self.ws, prompt, env, candidate, share, ACTOR, key_by=key_by
            ),
            on_model,
        )
        if result is not None:
            event = self._event_at(result.position)
            assert type(event).__qualname__ == "Deployment.RolloutStarted"
            assert (event.baseline, event.candidate, event.share, event.key_by) == (
                expected.baseline,
                expected.candidate,
                expected.share,
                expected.key_by,
            )

    def adjust_rollout(self, prompt: str, env: str, share: float) -> None:
        self._both(
            f"adjust_rollout {prompt} {env} share={share}",
            lambda: self.app.adjust_rollout(self.ws, prompt, env, share, ACTOR),
            lambda _: self.m.adjust_rollout(prompt, env, share),
        )

    def complete_rollout(self, prompt: str, env: str) -> None:
        result, expected = self._both(
            f"complete_rollout {prompt} {env}",
            lambda: self.app.complete_rollout(self.ws, prompt, env, ACTOR),
            lambda _: self.m.complete_rollout(prompt, env),
        )
        if result is not None:
            assert result.value == {"status": "promoted", "version": expected}, result.value

    def abort_rollout(self, prompt: str, env: str) -> None:
        self._both(
            f"abort_rollout {prompt} {env}",
            lambda: self.app.abort_rollout(self.ws, prompt, env, ACTOR),
            lambda _: self.m.abort_rollout(prompt, env),
        )

    def rollback(self, prompt: str, env: str, to: int | None, reason: str) -> None:
        result, expected = self._both(
            f"rollback {prompt} {env} to={to} reason={reason!r}",
            lambda: self.app.rollback(self.ws, prompt, env, reason, ACTOR, to_version=to),
            lambda _: self.m.rollback(prompt, env, to, reason),
        )
        if result is not None:
            assert result.value == {"status": "rolled_back", "version": expected}, result.value

    def pin(
        self,
        tenant: str,
        prompt: str,
        env: str,
        number: int,
        expires_in: int | None,
        as_ttl: bool,
    ) -> None:
        now = self.clock.now
        kwargs: dict[str, Any] = {}
        if expires_in is not None:
            if as_ttl:
                kwargs["ttl_seconds"] = expires_in
            else:
                kwargs["expires_at"] = now + timedelta(seconds=expires_in)
        result, expected = self._both(
            f"pin {tenant} {prompt} {env} v{number} {kwargs or 'default ttl'}",
            lambda: self.app.pin(self.ws, tenant, prompt, env, number, ACTOR, **kwargs),
            lambda _: self.m.pin(tenant, prompt, env, number, expires_in, now),
        )
        if result is not None:
            assert result.value == {"version": number, "expires_at": expected}

    def unpin(self, tenant: str, prompt: str, env: str) -> None:
        now = self.clock.now
        self._both(
            f"unpin {tenant} {prompt} {env}",
            lambda: self.app.unpin(self.ws, tenant, prompt, env, ACTOR),
            lambda _: self.m.unpin(tenant, prompt, env, now),
        )

    def advance_clock(self, seconds: int) -> None:
        note(f"clock +{seconds}s")
        self.clock.now += timedelta(seconds=seconds)

    # ---- the one rule: a seeded, weighted choice of command and arguments

    @rule(seed=st.integers(0, 2**32 - 1))
    def step(self, seed: int) -> None:
        self.steps += 1
        pick = random.Random(seed * 7919 + self.steps)
        model = self.m
        deployed = [place for place, d in model.deployments.items() if d.stack]
        rolling = [place for place, d in model.deployments.items() if d.rollout is not None]
        pinned = [key for key, pin in model.pins.items() if pin.version is not None]
        weights = {
            "commit": 12,
            "restore": 4,
            "archive": 2,
            "unarchive": 8 if any(model.archived.values()) else 1,
            "promote": 12,
            "start_rollout": 6 if rolling else 12,
            "adjust_rollout": 10 if rolling else 2,
            "complete_rollout": 6 if rolling else 2,
            "abort_rollout": 4 if rolling else 1,
            "rollback": 7,
            "pin": 10,
            "unpin": 6,
            "advance_clock": 10,
        }
        command = pick.choices(list(weights), list(weights.values()))[0]

        # Where: mostly somewhere the command can act, sometimes anywhere (or nowhere).
        prompt = pick.choices(["alpha", "beta", "ghost"], [60, 30, 10])[0]
        env = pick.choices(["staging", "production", "qa"], [45, 45, 10])[0]
        tenant = pick.choice(["t0", "t1", "t2"])
        aimed = pick.random() < 0.75
        if aimed and command in ("adjust_rollout", "complete_rollout", "abort_rollout") and rolling:
            prompt, env = pick.choice(rolling)
        elif aimed and command in ("start_rollout", "rollback") and deployed:
            prompt, env = pick.choice(deployed)
        elif aimed and command == "unpin" and pinned:
            tenant, prompt, env = pick.choice(pinned)

        # Which version: mostly one that exists and does not serve there.
        have = len(model.versions.get(prompt, []))
        deployment = model.deployments.get((prompt, env))
        serving = deployment.stack[-1] if deployment and deployment.stack else None
        others = [n for n in range(1, have + 1) if n != serving]
        if others and pick.random() < 0.85:
            number = pick.choice(others)
        else:
            number = pick.randint(0, have + 2)
        if pick.random() < 0.85:
            share = pick.choice([0.05, 0.3, 0.5, 0.7, 0.9, round(pick.uniform(0.01, 0.99), 3)])
        else:
            share = pick.choice([-0.1, 0.0, 1.0, 1.5])

        if command == "commit":
            index = pick.choices(range(len(CONTENTS)), [20, 20, 10, 20, 10, 4])[0]
            self.commit(prompt, index)
        elif command == "restore":
            self.restore(prompt, number)
        elif command in ("archive", "unarchive"):
            self.archive(prompt, command == "archive")
        elif command == "promote":
            self.promote(prompt, env, number)
        elif command == "start_rollout":
            key_by = pick.choices(["tenant", "user", "request"], [60, 20, 20])[0]
            self.start_rollout(prompt, env, number, share, key_by)
        elif command == "adjust_rollout":
            self.adjust_rollout(prompt, env, share)
        elif command == "complete_rollout":
            self.complete_rollout(prompt, env)
        elif command == "abort_rollout":
            self.abort_rollout(prompt, env)
        elif command == "rollback":
            to = None
            if pick.random() < 0.3:
                # Named targets are versions that served here before, or ones that do not
                # exist. A target that never served is left out: whether it then counts as
                # having served (for require_previous_environment) is a known defect, see
                # test_application.py::test_a_named_rollback_target_has_served_the_environment
                earlier = sorted(deployment.promoted) if deployment else []
                to = pick.choice(earlier) if earlier and pick.random() < 0.85 else have + 1
            reason = " " if pick.random() < 0.08 else "incident"
            self.rollback(prompt, env, to, reason)
        elif command == "pin":
            expires_in = pick.choice([None, None, 5, 45, 60, 120, 600, -10, 0, 601, 1300])
            self.pin(tenant, prompt, env, number, expires_in, pick.random() < 0.5)
        elif command == "unpin":
            self.unpin(tenant, prompt, env)
        else:
            self.advance_clock(pick.choice([1, 4, 5, 30, 55, 60, 61, 120, 600]))

    # ---- the check

    @invariant()
    def resolve_agrees_with_the_model(self) -> None:
        if self.model is None:
            return
        state = ResolutionState()
        after = self.start
        while True:
            page = list(self.app.read_events(after, 500))
            for position, event in page:
                state.apply(event, position)
            if len(page) < 500:
                break
            after = page[-1][0]
        for prompt, env in PLACES:
            for tenant, key in PROBES:
                for offset in PROBE_OFFSETS:
                    at = self.clock.now + timedelta(seconds=offset)
                    self._compare(state, prompt, env, tenant, key, at)

    def _compare(
        self,
        state: ResolutionState,
        prompt: str,
        env: str,
        tenant: str | None,
        key: str | None,
        at: datetime,
    ) -> None:
        try:
            answer = resolve(state, self.ws, prompt, env, tenant, key, at)
            arm = answer.rollout.arm if answer.rollout is not None else None
            actual: Any = (answer.version.number, answer.reason, arm)
        except DomainError as exc:
            actual = (type(exc), exc.code)
        try:
            expected: Any = self.m.resolve(prompt, env, tenant, key, at)
        except Refused as refusal:
            expected = refusal.outcome
        assert actual == expected, (
            f"resolve({prompt}, {env}, tenant={tenant}, key={key}, "
            f"+{(at - self.clock.now).total_seconds():.0f}s): app {actual}, model {expected}"
        )


# Shrinking a 50-step history replays it hundreds of times (minutes); the failure report lists
# every command and its outcome anyway. PROMPTRECORD_TEST_SHRINK=1 turns shrinking on.
PHASES = (
    tuple(Phase)
    if os.environ.get("PROMPTRECORD_TEST_SHRINK")
    else (Phase.explicit, Phase.reuse, Phase.generate)
)
HISTORY_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "stateful_step_count": 50,
    "phases": PHASES,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}


class ReplayableUuids:
    """Stands in for the `uuid` module inside the application: rollout ids then follow a seed
    hypothesis draws per example, so a failing history replays with the same buckets."""

    def __init__(self) -> None:
        self.random = random.Random(0)

    def seed(self, seed: int) -> None:
        self.random = random.Random(seed)

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.random.getrandbits(128), version=4)

    def __getattr__(self, name: str) -> Any:
        return getattr(uuid, name)


UUIDS = ReplayableUuids()


@pytest.fixture
def replayable_uuids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(application_module, "uuid", UUIDS, raising=False)


def _sqlite_opener() -> tuple[PromptRecord, Callable[[], None]]:
    folder = tempfile.mkdtemp(prefix="promptrecord-history-")
    app = PromptRecord(env=Settings(database_url=f"sqlite:///{folder}/h.db").eventsourcing_env())

    def close() -> None:
        app.close()
        shutil.rmtree(folder, ignore_errors=True)

    return app, close


@pytest.mark.usefixtures("replayable_uuids")
def test_random_histories_on_sqlite() -> None:
    class OnSqlite(HistoryMachine):
        open_app = staticmethod(_sqlite_opener)

    run_state_machine_as_test(OnSqlite, settings=settings(max_examples=60, **HISTORY_SETTINGS))


@pytest.mark.usefixtures("replayable_uuids")
def test_random_histories_on_postgres(postgres_settings: Settings) -> None:
    # One schema for the whole run; each example works in a workspace of its own.
    env = {
        **postgres_settings.eventsourcing_env(),
        "POSTGRES_POOL_SIZE": "2",
        "POSTGRES_MAX_OVERFLOW": "2",
    }
    shared = PromptRecord(env=env)

    class OnPostgres(HistoryMachine):
        open_app = staticmethod(lambda: (shared, lambda: None))

    try:
        run_state_machine_as_test(
            OnPostgres, settings=settings(max_examples=10, **HISTORY_SETTINGS)
        )
    finally:
        shared.close()
