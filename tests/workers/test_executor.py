"""The eval run executor on the real application (SQLite and PostgreSQL), through the official
SDKs against the stand-in model servers."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.evals import EvalRun
from promptrecord.settings import Settings
from promptrecord.workers.executor import ExecutorConfig, RunOutcome, execute_run
from promptrecord.workers.providers import Price, PriceTable

if TYPE_CHECKING:
    from tests.fakes.model_servers import FakeModelServer

WS = "acme"
ALICE = Actor("key-alice", "alice (editor)")
HAIKU = "claude-haiku-4-5"
MINI = "gpt-4o-mini"
KEY = "sk-test-123"
SMALL_POOL = {"POSTGRES_POOL_SIZE": "4", "POSTGRES_MAX_OVERFLOW": "8"}
QUESTION = re.compile(r"Question (q\d+)")
PRICES = PriceTable({HAIKU: Price(1.0, 5.0), MINI: Price(0.15, 0.6)})


@dataclass
class Lab:
    """A workspace on one backend, with helpers to set up prompts, datasets and runs."""

    app: PromptRecord
    settings: Settings
    apps: list[PromptRecord] = field(default_factory=list)

    def another_app(self) -> PromptRecord:
        other = PromptRecord(env={**self.settings.eventsourcing_env(), **SMALL_POOL})
        self.apps.append(other)
        return other

    def prompt(self, name: str, *contents: dict[str, Any]) -> None:
        self.app.create_prompt(WS, ALICE, name=name)
        for content in contents:
            self.app.commit_version(WS, name, content, ALICE)

    def dataset(self, name: str, n: int, reference: str | None = None) -> list[dict[str, Any]]:
        examples = [
            {
                "id": f"q{i}",
                "inputs": {"question": f"Question q{i}"},
                "reference": reference or f"answer {i}",
            }
            for i in range(1, n + 1)
        ]
        self.app.create_dataset(WS, name, ALICE, examples=examples)
        return examples

    def request(self, **options: Any) -> str:
        defaults: dict[str, Any] = {
            "prompt": "support",
            "candidate": 2,
            "baseline": 1,
            "dataset": "faq",
            "graders": [{"type": "exact"}],
            "thresholds": {},
        }
        run_id: str = self.app.request_eval(WS, ALICE, **{**defaults, **options}).value
        return run_id

    def run(self, run_id: str) -> EvalRun:
        return self.app.eval_run(WS, run_id)

    def run_events(self, run_id: str) -> list[Any]:
        return list(self.app.events.get(EvalRun.create_id(WS, run_id)))

    def recorded_ids(self, run_id: str) -> list[str]:
        return [
            result["example_id"]
            for event in self.run_events(run_id)
            if type(event).__name__ == "ResultsRecorded"
            for result in event.results
        ]


@pytest.fixture
def lab(backend: Settings) -> Iterator[Lab]:
    app = PromptRecord(env={**backend.eventsourcing_env(), **SMALL_POOL})
    app.create_workspace(WS, name="Acme")
    found = Lab(app, backend)
    try:
        yield found
    finally:
        for other in [*found.apps, app]:
            other.close()


def chat(provider: str, model: str, system: str, **params: Any) -> dict[str, Any]:
    return {
        "type": "chat",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "{{ question }}"},
        ],
        "model": {"provider": provider, "name": model, **params},
    }


def remote_config(
    anthropic: FakeModelServer | None = None, openai: FakeModelServer | None = None, **kw: Any
) -> ExecutorConfig:
    return ExecutorConfig(
        anthropic_api_key=KEY,
        anthropic_base_url=anthropic.base_url if anthropic else None,
        openai_api_key=KEY,
        openai_base_url=f"{openai.base_url}/v1" if openai else None,
        backoff=(0.001, 0.005),
        prices=PRICES,
        environ={},
        **kw,
    )


def answers(right: set[int]) -> Any:
    """A fake's reply: the reference answer for the questions in `right`, else a wrong one."""

    def reply(body: dict[str, Any]) -> str:
        text = json.dumps(body.get("messages"))
        found = QUESTION.search(text)
        number = int(found.group(1)[1:]) if found else 0
        return f"answer {number}" if number in right else "no idea"

    return reply


