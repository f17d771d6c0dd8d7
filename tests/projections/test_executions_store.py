"""The execution store on both backends: exactly-once ingestion and rollups, feedback,
scores, judge candidates, the audit's observed counts, and append-only tables."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from promptrecord.projections.executions import (
    EXECUTIONS_TABLE,
    FEEDBACK_TABLE,
    Execution,
    ExecutionStore,
    open_execution_store,
    sample_of,
)
from promptrecord.projections.executions_metrics import Figures
from promptrecord.projections.latency_histogram import LatencyHistogram
from promptrecord.settings import Settings

START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
HOURS = (int(START.timestamp()) - 3600, int(START.timestamp()) + 48 * 3600)


def execution(n: int, **changes: object) -> Execution:
    base = Execution(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"execution-{n}")),
        workspace="acme",
        prompt="bot",
        version=1,
        environment="production",
        started_at=START + timedelta(minutes=n),
        status="ok",
        latency_ms=100.0 + n,
        tokens_in=10,
        tokens_out=5,
        cost_usd=0.001,
        tenant="t1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(backend: Settings) -> Iterator[ExecutionStore]:
    opened = open_execution_store(backend)
    try:
        yield opened
    finally:
        opened.close()


def figures(store: ExecutionStore, version: int | None = None) -> Figures:
    rollups = store.rollups("acme", "bot", "production", *HOURS)
    return Figures.of(r for r in rollups if version is None or r.version == version)


def test_a_retried_batch_counts_once(store: ExecutionStore) -> None:
    batch = [execution(n) for n in range(10)]
    assert store.ingest(batch) == [True] * 10
    assert store.ingest(batch) == [False] * 10
    mixed = [execution(3), execution(10), execution(10)]  # one old, one new twice
    assert store.ingest(mixed) == [False, True, False]
    f = figures(store)
    assert f.count == 11
    assert f.sums["tokens_in"] == 110
    assert f.sums["cost_usd"] == pytest.approx(0.011)
    assert f.latency.total == 11


def test_a_repeat_inside_a_new_batch_counts_once(store: ExecutionStore) -> None:
    batch = [execution(20), execution(21), execution(20)]
    assert store.ingest(batch) == [True, True, False]
    assert figures(store).count == 2
    assert store.ingest([execution(22), execution(21)]) == [True, False]
    assert figures(store).count == 3


def test_concurrent_copies_of_a_batch_count_once(store: ExecutionStore) -> None:
    """Both writers may start before either commits: one stores the batch, the other
    waits for its keys and then finds every execution stored."""
    batch = [execution(n) for n in range(300, 400)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(store.ingest, [batch] * 4))
    assert sorted(sum(answer) for answer in answers) == [0, 0, 0, 100]
    f = figures(store)
    assert f.count == 100
    assert f.latency.total == 100


def test_a_day_first_seen_in_the_middle_of_a_batch_is_stored(store: ExecutionStore) -> None:
    """A batch streaming into a known day's partition meets a day with none yet: it is stored
    whole all the same, once, and a retry of it adds nothing."""
    assert store.ingest([execution(600)]) == [True]
    next_day = START + timedelta(hours=30)
    batch = [execution(601), execution(602, started_at=next_day), execution(603)]
    assert store.ingest(iter(batch)) == [True, True, True]
    assert store.ingest(iter(batch)) == [False, False, False]
    f = figures(store)
    assert (f.count, f.latency.total) == (4, 4)


def test_a_histogram_written_by_several_batches_is_their_sum(store: ExecutionStore) -> None:
    """Buckets shared by batches add up, new ones join in order, and a feedback or a score
    (which carry no latencies) leaves the histogram as it was."""
    latencies = [5.0, 5.0, 80.0, 0.0, 1200.0, 80.0, 3.5, 80.0, 99_000.0]
    batches = [latencies[:3], latencies[3:4], latencies[4:]]
    n = 500
    for latencies_of_batch in batches:
        store.ingest([execution((n := n + 1), latency_ms=x) for x in latencies_of_batch])
    store.add_feedback("acme", execution(501).id, "up", None, START)
    assert store.add_scores("acme", [(execution(502).id, 0.5, "judge")]) == 1
    (rollup,) = store.rollups("acme", "bot", "production", *HOURS)
    assert rollup.latency.counts == LatencyHistogram.of(latencies).counts
    assert rollup.sums["count"] == len(latencies)
    assert (rollup.sums["feedback_up"], rollup.sums["score_count"]) == (1, 1)


def test_overlapping_batches_in_opposite_orders_count_once(store: ExecutionStore) -> None:
    """Streamed in arrival order, two such batches may deadlock on each other's keys: the
    one PostgreSQL aborts goes the sorted way and finds the other's rows stored."""
    # Big enough that PostgreSQL inserts each COPY in several flushes, which then interleave.
    batch = [execution(n, started_at=START + timedelta(seconds=n)) for n in range(1000, 2000)]
    store.ingest([execution(699)])  # the day's partition exists: both batches stream
    both_sent = threading.Barrier(2)

    def sent_then_wait(executions: list[Execution]) -> Iterator[Execution]:
        yield from executions
        both_sent.wait(timeout=10)  # neither commits before the other has sent all its rows

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda b: store.ingest(sent_then_wait(b)), [batch, batch[::-1]]))
    assert sorted(sum(answer) for answer in answers) == [0, 1000]
    f = figures(store)
    assert (f.count, f.latency.total) == (1001, 1001)


