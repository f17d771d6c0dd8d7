"""The dataset and eval-run views folded from a scripted history, on SQLite and PostgreSQL.

The history: a dataset created and appended to twice (and an empty one); run A requested,
started twice, recorded in two batches and completed; run B failed; run C only requested;
run D recorded without a start; a run in another workspace; promotion requests with and
without an eval gate. Every column is asserted; a rebuild gives the rows folding gave.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from support.histories import START, Clock, content

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor, event_id
from promptrecord.domain.evals import EvalRun
from promptrecord.domain.policy import EnvironmentPolicy
from promptrecord.domain.resolution import ResolutionState
from promptrecord.projections.live_seed import seed_state
from promptrecord.projections.view_sql import META
from promptrecord.projections.views import (
    VIEW_NAMES,
    DatasetEntry,
    DatasetVersionEntry,
    EvalRunEntry,
    ExampleEntry,
    ViewStore,
    open_view_store,
)
from promptrecord.workers.arms import usage_totals

World = tuple[PromptRecord, Clock, ViewStore]
ALICE = Actor("key-alice", "alice (editor)")
BOB = Actor("key-ci", "ci pipeline", on_behalf_of="bob")
WS, BOT, GOLDEN = "acme", "support-bot", "golden"
A, B, C, D, G = (letter * 32 for letter in "abcdf")
EXACT = [{"type": "exact"}]
THRESHOLDS = {"min_examples": 1}


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def arm(correct: bool, cost: float | None = 0.25, error: str | None = None, **more: Any) -> Any:
    tokens = (0, 0) if error else (10, 5)
    return {
        "output": None if error else "answer",
        "correct": correct,
        "score": None,
        "latency_ms": 120.0,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cost_usd": None if error else cost,
        "error": error,
        "grades": [],
        **more,
    }


JUDGED = [
    {
        "type": "judge",
        "correct": False,
        "score": 2.0,
        "error": None,
        "details": {
            "usage": {"calls": 3, "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.125}
        },
    }
]
BATCH_1 = [
    {"example_id": "e1", "candidate": arm(True), "baseline": arm(True)},
    {"example_id": "e2", "candidate": arm(False), "baseline": arm(True)},  # regressed
    {"example_id": "e3", "candidate": arm(True), "baseline": arm(False)},  # improved
]
BATCH_2 = [
    {"example_id": "e4", "candidate": arm(False, error="timeout"), "baseline": arm(True)},
    {"example_id": "e5", "candidate": arm(False, grades=JUDGED), "baseline": arm(False)},
]
VERDICT = {"passed": True, "reasons": [], "n_examples": 5, "usage": {"calls": 12}}


def examples(*ids: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": i, "inputs": {"question": f"q{i}"}, "reference": f"a{i}", **extra} for i in ids]


def script(app: PromptRecord, clock: Clock) -> None:
    """The history every test here folds; minute marks are what the assertions use."""

    def step(minutes: float) -> None:
        clock.now = at(minutes)

    app.create_workspace(WS)
    app.create_prompt(WS, ALICE, name=BOT, content=content("v1"))
    app.commit_version(WS, BOT, content("v2"), ALICE)
    app.promote(WS, BOT, "production", 1, BOB)
    step(1)
    app.create_dataset(WS, GOLDEN, ALICE, description="support questions")
    step(2)
    app.append_examples(WS, GOLDEN, examples("e1", "e2", "e3"), ALICE, message="first")
    step(3)
    app.append_examples(WS, GOLDEN, examples("e4", "e5", reference=None, tags=["hard"]), BOB)
    app.create_dataset(WS, "alpha", BOB)
    step(4)
    app.request_eval(WS, ALICE, BOT, 2, GOLDEN, EXACT, THRESHOLDS, baseline=1, batch_size=3,
                     reason="nightly", run_id=A)  # fmt: skip
    step(5)
    app.start_eval(WS, A, "worker-1")
    step(6)
    app.record_eval_results(WS, A, BATCH_1)
    step(7)
    app.start_eval(WS, A, "worker-2")  # the first worker died: a second attempt
    step(8)
    app.record_eval_results(WS, A, BATCH_2)
    step(9)
    app.complete_eval(WS, A, VERDICT, True)
    step(10)
    app.request_eval(WS, BOB, BOT, 2, GOLDEN, EXACT, THRESHOLDS, against="production",
                     dataset_version=1, provider="offline", run_id=B)  # fmt: skip
    app.start_eval(WS, B, "worker-1")
    step(11)
    app.fail_eval(WS, B, "provider_error", "anthropic answered 529 overloaded")
    step(12)
    app.request_eval(WS, ALICE, BOT, 1, GOLDEN, EXACT, THRESHOLDS, baseline=2, run_id=C)
    step(13)
    app.request_eval(WS, ALICE, BOT, 2, GOLDEN, EXACT, THRESHOLDS, baseline=1, run_id=D)
    app.record_eval_results(WS, D, BATCH_1[:1])  # before any Started: running all the same
    app.create_workspace("globex")
    app.create_prompt("globex", ALICE, name=BOT, content=content("g1"))
    app.create_dataset("globex", GOLDEN, ALICE, examples=examples("g1"))
    app.request_eval("globex", ALICE, BOT, 1, GOLDEN, EXACT, THRESHOLDS, baseline=1, run_id=G)
    step(14)
    app.set_policy(WS, "staging", EnvironmentPolicy(required_approvals=1), BOB)
    app.promote(WS, BOT, "staging", 2, BOB, reason="no gate here")
    gated = EnvironmentPolicy(required_approvals=1, require_gate=True, gate_dataset=GOLDEN)
    app.set_policy(WS, "production", gated, BOB)
    step(15)
    app.promote(WS, BOT, "production", 2, BOB, reason="run A passed")


def log(app: PromptRecord) -> list[tuple[int, Any]]:
    return list(app.read_events(0, 10_000))


def applied(world: World) -> list[tuple[int, Any]]:
    """Script the history and apply it in batches of 4; the log."""
    app, clock, store = world
    script(app, clock)
    events = log(app)
    position = store.position()
    for start in range(0, len(events), 4):
        position = store.apply(position, events[start : start + 4])
    return events


def found(events: list[tuple[int, Any]], type_name: str, run_id: str | None = None) -> list[Any]:
    """(position, event) of each event of the type, of one run when `run_id` is given."""
    run = None if run_id is None else EvalRun.create_id(WS, run_id)
    return [
        item
        for item in events
        if type(item[1]).__qualname__ == type_name and run in (None, item[1].originator_id)
    ]


def test_datasets_versions_and_examples_hold_every_column(world: World) -> None:
    app, _, store = world
    events = applied(world)
    assert store.datasets(WS) == [
        DatasetEntry(WS, "alpha", "", 0, 0, BOB.as_dict(), at(3), at(3), revision=1),
        DatasetEntry(WS, GOLDEN, "support questions", 2, 5, ALICE.as_dict(), at(1), at(3), 3),
    ]
    assert [d.name for d in store.datasets(WS, limit=1)] == ["alpha"]
    assert [d.name for d in store.datasets(WS, after="alpha")] == [GOLDEN]
    assert store.dataset(WS, GOLDEN) == store.datasets(WS)[1]
    assert store.dataset(WS, "missing") is None and store.dataset("globex", "alpha") is None

    held = app.dataset(WS, GOLDEN).versions
    appended = found(events, "Dataset.ExamplesAppended")
    assert store.dataset_versions(WS, GOLDEN) == [
        DatasetVersionEntry(WS, GOLDEN, 1, 3, 3, held[0]["digest"], "first", ALICE.as_dict(),
                            at(2), event_id(appended[0][1])),
        DatasetVersionEntry(WS, GOLDEN, 2, 5, 2, held[1]["digest"], "", BOB.as_dict(), at(3),
                            event_id(appended[1][1])),
    ]  # fmt: skip
    assert store.dataset_versions(WS, "alpha") == []

    first = store.dataset_examples(WS, GOLDEN, 1)
    assert [(e.ordinal, e.example_id, e.version) for e in first] == [
        (1, "e1", 1),
        (2, "e2", 1),
        (3, "e3", 1),
    ]
    assert first[0] == ExampleEntry(WS, GOLDEN, 1, "e1", {"question": "qe1"}, "ae1", [], 1)
    second = store.dataset_examples(WS, GOLDEN, 2)
    assert second[:3] == first
    assert second[3] == ExampleEntry(WS, GOLDEN, 4, "e4", {"question": "qe4"}, None, ["hard"], 2)
    # Paging within a version: an example of version 2 is never in version 1's download.
    assert [e.example_id for e in store.dataset_examples(WS, GOLDEN, 1, after=2)] == ["e3"]
    assert [e.example_id for e in store.dataset_examples(WS, GOLDEN, 1, after=3)] == []
    page = store.dataset_examples(WS, GOLDEN, 2, after=2, limit=2)
    assert [e.example_id for e in page] == ["e3", "e4"]
    assert store.dataset_examples(WS, GOLDEN, 3) == []
    assert store.dataset_examples(WS, "alpha", 1) == []
    examples_of_aggregate = app.dataset(WS, GOLDEN).examples_at(2)
    assert [
        {"id": e.example_id, "inputs": e.inputs, "reference": e.reference, "tags": e.tags}
        for e in second
    ] == examples_of_aggregate


def expected_run_a(events: list[tuple[int, Any]], app: PromptRecord) -> EvalRunEntry:
    requested = found(events, "EvalRun.Requested", A)[0][0]
    return EvalRunEntry(
        WS, A, BOT, 2, 1, None, GOLDEN, 2, 5, recorded=5, status="completed", attempts=2,
        passed=True, verdict=VERDICT, error=None, spec=app.eval_run(WS, A).spec,
        requested_by=ALICE.as_dict(), requested_at=at(4), started_at=at(7), updated_at=at(9),
        completed_at=at(9), position=requested, candidate_correct=2, baseline_correct=3,
        errors=1,
        usage={"calls": 12, "input_tokens": 190, "output_tokens": 65, "cost_usd": 2.375},
    )  # fmt: skip


def test_an_eval_run_holds_every_column_and_its_progress_as_it_goes(world: World) -> None:
    app, clock, store = world
    script(app, clock)
    events = log(app)
    run_a = expected_run_a(events, app)
    # While run A went: after its first batch the views show its tallies so far.
    batch_1 = found(events, "EvalRun.ResultsRecorded", A)[0][0]
    store.apply(0, [item for item in events if item[0] <= batch_1])
    assert store.eval_run(WS, A) == replace(
        run_a, recorded=3, status="running", attempts=1, passed=None, verdict=None,
        started_at=at(5), updated_at=at(6), completed_at=None, candidate_correct=2,
        baseline_correct=2, errors=0,
        usage={"calls": 6, "input_tokens": 60, "output_tokens": 30, "cost_usd": 1.5},
    )  # fmt: skip
    store.apply(batch_1, [item for item in events if item[0] > batch_1])
    assert store.eval_run(WS, A) == run_a
    assert run_a.spec["reason"] == "nightly" and run_a.spec["batch_size"] == 3
    # The running tallies end where the executor's verdict totals do.
    assert run_a.usage == usage_totals(BATCH_1 + BATCH_2)
    assert store.eval_run("globex", A) is None and store.eval_run(WS, "0" * 32) is None

    failed = store.eval_run(WS, B)
    assert failed is not None
    assert (failed.status, failed.passed, failed.verdict, failed.attempts) == (
        "failed", None, None, 1)  # fmt: skip
    assert failed.error == {"code": "provider_error", "detail": "anthropic answered 529 overloaded"}
    assert (failed.against, failed.baseline, failed.dataset_version, failed.example_count) == (
        "production", 1, 1, 3)  # fmt: skip
    assert (failed.started_at, failed.completed_at, failed.updated_at) == (at(10), at(11), at(11))
    assert failed.spec["provider"] == "offline" and failed.requested_by == BOB.as_dict()
    early = store.eval_run(WS, D)
    assert early is not None
    assert (early.status, early.attempts, early.started_at, early.recorded) == (
        "running", 0, None, 1)  # fmt: skip


def test_results_in_recording_order_filtered_and_paged(world: World) -> None:
    _, _, store = world
    applied(world)
    results = store.eval_results(WS, A)
    assert [(r.ordinal, r.example_id) for r in results] == [
        (1, "e1"), (2, "e2"), (3, "e3"), (4, "e4"), (5, "e5")]  # fmt: skip
    flags = [(r.regressed, r.improved, r.errored) for r in results]
    assert flags == [
        (False, False, False),
        (True, False, False),
        (False, True, False),
        (True, False, True),  # the candidate errored, the baseline was right
        (False, False, False),
    ]
    assert results[3].candidate == BATCH_2[0]["candidate"]
    assert results[4].candidate["grades"] == JUDGED and results[4].baseline == arm(False)
    assert asdict(results[0])["workspace"] == WS and results[0].run_id == A

    def ids(**query: Any) -> list[str]:
        return [r.example_id for r in store.eval_results(WS, A, **query)]

    assert ids(only="regressed") == ["e2", "e4"]
    assert ids(only="improved") == ["e3"]
    assert ids(only="errored") == ["e4"]
    assert ids(only="regressed", after=2) == ["e4"]
    assert ids(after=2, limit=2) == ["e3", "e4"]
    assert ids(after=5) == []
    assert [r.example_id for r in store.eval_results(WS, D)] == ["e1"]
    assert store.eval_results(WS, C) == [] and store.eval_results("globex", A) == []
    with pytest.raises(ValueError, match="only must be one of regressed, improved, errored"):
        store.eval_results(WS, A, only="passed")


def test_runs_newest_first_by_prompt_and_status_and_the_unfinished(world: World) -> None:
    _, _, store = world
    applied(world)

    def runs(**query: Any) -> list[str]:
        return [r.run_id for r in store.eval_runs(WS, **query)]

    assert runs() == [D, C, B, A]
    assert runs(status="completed") == [A]
    assert runs(status="failed") == [B]
    assert runs(status="running") == [D]
    assert runs(prompt=BOT, status="requested") == [C]
    assert runs(prompt="other") == []
    assert runs(limit=2) == [D, C]
    cursor = store.eval_run(WS, C).position  # type: ignore[union-attr]
    assert runs(before=cursor) == [B, A]
    assert runs(before=cursor, limit=1) == [B]
    assert [r.run_id for r in store.eval_runs("globex")] == [G]

    unfinished = store.unfinished_eval_runs()
    assert [(r.workspace, r.run_id, r.status) for r in unfinished] == [
        (WS, C, "requested"), (WS, D, "running"), ("globex", G, "requested")]  # fmt: skip
    assert [r.run_id for r in store.unfinished_eval_runs(limit=1)] == [C]


def test_a_promotion_request_shows_the_gate_it_passed(world: World) -> None:
    app, _, store = world
    applied(world)
    [ungated] = store.promotion_requests(WS, BOT, "staging")
    assert (ungated.reason, ungated.gate) == ("no gate here", None)
    [request] = store.promotion_requests(WS, BOT, "production")
    assert (request.version, request.status, request.reason) == (2, "pending", "run A passed")
    assert request.gate is not None
    assert request.gate == {
        "dataset": GOLDEN,
        "status": "passed",
        "passed": True,
        "run_id": A,
        "dataset_version": 2,
        "baseline": 1,
        "summary": {"passed": True, "reasons": [], "n_examples": 5},
    }
    held = app.deployment(WS, BOT, "production")
    assert held is not None and held.requests[request.request_id]["gate"] == request.gate


def test_audit_rows_of_datasets_and_runs(world: World) -> None:
    _, _, store = world
    events = applied(world)
    kinds = ("Dataset.", "EvalRun.", "GateRecord.")
    rows = [e for e in store.audit_log(WS, limit=1000) if e.type.startswith(kinds)]
    assert [(e.type, e.prompt, e.version, e.dataset, e.run_id, e.reason) for e in rows] == [
        ("Dataset.Created", None, None, GOLDEN, None, None),
        ("Dataset.ExamplesAppended", None, None, GOLDEN, None, None),
        ("Dataset.ExamplesAppended", None, None, GOLDEN, None, None),
        ("Dataset.Created", None, None, "alpha", None, None),
        ("EvalRun.Requested", BOT, 2, GOLDEN, A, "nightly"),
        ("EvalRun.Completed", BOT, 2, GOLDEN, A, None),
        ("EvalRun.Requested", BOT, 2, GOLDEN, B, None),
        ("EvalRun.Failed", BOT, 2, GOLDEN, B, "provider_error: anthropic answered 529 overloaded"),
        ("EvalRun.Requested", BOT, 1, GOLDEN, C, None),
        ("EvalRun.Requested", BOT, 2, GOLDEN, D, None),
    ]
    requested = rows[4]
    assert (requested.actor_key_id, requested.actor_key_name, requested.timestamp) == (
        "key-alice", "alice (editor)", at(4))  # fmt: skip
    assert requested.position == found(events, "EvalRun.Requested", A)[0][0]
    assert rows[5].actor_key_id is None and rows[5].environment is None
    assert store.audit_event(requested.event_id) == requested
    promoted = [e for e in store.audit_log(WS, limit=1000) if e.type.startswith("Deployment.")]
    assert all(e.dataset is None and e.run_id is None for e in promoted)


@pytest.mark.parametrize("batch", [1, 6])
def test_rebuild_equals_the_views_applied_in_batches(world: World, batch: int) -> None:
    app, clock, store = world
    script(app, clock)
    events = log(app)
    position = 0
    for start in range(0, len(events), batch):
        position = store.apply(position, events[start : start + batch])
    dumped = {name: store.dump(name) for name in (*VIEW_NAMES, "subjects")}
    touched = ("datasets", "eval_runs", "audit_log", "promotion_requests", "subjects")
    assert all(dumped[name] for name in touched)
    kinds = {row["kind"] for row in dumped["subjects"]}
    assert {"dataset", "eval_run", "gate"} <= kinds
    store.rebuild(app.read_events)
    assert {name: store.dump(name) for name in dumped} == dumped
    for name in ("datasets", "eval_runs", "audit_log", "promotion_requests"):
        store.rebuild(app.read_events, [name])
        assert {n: store.dump(n) for n in dumped} == dumped, name


def test_subjects_of_an_older_release_make_every_view_outdated(world: World) -> None:
    """Views built before the eval subjects existed: `rebuild` of what is outdated (as the
    embedded server does) refolds every view, and the subjects with them."""
    app, clock, store = world
    script(app, clock)
    store.apply(0, log(app))
    before = {name: store.dump(name) for name in (*VIEW_NAMES, "subjects")}
    with store._write() as sql:  # type: ignore[attr-defined]
        meta = store._qualified(META.full_name)  # type: ignore[attr-defined]
        sql.run(f'UPDATE {meta} SET "fingerprint" = ? WHERE "view" = ?', ["older", "subjects"])
    older = open_view_store(app)
    assert set(older.outdated) == {*VIEW_NAMES, "subjects"}
    assert seed_state(older) is None
    report = older.rebuild(app.read_events, list(older.outdated))
    assert report.views == VIEW_NAMES and older.outdated == ()
    assert {name: older.dump(name) for name in before} == before
    assert open_view_store(app).outdated == ()


def test_nul_characters_in_user_data_are_stored_replaced(world: World) -> None:
    """PostgreSQL stores no NUL: one in an example must not stop the projector."""
    app, _, store = world
    app.create_workspace(WS)
    app.create_dataset(WS, GOLDEN, ALICE, description="a\x00b", examples=[
        {"id": "n1", "inputs": {"q\x00": "x\x00y"}, "reference": "r\x00", "tags": ["t\x00"]}
    ])  # fmt: skip
    store.apply(0, log(app))
    [example] = store.dataset_examples(WS, GOLDEN, 1)
    assert (example.inputs, example.reference, example.tags) == (
        {"q\ufffd": "x\ufffdy"}, "r\ufffd", ["t\ufffd"])  # fmt: skip
    assert store.dataset(WS, GOLDEN).description == "a\ufffdb"  # type: ignore[union-attr]


def test_the_live_state_seeds_from_views_holding_eval_subjects(world: World) -> None:
    _, _, store = world
    events = applied(world)
    state = ResolutionState()
    for position, event in events:
        state.apply(event, position)
    assert seed_state(store) == state