def two_providers(lab: Lab) -> None:
    """Version 1 (baseline) on OpenAI, version 2 (candidate) on Anthropic."""
    lab.prompt(
        "support",
        chat("openai", MINI, "You answer FAQs.", temperature=0.7, max_tokens=100),
        chat("anthropic", HAIKU, "You answer FAQs briefly.", temperature=0.1, max_tokens=200),
    )


# --------------------------------------------------------------------------- happy path


def test_a_run_across_two_providers_records_requests_usage_and_the_verdict(
    lab: Lab, anthropic_server: FakeModelServer, openai_server: FakeModelServer
) -> None:
    two_providers(lab)
    lab.dataset("faq", 6)
    anthropic_server.reply = answers({1, 2, 3, 4})  # candidate
    openai_server.reply = answers({1, 2, 5})  # baseline
    anthropic_server.usage = (10, 2)
    openai_server.usage = (20, 4)
    run_id = lab.request(batch_size=4, concurrency=3)

    outcome = execute_run(lab.app, WS, run_id, remote_config(anthropic_server, openai_server), "w1")

    assert outcome.status == "completed"
    assert (outcome.recorded, outcome.total) == (6, 6)
    a_body = anthropic_server.bodies[0]
    assert (a_body["model"], a_body["system"]) == (HAIKU, "You answer FAQs briefly.")
    assert (a_body["temperature"], a_body["max_tokens"]) == (0.1, 200)
    assert a_body["messages"][0]["role"] == "user"
    o_body = openai_server.bodies[0]
    assert (o_body["model"], o_body["temperature"], o_body["max_tokens"]) == (MINI, 0.7, 100)
    assert o_body["messages"][0] == {"role": "system", "content": "You answer FAQs."}
    asked = sorted(json.dumps(b["messages"]) for b in anthropic_server.bodies)
    assert len(asked) == 6 and all("Question q" in text for text in asked)

    run = lab.run(run_id)
    assert run.status == "completed"
    q3 = run.results["q3"]
    assert q3["candidate"]["output"] == "answer 3" and q3["candidate"]["correct"] is True
    assert q3["baseline"]["output"] == "no idea" and q3["baseline"]["correct"] is False
    assert (q3["candidate"]["input_tokens"], q3["candidate"]["output_tokens"]) == (10, 2)
    assert q3["candidate"]["cost_usd"] == pytest.approx((10 * 1.0 + 2 * 5.0) / 1e6)
    assert q3["baseline"]["cost_usd"] == pytest.approx((20 * 0.15 + 4 * 0.6) / 1e6)
    assert q3["candidate"]["grades"][0]["type"] == "exact"
    assert q3["candidate"]["latency_ms"] > 0

    verdict = run.verdict
    assert verdict is not None
    # both right {1, 2}; baseline only {5}; candidate only {3, 4}; both wrong {6}
    assert verdict["table"] == {
        "both_correct": 2,
        "baseline_only": 1,
        "candidate_only": 2,
        "both_wrong": 1,
    }
    assert verdict["regressed_ids"] == ["q5"] and verdict["improved_ids"] == ["q3", "q4"]
    assert verdict["win_rate"]["candidate"] == pytest.approx(4 / 6)
    assert verdict["mcnemar"]["test"] == "exact" and verdict["mcnemar"]["p_value"] == 1.0
    assert verdict["thresholds"]["min_examples"] == 1
    assert verdict["usage"]["calls"] == 12
    assert verdict["usage"]["input_tokens"] == 6 * 10 + 6 * 20
    assert verdict["usage"]["cost_usd"] == pytest.approx(6 * (20e-6 + 5.4e-6))
    assert run.passed is True and outcome.passed is True
    assert sorted(lab.recorded_ids(run_id)) == sorted(run.results)


def test_retried_429_and_500_still_succeed(
    lab: Lab, anthropic_server: FakeModelServer, openai_server: FakeModelServer
) -> None:
    two_providers(lab)
    lab.dataset("faq", 3)
    anthropic_server.reply = answers({1, 2, 3})
    openai_server.reply = answers({1, 2, 3})
    anthropic_server.enqueue(anthropic_server.status(429), anthropic_server.status(500))
    openai_server.enqueue(openai_server.status(503))
    run_id = lab.request(concurrency=1)

    outcome = execute_run(lab.app, WS, run_id, remote_config(anthropic_server, openai_server), "w1")

    assert outcome.status == "completed"
    assert len(anthropic_server.requests) == 3 + 2 and len(openai_server.requests) == 3 + 1
    run = lab.run(run_id)
    assert all(
        r[arm]["correct"] and r[arm]["error"] is None
        for r in run.results.values()
        for arm in ("candidate", "baseline")
    )