def test_rollups_count_statuses_cost_scores_and_hours(store: ExecutionStore) -> None:
    store.ingest(
        [
            execution(0, status="error", cost_usd=None),
            execution(1, status="timeout", score=0.5),
            execution(2, score=1.0),
            execution(70, version=2),  # the next hour, another version
        ]
    )
    v1 = figures(store, 1).as_dict()
    assert v1["count"] == 3
    assert v1["statuses"] == {"ok": 1, "error": 1, "timeout": 1, "refusal": 0}
    assert v1["error_rate"] == pytest.approx(2 / 3)
    assert v1["unpriced"] == 1
    assert v1["cost_usd"] == pytest.approx(0.002)
    assert v1["mean_score"] == pytest.approx(0.75)
    assert v1["scored"] == 2
    rollups = store.rollups("acme", "bot", "production", *HOURS)
    assert {(r.version, r.hour) for r in rollups} == {
        (1, int(START.timestamp())),
        (2, int(START.timestamp()) + 3600),
    }
    assert store.rollups("acme", "bot", "staging", *HOURS) == []
    assert [r.version for r in store.rollups("acme", "bot", "production", *HOURS, [2])] == [2]


def test_feedback_counts_in_the_rollup_and_unknown_ids_are_none(store: ExecutionStore) -> None:
    store.ingest([execution(0), execution(1)])
    first, second = execution(0).id, execution(1).id
    assert store.add_feedback("acme", first, "up", "great", START) is not None
    assert store.add_feedback("acme", second, "down", None, START) is not None
    assert store.add_feedback("acme", second, "up", None, START) is not None
    assert store.add_feedback("acme", str(uuid.uuid4()), "up", None, START) is None
    assert store.add_feedback("other", first, "up", None, START) is None  # another workspace
    f = figures(store).as_dict()
    assert (f["feedback_up"], f["feedback_down"]) == (2, 1)
    assert f["feedback_rate"] == pytest.approx(2 / 3)


def test_scores_once_per_execution_and_source(store: ExecutionStore) -> None:
    with_output = [execution(n, output=f"answer {n}", input={"q": n}) for n in range(40)]
    store.ingest([*with_output, execution(50)])  # the last has no output
    everything = store.judge_candidates("acme", "bot", 1.0, START, 100)
    assert len(everything) == 40 and everything[0].input == {"q": 0}
    sampled = store.judge_candidates("acme", "bot", 0.5, START, 100)
    assert {c.id for c in sampled} == {e.id for e in with_output if sample_of(e.id) < 0.5}
    assert all(0 <= c.sample < 0.5 for c in sampled)
    first = everything[0].id
    scores = [(first, 0.8, "judge"), (first, 0.8, "judge"), (str(uuid.uuid4()), 1.0, "judge")]
    assert store.add_scores("acme", scores) == 1
    assert store.add_scores("acme", [(first, 0.2, "judge"), (first, 0.4, "human")]) == 1
    assert first not in {c.id for c in store.judge_candidates("acme", "bot", 1.0, START, 100)}
    f = figures(store)
    assert f.score_count == 2
    assert f.mean_score() == pytest.approx(0.6)


def test_version_counts_for_the_audit(store: ExecutionStore) -> None:
    store.ingest(
        [
            execution(0),
            execution(1, version=2),
            execution(2, version=2),
            execution(3, tenant="t2"),
            execution(4, environment="staging"),
            execution(200, version=3),  # after the window
        ]
    )
    end = START + timedelta(hours=1)
    assert store.version_counts("acme", "t1", "bot", "production", START, end) == {1: 1, 2: 2}
    assert store.version_counts("acme", "t2", "bot", "production", START, end) == {1: 1}
    assert store.version_counts("acme", "nobody", "bot", "production", START, end) == {}


def test_executions_and_feedback_are_append_only(store: ExecutionStore, backend: Settings) -> None:
    store.ingest([execution(0)])
    store.add_feedback("acme", execution(0).id, "up", None, START)
    for table in (EXECUTIONS_TABLE, FEEDBACK_TABLE):
        for statement in ("UPDATE {} SET workspace = 'x'", "DELETE FROM {}"):
            with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
                _run(backend, statement, table)
    assert figures(store).count == 1


def _run(settings: Settings, statement: str, table: str) -> None:
    env = settings.eventsourcing_env()
    if settings.is_postgres:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            qualified = sql.Identifier(env["POSTGRES_SCHEMA"], table)
            conn.execute(sql.SQL(statement).format(qualified))
    else:
        connection = sqlite3.connect(env["SQLITE_DBNAME"])
        try:
            connection.execute(statement.format(table))
        finally:
            connection.close()
