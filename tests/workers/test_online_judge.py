"""The online judge on both backends: the sampled executions of a monitored prompt get a judge
score through the OpenAI SDK against the stand-in server; a failing judge call is counted and
tried again later."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.projections.executions import (
    Execution,
    ExecutionStore,
    hour_of,
    open_execution_store,
    sample_of,
)
from promptrecord.settings import Settings
from promptrecord.workers.executor import ExecutorConfig
from promptrecord.workers.online_judge import OnlineJudge

if TYPE_CHECKING:
    from tests.fakes.model_servers import FakeModelServer

WS = "acme"
ALICE = Actor("key-alice", "alice (editor)")
SMALL_POOL = {"POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "4"}
START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
VERDICT = '{"correct": true, "score": 4}'


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Lab:
    app: PromptRecord
    store: ExecutionStore
    clock: Clock
    judge: OnlineJudge
    server: FakeModelServer

    def report(self, count: int, output: str | None = "Hello Ada!") -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(count)]
        self.store.ingest(
            [
                Execution(
                    id=i,
                    workspace=WS,
                    prompt="greet",
                    version=1,
                    environment="production",
                    started_at=self.clock.now,
                    status="ok",
                    latency_ms=120.0,
                    input={"name": "Ada"},
                    output=output,
                )
                for i in ids
            ]
        )
        return ids

    def judge_scores(self) -> tuple[float, float]:
        """(count, sum) of scores in the prompt's rollups."""
        hour = hour_of(START)
        rows = self.store.rollups(WS, "greet", "production", hour - 48, hour + 48)
        return (
            sum(r.sums["score_count"] for r in rows),
            sum(r.sums["score_sum"] for r in rows),
        )

    def unjudged(self, rate: float = 1.0) -> set[str]:
        found = self.store.judge_candidates(WS, "greet", rate, START - timedelta(days=1), 1000)
        return {c.id for c in found}


@pytest.fixture
def lab(backend: Settings, openai_server: FakeModelServer) -> Iterator[Lab]:
    clock = Clock()
    app = PromptRecord(env={**backend.eventsourcing_env(), **SMALL_POOL}, clock=clock)
    store = open_execution_store(backend)
    app.create_workspace(WS, "Acme")
    content = {
        "type": "chat",
        "messages": [{"role": "user", "content": "Greet {{ name }}."}],
        "model": {"provider": "openai", "name": "gpt-4o-mini-2024-07-18"},
    }
    app.create_prompt(WS, ALICE, name="greet", content=content)
    config = ExecutorConfig(
        openai_api_key="sk-test",
        openai_base_url=f"{openai_server.base_url}/v1",
        max_retries=0,
        backoff=(0.001, 0.005),
        environ={},
    )
    judge = OnlineJudge(app, store, config, 1.0, batch_size=100, concurrency=3, clock=clock)
    openai_server.reply = lambda body: VERDICT
    try:
        yield Lab(app, store, clock, judge, openai_server)
    finally:
        store.close()
        app.close()


def configure(lab: Lab, rate: float, repeats: int = 1) -> None:
    judge = {
        "sample_rate": rate,
        "provider": "openai",
        "model": "gpt-4o-mini-2024-07-18",
        "criteria": "The greeting names the person and is polite.",
        "repeats": repeats,
    }
    lab.app.configure_monitor(WS, "greet", judge, None, ALICE)


def test_the_sampled_executions_get_a_judge_score_and_the_others_none(lab: Lab) -> None:
    configure(lab, 0.5)
    ids = lab.report(40)
    lab.report(3, output=None)  # nothing to judge
    sampled = {i for i in ids if sample_of(i) < 0.5}
    assert 0 < len(sampled) < len(ids)

    lab.judge.step()
    assert lab.judge.judged == len(sampled)
    assert lab.judge.errors == 0
    assert len(lab.server.requests) == len(sampled)
    assert lab.unjudged(0.5) == set()
    assert lab.unjudged(1.0) == set(ids) - sampled  # the rest stay unjudged
    count, total = lab.judge_scores()
    assert count == len(sampled)
    assert total == pytest.approx(0.75 * len(sampled))  # a 4 of 1-5 is 0.75

    # what the judge read: the criteria, the rendered prompt, the variables, the output
    body = lab.server.requests[0].body
    sent = str(body["messages"])
    assert "The greeting names the person and is polite." in sent
    assert "Greet Ada." in sent and "Hello Ada!" in sent

    lab.judge.step()  # nothing left: no more calls
    assert len(lab.server.requests) == len(sampled)


def test_executions_before_the_judge_was_switched_on_are_not_judged(lab: Lab) -> None:
    lab.report(10)
    lab.clock.now += timedelta(minutes=1)
    configure(lab, 1.0)
    lab.judge.step()
    assert lab.judge.judged == 0 and lab.server.requests == []
    later = lab.report(2)
    lab.judge.step()
    assert lab.judge.judged == 2
    assert lab.unjudged() & set(later) == set()


def test_a_failing_judge_call_is_counted_and_tried_again_later(lab: Lab) -> None:
    configure(lab, 1.0, repeats=1)
    lab.clock.now += timedelta(seconds=1)
    [only] = lab.report(1)
    lab.server.enqueue(lab.server.status(500))
    lab.judge.step()
    assert (lab.judge.judged, lab.judge.errors) == (0, 1)
    assert lab.unjudged() == {only}

    lab.judge.step()  # backing off: not asked again yet
    assert len(lab.server.requests) == 1

    lab.clock.now += timedelta(minutes=2)
    lab.judge.step()
    assert (lab.judge.judged, lab.judge.errors) == (1, 1)
    assert lab.unjudged() == set()
    assert lab.judge_scores() == (1, pytest.approx(0.75))


def test_an_unparseable_judge_never_scores(lab: Lab) -> None:
    configure(lab, 1.0, repeats=3)
    lab.clock.now += timedelta(seconds=1)
    lab.report(1)
    lab.server.reply = lambda body: "I think it is fine."
    lab.judge.step()
    assert (lab.judge.judged, lab.judge.errors) == (0, 1)
    assert lab.judge_scores()[0] == 0
    assert len(lab.server.requests) == 6  # 3 runs, each asked again once


def test_a_judge_switched_off_or_at_rate_zero_calls_nothing(lab: Lab) -> None:
    configure(lab, 0.0)
    lab.clock.now += timedelta(seconds=1)
    lab.report(5)
    lab.judge.step()
    lab.app.configure_monitor(WS, "greet", None, None, ALICE)
    lab.judge.step()
    assert lab.server.requests == [] and lab.judge.judged == 0


def test_started_loops_stop(lab: Lab, backend: Settings) -> None:
    from promptrecord.workers.online_judge import start_monitoring

    monitoring = start_monitoring(lab.app, backend.model_copy(update={"monitoring_interval": 0.05}))
    monitoring.stop()
    assert not monitoring.drift._thread or not monitoring.drift._thread.is_alive()
    assert not monitoring.judge._thread or not monitoring.judge._thread.is_alive()