def test_a_timeout_and_unparseable_judge_replies_are_arm_errors(
    lab: Lab, anthropic_server: FakeModelServer, openai_server: FakeModelServer
) -> None:
    two_providers(lab)
    lab.dataset("faq", 2)
    anthropic_server.latency = 5.0  # every candidate call outlives the client's timeout
    openai_server.reply = lambda body: (
        "Looks right to me!" if "strict grader" in json.dumps(body) else "answer 1"
    )
    judge = {"type": "judge", "provider": "openai", "model": MINI, "rubric": "Same answer?"}
    run_id = lab.request(graders=[judge], concurrency=4)
    config = remote_config(anthropic_server, openai_server, timeout=0.3, max_retries=1)

    outcome = execute_run(lab.app, WS, run_id, config, "w1")

    assert outcome.status == "completed"
    run = lab.run(run_id)
    for result in run.results.values():
        candidate, baseline = result["candidate"], result["baseline"]
        assert candidate["correct"] is False and "timed out" in candidate["error"]
        assert candidate["output"] is None and candidate["grades"] == []
        assert baseline["correct"] is False and baseline["output"] == "answer 1"
        assert "valid verdict" in baseline["error"]
        assert baseline["grades"][0]["type"] == "judge"
        assert baseline["grades"][0]["correct"] is None
    assert len(anthropic_server.requests) == 2 * 2  # one retry each
    judge_calls = [b for b in openai_server.bodies if "strict grader" in json.dumps(b)]
    assert len(judge_calls) == 2 * 3 * 2  # examples x repeats x attempts
    assert run.verdict is not None and run.verdict["table"]["both_wrong"] == 2


def test_a_missing_variable_is_that_arms_error(lab: Lab) -> None:
    lab.prompt(
        "support",
        chat("offline", "model-a", "Answer."),
        {**chat("offline", "model-b", "Answer in {{ language }}.")},
    )
    lab.dataset("faq", 2)
    run_id = lab.request(graders=[{"type": "contains", "value": "q"}])

    outcome = execute_run(lab.app, WS, run_id, ExecutorConfig(environ={}), "w1")

    assert outcome.status == "completed"
    result = lab.run(run_id).results["q1"]
    assert result["candidate"]["correct"] is False
    assert result["candidate"]["error"].startswith("missing_variable:")
    assert "language" in result["candidate"]["error"]
    assert result["baseline"]["error"] is None


# --------------------------------------------------------------------------- resuming


def test_a_stopped_run_resumes_without_answering_an_example_twice(lab: Lab) -> None:
    lab.prompt("support", chat("offline", "m1", "Be brief."), chat("offline", "m2", "Be kind."))
    examples = lab.dataset("faq", 10)
    run_id = lab.request(batch_size=3, concurrency=2)
    asked: list[int] = []

    def lease_lost() -> bool:
        asked.append(1)
        return False

    first = execute_run(lab.app, WS, run_id, ExecutorConfig(environ={}), "w1", lease_lost)
    assert first == RunOutcome("stopped", 3, 3, None)
    assert len(asked) == 1 and lab.run(run_id).status == "running"

    second = execute_run(lab.app, WS, run_id, ExecutorConfig(environ={}), "w2")
    assert second.status == "completed" and (second.recorded, second.total) == (7, 10)
    ids = lab.recorded_ids(run_id)
    assert sorted(ids) == sorted(e["id"] for e in examples) and len(set(ids)) == len(ids)
    assert lab.run(run_id).attempts == 2

    again = execute_run(lab.app, WS, run_id, ExecutorConfig(environ={}), "w3")
    assert again == RunOutcome("already_finished", 0, 10, second.passed)
    assert lab.run(run_id).attempts == 2  # a finished run is not started again


