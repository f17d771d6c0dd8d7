"""The drift scheduler on both backends, driven step by step with a clock the test moves: a
passing gate run, then the fake model's answers change, a drift run is requested and carried
out by the real executor through the OpenAI SDK, and the check (and alert) recorded."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.evals import EvalRun
from promptrecord.domain.monitor_commands import DRIFT_ACTOR
from promptrecord.domain.monitors import Monitor
from promptrecord.settings import Settings
from promptrecord.workers.drift import DriftScheduler, assess, drift_run_id, period_index
from promptrecord.workers.executor import ExecutorConfig, execute_run

if TYPE_CHECKING:
    from tests.fakes.model_servers import FakeModelServer

WS = "acme"
ALICE = Actor("key-alice", "alice (editor)")
MINI = "gpt-4o-mini-2024-07-18"
SMALL_POOL = {"POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "4"}
QUESTION = re.compile(r"Question q(\d+)")
DAY = timedelta(hours=24)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def answers(right: int) -> Any:
    """The fake model's reply: the reference for questions 1..right, else a wrong answer."""

    def reply(body: dict[str, Any]) -> str:
        found = QUESTION.search(json.dumps(body.get("messages")))
        number = int(found.group(1)) if found else 0
        return f"answer {number}" if number <= right else "no idea"

    return reply


def right_only_for(system: str) -> Any:
    """The fake model's reply: right for the version with this system prompt, else wrong."""

    def reply(body: dict[str, Any]) -> str:
        text = json.dumps(body.get("messages"))
        found = QUESTION.search(text)
        return f"answer {found.group(1)}" if found and system in text else "no idea"

    return reply


def chat(system: str) -> dict[str, Any]:
    return {
        "type": "chat",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Question q{{ n }}"},
        ],
        "model": {"provider": "openai", "name": MINI},
    }


@dataclass
class Drift:
    app: PromptRecord
    clock: Clock
    settings: Settings
    server: FakeModelServer
    apps: list[PromptRecord] = field(default_factory=list)

    @property
    def config(self) -> ExecutorConfig:
        return ExecutorConfig(
            openai_api_key="sk-test",
            openai_base_url=f"{self.server.base_url}/v1",
            backoff=(0.001, 0.005),
            max_retries=0,
            environ={},
        )

    def another_app(self) -> PromptRecord:
        other = PromptRecord(
            env={**self.settings.eventsourcing_env(), **SMALL_POOL}, clock=self.clock
        )
        self.apps.append(other)
        return other

    def gate(self, candidate: int = 2, baseline: int = 1) -> str:
        run_id: str = self.app.request_eval(
            WS, ALICE, "support", candidate, "faq", [{"type": "exact"}], {}, baseline=baseline
        ).value
        assert execute_run(self.app, WS, run_id, self.config, "test").status == "completed"
        return run_id

    def monitor_events(self) -> list[Any]:
        return list(self.app.events.get(Monitor.create_id(WS, "support")))

    def run_id(self, period_offset: int = 0) -> str:
        period = period_index(self.clock.now, DAY) + period_offset
        return drift_run_id(WS, "support", "production", 2, period)


@pytest.fixture
def drift(backend: Settings, openai_server: FakeModelServer) -> Iterator[Drift]:
    clock = Clock()
    app = PromptRecord(env={**backend.eventsourcing_env(), **SMALL_POOL}, clock=clock)
    found = Drift(app, clock, backend, openai_server)
    app.create_workspace(WS, "Acme", environments=["staging", "production"])
    app.create_prompt(WS, ALICE, name="support")
    app.commit_version(WS, "support", chat("Answer."), ALICE)
    app.commit_version(WS, "support", chat("Answer briefly."), ALICE)
    examples = [
        {"id": f"q{i}", "inputs": {"n": i}, "reference": f"answer {i}"} for i in range(1, 11)
    ]
    app.create_dataset(WS, "faq", ALICE, examples=examples)
    openai_server.reply = answers(9)
    try:
        yield found
    finally:
        for each in [*found.apps, app]:
            each.close()


def passing_history(drift: Drift) -> str:
    """v2 passes its gate against v1 (both 0.9), is promoted, and drift is monitored."""
    gate_run = drift.gate()
    assert drift.app.eval_run(WS, gate_run).passed is True
    drift.app.promote(WS, "support", "production", 2, ALICE)
    drift.app.configure_monitor(
        WS, "support", None, {"dataset": "faq", "environments": ["production"],
                              "every_hours": 24, "threshold": 0.1}, ALICE,
    )  # fmt: skip
    drift.clock.now += timedelta(minutes=5)
    return gate_run


def test_a_changed_model_is_rerun_and_alerted_with_the_delta_from_the_passing_run(
    drift: Drift,
) -> None:
    gate_run = passing_history(drift)
    scheduler = DriftScheduler(drift.app, 1.0, clock=drift.clock)
    drift.server.reply = answers(5)  # the provider changed under the same model name

    scheduler.step()
    run_id = drift.run_id()
    assert scheduler.requested == 1
    run = drift.app.eval_run(WS, run_id)
    assert run.requested_by == DRIFT_ACTOR.as_dict()
    assert (run.spec["candidate"], run.spec["baseline"], run.spec["dataset_version"]) == (2, 1, 1)
    assert run.spec["graders"] == [{"type": "exact"}]
    assert gate_run in run.spec["reason"]

    scheduler.step()  # running: nothing more is requested, nothing recorded
    assert (scheduler.requested, scheduler.recorded) == (1, 0)
    assert execute_run(drift.app, WS, run_id, drift.config, "test").status == "completed"

    scheduler.step()
    assert (scheduler.recorded, scheduler.alerts) == (1, 1)
    names = [type(e).__qualname__ for e in drift.monitor_events()]
    assert names[-2:] == ["Monitor.DriftChecked", "Monitor.DriftAlerted"]
    alert = drift.monitor_events()[-1]
    assert (alert.environment, alert.version, alert.run_id) == ("production", 2, run_id)
    assert alert.reference_run_id == gate_run
    assert (alert.win_rate, alert.reference_win_rate) == (0.5, 0.9)
    assert alert.delta == pytest.approx(-0.4)
    assert alert.threshold == 0.1

    scheduler.step()  # recorded once; checked this period: waiting for the next
    assert (scheduler.requested, scheduler.recorded) == (1, 1)
    monitor = drift.app.monitor(WS, "support")
    status = assess(drift.app, monitor, "production", drift.clock.now)
    assert status.state == "waiting"
    assert status.next_due_at is not None and status.next_due_at > drift.clock.now


