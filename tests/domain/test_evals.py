"""Datasets, eval runs and the `require_gate` policy, on both backends: what each command
writes, every way it refuses, and that a refusal writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from support.refusals import log_end, refused

from promptrecord.domain.errors import Conflict, InvalidInput, NotFound
from promptrecord.domain.evals import EvalRun, GateRecord
from promptrecord.domain.policy import EnvironmentPolicy

WS = "acme"
EXACT = [{"type": "exact"}]
THRESHOLDS = {"min_examples": 1}


def examples(*ids: str, prefix: str = "q") -> list[dict[str, Any]]:
    return [{"id": i, "inputs": {"question": f"{prefix}{i}"}, "reference": f"a{i}"} for i in ids]


def arm(correct: bool) -> dict[str, Any]:
    return {
        "output": "x",
        "correct": correct,
        "score": None,
        "latency_ms": 10.0,
        "input_tokens": 1,
        "output_tokens": 1,
        "cost_usd": None,
        "error": None,
        "grades": [],
    }


def result(example_id: str, candidate: bool = True, baseline: bool = True) -> dict[str, Any]:
    return {"example_id": example_id, "candidate": arm(candidate), "baseline": arm(baseline)}


def setup(record: Any, ids: tuple[str, ...] = ("1", "2", "3")) -> None:
    record.new_prompt("bot", "one", "two", "three")
    record.app.create_dataset(WS, "golden", record.alice, examples=examples(*ids))


def finished_run(record: Any, candidate: int, baseline: int, passed: bool) -> str:
    """A run of `candidate` against `baseline` on `golden`, completed with `passed`."""
    run_id = record.app.request_eval(
        WS, record.ci, "bot", candidate, "golden", EXACT, THRESHOLDS, baseline=baseline
    ).value
    run = record.app.eval_run(WS, run_id)
    record.app.start_eval(WS, run_id, "worker-1")
    ids = [
        e["id"] for e in record.app.dataset(WS, "golden").examples_at(run.spec["dataset_version"])
    ]
    record.app.record_eval_results(WS, run_id, [result(i, candidate=passed) for i in ids])
    reasons = [] if passed else [{"code": "significant_regression", "detail": "worse"}]
    verdict = {"passed": passed, "reasons": reasons, "n_examples": len(ids), "regressed_ids": []}
    record.app.complete_eval(WS, run_id, verdict, passed)
    return str(run_id)


# --------------------------------------------------------------------------- datasets


def test_each_append_is_a_new_immutable_version(record: Any) -> None:
    created = record.app.create_dataset(WS, "golden", record.alice, description="support")
    assert created.value == {"name": "golden", "version": 0, "count": 0}
    one = record.app.append_examples(WS, "golden", examples("1", "2"), record.alice, "first")
    two = record.app.append_examples(WS, "golden", examples("3"), record.bob, "more")
    assert (one.value["version"], one.value["count"]) == (1, 2)
    assert (two.value["version"], two.value["count"]) == (2, 3)
    dataset = record.app.dataset(WS, "golden")
    assert [e["id"] for e in dataset.examples_at(1)] == ["1", "2"]
    assert [e["id"] for e in dataset.examples_at(2)] == ["1", "2", "3"]
    first, second = dataset.versions
    assert (first["added"], first["message"], second["actor"]["key_id"]) == (2, "first", "key-bob")
    assert first["digest"] != second["digest"] and len(second["digest"]) == 64
    assert dataset.examples_at(2)[2] == {
        "id": "3",
        "inputs": {"question": "q3"},
        "reference": "a3",
        "tags": [],
    }
    assert record.event_names()[-3:] == [
        "Dataset.Created",
        "Dataset.ExamplesAppended",
        "Dataset.ExamplesAppended",
    ]


def test_create_with_examples_is_one_commit_and_normalises(record: Any) -> None:
    before = log_end(record)
    raw = [{"id": 7, "inputs": {}, "reference": {"answer": 1}, "tags": ["billing"]}]
    record.app.create_dataset(WS, "golden", record.alice, examples=raw)
    assert log_end(record) == before + 2
    stored = record.app.dataset(WS, "golden").examples_at(1)[0]
    assert stored == {"id": "7", "inputs": {}, "reference": '{"answer": 1}', "tags": ["billing"]}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("not an object", "examples[0]"),
        ({"id": "", "inputs": {}}, "examples[0].id"),
        ({"id": "has space"}, "examples[0].id"),
        ({"id": "1", "inputs": []}, "examples[0].inputs"),
        ({"id": "1", "tags": "billing"}, "examples[0].tags"),
        ({"id": "1", "answer": "x"}, "examples[0].answer"),
    ],
)
def test_bad_examples_are_refused_naming_the_field(record: Any, bad: Any, field: str) -> None:
    record.app.create_dataset(WS, "golden", record.alice)
    error = refused(
        record, InvalidInput, "invalid_input", record.app.append_examples, WS, "golden", [bad],
        record.alice,
    )  # fmt: skip
    assert error.field == field


def test_dataset_refusals(record: Any) -> None:
    record.app.create_dataset(WS, "golden", record.alice, examples=examples("1"))
    refused(
        record, Conflict, "dataset_exists", record.app.create_dataset, WS, "golden", record.alice
    )
    refused(
        record, InvalidInput, "invalid_input", record.app.create_dataset, WS, "Bad Name",
        record.alice,
    )  # fmt: skip
    refused(
        record, NotFound, "dataset_not_found", record.app.append_examples, WS, "nope",
        examples("2"), record.alice,
    )  # fmt: skip
    error = refused(
        record, Conflict, "duplicate_example", record.app.append_examples, WS, "golden",
        examples("2", "1"), record.alice,
    )  # fmt: skip
    assert error.field == "examples[1].id"
    error = refused(
        record, InvalidInput, "duplicate_example", record.app.append_examples, WS, "golden",
        examples("5", "5"), record.alice,
    )  # fmt: skip
    assert error.field == "examples[1].id"
    refused(
        record, InvalidInput, "invalid_input", record.app.append_examples, WS, "golden", [],
        record.alice,
    )  # fmt: skip
    refused(
        record, Conflict, "stale_revision", record.app.append_examples, WS, "golden",
        examples("9"), record.alice, expected_revision=1,
    )  # fmt: skip


# --------------------------------------------------------------------------- eval runs


def test_request_resolves_the_baseline_and_dataset_version(record: Any) -> None:
    setup(record)
    record.app.promote(WS, "bot", "production", 2, record.bob)
    record.app.append_examples(WS, "golden", examples("4"), record.alice)
    run_id = record.app.request_eval(
        WS, record.ci, "bot", 3, "golden", EXACT, THRESHOLDS, against="production",
        dataset_version=1, concurrency=4, batch_size=2, provider="offline", reason="pr 12",
    ).value  # fmt: skip
    run = record.app.eval_run(WS, run_id)
    assert len(run_id) == 32 and run.status == "requested" and run.attempts == 0
    spec = run.spec
    assert (spec["candidate"], spec["baseline"], spec["against"]) == (3, 2, "production")
    assert (spec["dataset"], spec["dataset_version"], spec["example_count"]) == ("golden", 1, 3)
    assert spec["dataset_digest"] == record.app.dataset(WS, "golden").versions[0]["digest"]
    assert (spec["concurrency"], spec["batch_size"], spec["provider"]) == (4, 2, "offline")
    assert (spec["graders"], spec["thresholds"], spec["reason"]) == (EXACT, THRESHOLDS, "pr 12")
    assert run.requested_by["key_id"] == "key-ci"
    # Without a dataset version, the latest at request time.
    later = record.app.request_eval(WS, record.ci, "bot", 3, "golden", EXACT, {}, baseline=1)
    assert record.app.eval_run(WS, later.value).spec["example_count"] == 4


def test_request_refusals_write_nothing(record: Any) -> None:
    setup(record)
    app, ci = record.app, record.ci

    def ask(code: str, error: type, **kwargs: Any) -> Any:
        args = {"prompt": "bot", "candidate": 2, "dataset": "golden", "baseline": 1}
        args.update(kwargs)
        return refused(
            record, error, code, app.request_eval, WS, ci, args.pop("prompt"),
            args.pop("candidate"), args.pop("dataset"), args.pop("graders", EXACT),
            args.pop("thresholds", THRESHOLDS), **args,
        )  # fmt: skip

    ask("prompt_not_found", NotFound, prompt="nope")
    ask("version_not_found", NotFound, candidate=9)
    ask("version_not_found", NotFound, baseline=9)
    assert ask("invalid_input", InvalidInput, against="production").field == "against"
    assert ask("invalid_input", InvalidInput, baseline=None).field == "against"
    assert ask("not_deployed", Conflict, baseline=None, against="production").field == "against"
    ask("environment_not_found", NotFound, baseline=None, against="moon")
    ask("dataset_not_found", NotFound, dataset="nope")
    ask("dataset_version_not_found", InvalidInput, dataset_version=2)
    assert ask("invalid_input", InvalidInput, graders=[]).field == "graders"
    assert ask("invalid_input", InvalidInput, concurrency=0).field == "concurrency"
    assert ask("invalid_input", InvalidInput, batch_size=10_000).field == "batch_size"
    app.create_dataset(WS, "empty", record.alice)
    ask("dataset_empty", Conflict, dataset="empty")
    refused(record, NotFound, "run_not_found", app.eval_run, WS, "not-an-id")
    refused(record, NotFound, "run_not_found", app.start_eval, WS, "0" * 32, "w")


def test_results_are_counted_once_and_complete_writes_the_gate_index(record: Any) -> None:
    setup(record)
    app = record.app
    run_id = app.request_eval(WS, record.ci, "bot", 2, "golden", EXACT, THRESHOLDS, baseline=1)
    run_id = run_id.value
    assert app.start_eval(WS, run_id, "w1").value == 1
    assert app.record_eval_results(WS, run_id, [result("1"), result("2")]).value == 2
    # A batch holding one recorded example is refused whole.
    error = refused(
        record, Conflict, "already_recorded", app.record_eval_results, WS, run_id,
        [result("3"), result("2")],
    )  # fmt: skip
    assert error.extra["example_id"] == "2"
    refused(
        record, Conflict, "already_recorded", app.record_eval_results, WS, run_id,
        [result("3"), result("3")],
    )  # fmt: skip
    refused(record, InvalidInput, "invalid_input", app.record_eval_results, WS, run_id, [])
    refused(record, Conflict, "run_incomplete", app.complete_eval, WS, run_id, {}, True)
    assert app.start_eval(WS, run_id, "w2").value == 2  # a resumed worker counts an attempt
    refused(
        record, Conflict, "too_many_results", app.record_eval_results, WS, run_id,
        [result("3"), result("4")],
    )  # fmt: skip
    app.record_eval_results(WS, run_id, [result("3", candidate=False)])
    before = log_end(record)
    verdict = {"passed": False, "reasons": [{"code": "below_win_rate_floor", "detail": "x"}]}
    app.complete_eval(WS, run_id, verdict, False)
    run = app.eval_run(WS, run_id)
    assert (run.status, run.passed, run.attempts, list(run.results)) == (
        "completed",
        False,
        2,
        ["1", "2", "3"],
    )
    written = [type(e).__qualname__ for p, e in record.events() if p > before]
    assert sorted(written) == [
        "EvalRun.Completed",
        "GateRecord.Created",
        "GateRecord.VerdictRecorded",
    ]
    gate = app.repository.get(GateRecord.create_id(WS, "bot", 2, 1, "golden"))
    assert gate.latest["run_id"] == run_id and gate.latest["passed"] is False
    assert gate.latest["summary"]["reasons"] == ["below_win_rate_floor"]
    for call, args in (
        (app.start_eval, ("w3",)),
        (app.record_eval_results, ([result("9")],)),
        (app.complete_eval, ({}, True)),
        (app.fail_eval, ("x", "y")),
    ):
        refused(record, Conflict, "run_finished", call, WS, run_id, *args)


def test_a_failed_run_records_why_and_stays_failed(record: Any) -> None:
    setup(record)
    run_id = record.app.request_eval(
        WS, record.ci, "bot", 2, "golden", EXACT, THRESHOLDS, baseline=1
    ).value
    record.app.fail_eval(WS, run_id, "unknown_provider", "no provider 'x'")
    run = record.app.eval_run(WS, run_id)
    assert (run.status, run.error) == (
        "failed",
        {"code": "unknown_provider", "detail": "no provider 'x'"},
    )
    assert isinstance(run, EvalRun) and run.finished
    refused(record, Conflict, "run_finished", record.app.start_eval, WS, run_id, "w")


# --------------------------------------------------------------------------- require_gate


def gate_policy(record: Any, **extra: Any) -> None:
    policy = EnvironmentPolicy(require_gate=True, gate_dataset="golden", **extra)
    record.app.set_policy(WS, "production", policy, record.bob)


def test_policy_needs_a_dataset_name() -> None:
    with pytest.raises(InvalidInput) as caught:
        EnvironmentPolicy.from_dict({"require_gate": True})
    assert caught.value.field == "policy.gate_dataset"
    with pytest.raises(InvalidInput) as caught:
        EnvironmentPolicy.from_dict({"require_gate": True, "gate_dataset": "Not A Name"})
    assert caught.value.field == "policy.gate_dataset"


def test_promotion_is_refused_without_a_passing_run_and_allowed_with_one(record: Any) -> None:
    setup(record)
    app = record.app
    app.promote(WS, "bot", "production", 1, record.bob)
    gate_policy(record)
    error = refused(
        record, Conflict, "gate_required", app.promote, WS, "bot", "production", 2, record.bob
    )
    assert (
        "promptrecord gate bot --candidate 2 --against production --dataset golden" in error.detail
    )
    blocked = finished_run(record, 2, 1, passed=False)
    error = refused(
        record, Conflict, "gate_blocked", app.promote, WS, "bot", "production", 2, record.bob
    )
    assert error.extra["run_id"] == blocked and "significant_regression" in error.detail
    # A run against another baseline, or on another dataset, does not count.
    finished_run(record, 2, 3, passed=True)
    refused(record, Conflict, "gate_blocked", app.promote, WS, "bot", "production", 2, record.bob)
    passing = finished_run(record, 2, 1, passed=True)
    result = app.promote(WS, "bot", "production", 2, record.bob)
    assert result.value["status"] == "promoted"
    promoted = record.events()[-1][1]
    assert type(promoted).__qualname__ == "Deployment.Promoted"
    assert promoted.gate["run_id"] == passing and promoted.gate["passed"] is True
    assert promoted.gate["baseline"] == 1 and promoted.gate["dataset"] == "golden"
    # The newest verdict decides: a later blocked run of 3 against 2 refuses 3 again.
    finished_run(record, 3, 2, passed=True)
    finished_run(record, 3, 2, passed=False)
    refused(record, Conflict, "gate_blocked", app.promote, WS, "bot", "production", 3, record.bob)


def test_nothing_served_yet_means_no_baseline_to_gate_on(record: Any) -> None:
    setup(record)
    gate_policy(record)
    record.app.promote(WS, "bot", "production", 1, record.bob)
    promoted = record.events()[-1][1]
    assert promoted.gate == {"dataset": "golden", "status": "no_baseline", "passed": None}
    # Other environments are not gated.
    record.app.promote(WS, "bot", "staging", 2, record.bob)
    assert record.events()[-1][1].gate is None


def test_approvers_see_the_gate_and_the_last_approval_checks_it_again(record: Any) -> None:
    setup(record)
    app = record.app
    app.promote(WS, "bot", "production", 1, record.bob)
    gate_policy(record, required_approvals=1)
    refused(record, Conflict, "gate_required", app.promote, WS, "bot", "production", 2, record.bob)
    run_id = finished_run(record, 2, 1, passed=True)
    opened = app.promote(WS, "bot", "production", 2, record.bob)
    request_id = opened.value["request_id"]
    request = app.deployment(WS, "bot", "production").requests[request_id]
    assert request["gate"]["run_id"] == run_id
    assert request["gate"]["summary"]["passed"] is True
    # Meanwhile a newer run blocks: the approval that would promote is refused.
    finished_run(record, 2, 1, passed=False)
    refused(
        record, Conflict, "gate_blocked", app.approve, WS, "bot", "production", request_id,
        record.carol,
    )  # fmt: skip
    finished_run(record, 2, 1, passed=True)
    done = app.approve(WS, "bot", "production", request_id, record.carol)
    assert done.value["status"] == "promoted"


def test_rollout_starts_ungated_but_completes_only_with_a_passing_run(record: Any) -> None:
    setup(record)
    app = record.app
    app.promote(WS, "bot", "production", 1, record.bob)
    gate_policy(record)
    app.start_rollout(WS, "bot", "production", 2, 0.1, record.bob)
    refused(
        record, Conflict, "gate_required", app.complete_rollout, WS, "bot", "production",
        record.bob,
    )  # fmt: skip
    run_id = finished_run(record, 2, 1, passed=True)
    assert app.complete_rollout(WS, "bot", "production", record.bob).value["version"] == 2
    completed = record.events()[-1][1]
    assert type(completed).__qualname__ == "Deployment.RolloutCompleted"
    assert completed.gate["run_id"] == run_id
    # The kill switch is never gated.
    app.rollback(WS, "bot", "production", "regression in prod", record.bob)
    assert app.deployment(WS, "bot", "production").serving == 1