def test_a_batch_refused_for_one_example_recorded_elsewhere_is_sent_again_without_it(
    lab: Lab,
) -> None:
    lab.prompt("support", chat("offline", "m1", "Be brief."), chat("offline", "m2", "Be kind."))
    examples = lab.dataset("faq", 6)
    run_id = lab.request(batch_size=2, concurrency=1)
    arm = {
        "output": "from the rival",
        "correct": False,
        "score": None,
        "latency_ms": 1.0,
        "input_tokens": 1,
        "output_tokens": 1,
        "cost_usd": None,
        "error": None,
        "grades": [],
    }
    rival = {"example_id": "q4", "candidate": arm, "baseline": arm}

    def rival_records_q4() -> bool:
        if "q4" not in lab.run(run_id).results:
            lab.app.record_eval_results(WS, run_id, [rival])
        return True

    outcome = execute_run(lab.app, WS, run_id, ExecutorConfig(environ={}), "w1", rival_records_q4)

    assert outcome.status == "completed"
    assert (outcome.recorded, outcome.total) == (5, 6)
    ids = lab.recorded_ids(run_id)
    assert sorted(ids) == sorted(e["id"] for e in examples)
    assert lab.run(run_id).results["q4"] == rival


def test_two_workers_at_once_record_each_example_once(
    lab: Lab, anthropic_server: FakeModelServer
) -> None:
    lab.prompt("support", chat("anthropic", HAIKU, "One."), chat("anthropic", HAIKU, "Two."))
    examples = lab.dataset("faq", 24)
    # Random delays make the workers finish examples in different orders, so their batches
    # overlap in part (a batch wholly recorded by the other worker would test less).
    jitter = random.Random(7)
    anthropic_server.enqueue(
        *(
            dataclasses.replace(anthropic_server.slow(jitter.uniform(0, 0.04)), text=None)
            for _ in range(2 * 2 * 24)
        )
    )
    run_id = lab.request(batch_size=2, concurrency=4)
    config = remote_config(anthropic_server)
    apps = [lab.app, lab.another_app()]
    outcomes: list[RunOutcome] = []
    errors: list[BaseException] = []

    def work(app: PromptRecord, name: str) -> None:
        try:
            outcomes.append(execute_run(app, WS, run_id, config, name))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(app, f"w{i}")) for i, app in enumerate(apps)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors
    # whoever records last completes; the other finds the run finished
    assert sorted(o.status for o in outcomes) == ["already_finished", "completed"]
    assert sum(o.recorded for o in outcomes) == 24
    ids = lab.recorded_ids(run_id)
    assert sorted(ids) == sorted(e["id"] for e in examples)
    completions = [e for e in lab.run_events(run_id) if type(e).__name__ == "Completed"]
    assert len(completions) == 1


# --------------------------------------------------------------------------- concurrency


def test_the_concurrency_limit_bounds_every_model_call(
    lab: Lab, anthropic_server: FakeModelServer
) -> None:
    lab.prompt("support", chat("anthropic", HAIKU, "One."), chat("anthropic", HAIKU, "Two."))
    lab.dataset("faq", 10)
    anthropic_server.latency = 0.05
    anthropic_server.reply = lambda body: (
        '{"correct": true, "score": 4}' if "strict grader" in json.dumps(body) else "ok"
    )
    judge = {"type": "judge", "provider": "anthropic", "model": HAIKU, "rubric": "Fine?"}
    run_id = lab.request(graders=[judge], concurrency=3)

    outcome = execute_run(lab.app, WS, run_id, remote_config(anthropic_server), "w1")

    assert outcome.status == "completed"
    assert len(anthropic_server.requests) == 10 * 2 * (1 + 3)
    assert anthropic_server.max_in_flight == 3
    result = lab.run(run_id).results["q1"]["candidate"]
    assert result["correct"] is True and result["score"] == 4.0


# --------------------------------------------------------------------------- failures


def failure(lab: Lab, run_id: str) -> tuple[str, str]:
    failed = [e for e in lab.run_events(run_id) if type(e).__name__ == "Failed"]
    assert len(failed) == 1
    return failed[0].code, failed[0].detail


def test_an_unknown_provider_fails_the_run(lab: Lab) -> None:
    lab.prompt("support", chat("offline", "m", "A."), chat("mistral", "mistral-small", "B."))
    lab.dataset("faq", 2)
    run_id = lab.request()

    outcome = execute_run(lab.app, WS, run_id, ExecutorConfig(environ={}), "w1")

    assert outcome == RunOutcome("failed", 0, 0, None)
    code, detail = failure(lab, run_id)
    assert code == "unknown_provider" and "mistral" in detail