def test_within_the_threshold_only_a_check_and_the_reference_stays_the_gate_run(
    drift: Drift,
) -> None:
    gate_run = passing_history(drift)
    scheduler = DriftScheduler(drift.app, 1.0, clock=drift.clock)
    drift.server.reply = answers(8)
    scheduler.step()
    first = drift.run_id()
    execute_run(drift.app, WS, first, drift.config, "test")
    scheduler.step()
    assert drift.app.eval_run(WS, first).passed is True  # a drift run can pass a gate too…
    check = drift.monitor_events()[-1]
    assert type(check).__qualname__ == "Monitor.DriftChecked"
    assert check.win_rate == 0.8 and scheduler.alerts == 0

    drift.clock.now += DAY + timedelta(minutes=1)
    drift.server.reply = answers(9)
    scheduler.step()
    second = drift.run_id()
    assert second != first and scheduler.requested == 2
    execute_run(drift.app, WS, second, drift.config, "test")
    scheduler.step()
    check = drift.monitor_events()[-1]
    assert type(check).__qualname__ == "Monitor.DriftChecked"
    assert check.run_id == second
    assert check.reference_run_id == gate_run  # …but is never a reference itself
    assert check.delta == pytest.approx(0.0)
    assert scheduler.alerts == 0


def test_two_schedulers_on_the_same_period_start_one_run(drift: Drift) -> None:
    passing_history(drift)
    other = drift.another_app()
    first = DriftScheduler(drift.app, 1.0, clock=drift.clock)
    second = DriftScheduler(other, 1.0, clock=drift.clock)
    monitors = [drift.app.monitor(WS, "support"), other.monitor(WS, "support")]
    # Both decide before either requests: the same run id, and the second request is refused.
    statuses = [assess(a, m, "production", drift.clock.now) for a, m in zip(
        (drift.app, other), monitors, strict=True)]  # fmt: skip
    assert [s.state for s in statuses] == ["due", "due"]
    assert statuses[0].run_id == statuses[1].run_id == drift.run_id()
    first._request(monitors[0], statuses[0])
    second._request(monitors[1], statuses[1])  # refused as run_exists: not counted
    second.step()  # and seen as running from then on
    assert (first.requested, second.requested) == (1, 0)
    requested = [
        event
        for _, event in drift.app.read_events(0, 1000)
        if type(event).__qualname__ == "EvalRun.Requested"
    ]
    assert len(requested) == 2  # the gate run and one drift run
    execute_run(drift.app, WS, drift.run_id(), drift.config, "test")
    first.step()
    second.step()
    checks = [e for e in drift.monitor_events() if type(e).__qualname__ == "Monitor.DriftChecked"]
    assert len(checks) == 1
    assert first.recorded + second.recorded == 1


def test_no_passing_run_or_nothing_promoted_requests_nothing_and_says_why(drift: Drift) -> None:
    drift.app.configure_monitor(
        WS, "support", None, {"dataset": "faq", "environments": ["staging", "production"]}, ALICE
    )
    drift.app.promote(WS, "support", "production", 2, ALICE)
    scheduler = DriftScheduler(drift.app, 1.0, clock=drift.clock)
    scheduler.step()
    assert scheduler.requested == 0
    monitor = drift.app.monitor(WS, "support")
    staging = assess(drift.app, monitor, "staging", drift.clock.now)
    assert staging.state == "nothing_deployed" and staging.version is None
    production = assess(drift.app, monitor, "production", drift.clock.now)
    assert production.state == "no_reference"
    assert "no passing eval run" in production.reason and "promptrecord gate" in production.reason

    # v3 is always right, v2 never: v2 against v3 is a significant regression, blocked
    drift.app.commit_version(WS, "support", chat("Answer well."), ALICE)
    drift.server.reply = right_only_for("Answer well.")
    blocked = drift.gate(candidate=2, baseline=3)
    assert drift.app.eval_run(WS, blocked).passed is False
    scheduler.step()
    assert scheduler.requested == 0
    assert assess(drift.app, monitor, "production", drift.clock.now).state == "no_reference"


def test_a_failed_drift_run_waits_for_the_next_period(drift: Drift) -> None:
    passing_history(drift)
    scheduler = DriftScheduler(drift.app, 1.0, clock=drift.clock)
    scheduler.step()
    run_id = drift.run_id()
    drift.app.fail_eval(WS, run_id, "missing_api_key", "no key")
    scheduler.step()
    assert scheduler.requested == 1
    status = assess(drift.app, drift.app.monitor(WS, "support"), "production", drift.clock.now)
    assert status.state == "waiting" and "missing_api_key" in status.reason
    assert status.next_due_at is not None
    drift.clock.now = status.next_due_at
    scheduler.step()
    assert scheduler.requested == 2
    assert drift.app.eval_run(WS, drift.run_id()).status == "requested"
    assert isinstance(drift.app._find(EvalRun.create_id(WS, run_id)), EvalRun)