def test_a_provider_without_an_api_key_fails_the_run(lab: Lab) -> None:
    two_providers(lab)
    lab.dataset("faq", 2)
    run_id = lab.request()

    outcome = execute_run(lab.app, WS, run_id, ExecutorConfig(environ={}), "w1")

    assert outcome.status == "failed"
    code, detail = failure(lab, run_id)
    assert code == "missing_api_key" and "ANTHROPIC_API_KEY" in detail


def test_a_refused_api_key_fails_the_run(lab: Lab, anthropic_server: FakeModelServer) -> None:
    lab.prompt("support", chat("anthropic", HAIKU, "A."), chat("anthropic", HAIKU, "B."))
    lab.dataset("faq", 4)
    anthropic_server.api_key = "the-right-key"
    run_id = lab.request()

    outcome = execute_run(lab.app, WS, run_id, remote_config(anthropic_server), "w1")

    assert outcome.status == "failed"
    assert failure(lab, run_id)[0] == "provider_rejected_key"


def test_bad_grader_config_fails_the_run_before_any_model_call(lab: Lab) -> None:
    lab.prompt("support", chat("offline", "m", "A."), chat("offline", "m", "B."))
    lab.dataset("faq", 2)
    run_id = lab.request(graders=[{"type": "exact", "normalise": True}])

    outcome = execute_run(lab.app, WS, run_id, ExecutorConfig(environ={}), "w1")

    assert outcome.status == "failed"
    code, detail = failure(lab, run_id)
    assert code == "invalid_grader" and "graders[0]" in detail and "normalise" in detail


def test_a_missing_dataset_version_fails_the_run(lab: Lab) -> None:
    lab.prompt("support", chat("offline", "m", "A."), chat("offline", "m", "B."))
    lab.dataset("faq", 2)
    run_id = lab.request()
    # A spec naming a version the dataset lacks: written straight to the store, since
    # request_eval refuses one (as a restore from an older backup could leave it).
    spec = {**lab.run(run_id).spec, "dataset_version": 7}
    broken = "f" * 32
    lab.app.save(
        EvalRun(
            workspace=WS,
            run_id=broken,
            spec=spec,
            actor=ALICE.as_dict(),
            timestamp=datetime.now(UTC),
        )
    )

    outcome = execute_run(lab.app, WS, broken, ExecutorConfig(environ={}), "w1")

    assert outcome.status == "failed"
    code, detail = failure(lab, broken)
    assert code == "dataset_version_not_found" and "not 7" in detail
    again = execute_run(lab.app, WS, broken, ExecutorConfig(environ={}), "w1")
    assert again.status == "already_finished"


# --------------------------------------------------------------------------- offline


def test_an_offline_run_is_deterministic(lab: Lab) -> None:
    lab.prompt(
        "support",
        {
            "type": "text",
            "text": "{{ question }} [[answer: yes]]",
            "model": {"provider": "anthropic", "name": HAIKU},
        },
        {
            "type": "text",
            "text": "{{ question }}!! [[answer: yes]]",
            "model": {"provider": "openai", "name": MINI, "offline_accuracy": 0.5},
        },
    )
    lab.dataset("faq", 12, reference="yes")
    judge = {"type": "judge", "provider": "offline", "model": "judge", "rubric": "Same?"}
    graders = [{"type": "contains", "value": "yes"}, judge]
    runs = [lab.request(provider="offline", graders=graders) for _ in range(2)]

    outcomes = [execute_run(lab.app, WS, r, ExecutorConfig(environ={}), "w1") for r in runs]

    assert [o.status for o in outcomes] == ["completed", "completed"]
    first, second = (lab.run(r) for r in runs)
    assert first.verdict == second.verdict
    assert first.results == second.results
    assert first.verdict is not None and first.verdict["table"]["candidate_only"] == 0
    assert first.verdict["win_rate"]["baseline"] == 1.0  # the baseline always answers
    assert 0 < first.verdict["win_rate"]["candidate"] < 1  # the candidate misses some
    assert first.verdict["usage"]["calls"] == 12 * 2 * (1 + 3)
