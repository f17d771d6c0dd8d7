"""Executions: production calls as the application reports them, their feedback and scores,
and the hourly rollups the metrics read — the store's interface and what both backends share.

Executions are telemetry, not domain events: too many to fold, never replayed. They go to an
append-only table in the events' database keyed by `(id, started_at)`, so a retried batch
inserts nothing twice. Rollups per (workspace, prompt, version, environment, hour) are
written in the same transaction as the rows actually inserted, so each execution, feedback
and score is counted exactly once without a follower.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from promptrecord.projections.latency_histogram import LatencyHistogram, bucket_of
from promptrecord.settings import Settings

EXECUTIONS_TABLE = "promptrecord_executions"
FEEDBACK_TABLE = "promptrecord_execution_feedback"
SCORES_TABLE = "promptrecord_execution_scores"
ROLLUPS_TABLE = "promptrecord_execution_rollups"
LATENCY_TABLE = "promptrecord_execution_latency"

STATUSES = ("ok", "error", "timeout", "refusal")
RATINGS = ("up", "down")
JUDGE = "judge"
CLIENT = "client"  # the source of a score sent with the execution itself
IMMUTABLE_MESSAGE = "promptrecord executions, feedback and scores are append-only"

_TWO_64 = float(2**64)

# Columns of the executions table, in the order rows are written.
EXECUTION_COLUMNS = (
    "started_at",
    "id",
    "workspace",
    "prompt",
    "version",
    "environment",
    "tenant",
    "request_id",
    "resolve_reason",
    "model",
    "provider",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "status",
    "error",
    "score",
    "input",
    "output",
    "metadata",
    "sample",
    "received_at",
)
ROLLUP_SUMS = (
    "count",
    "ok",
    "error",
    "timeout",
    "refusal",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "unpriced",
    "score_sum",
    "score_sq_sum",
    "score_count",
    "feedback_up",
    "feedback_down",
)
RollupKey = tuple[str, str, int, str, int]  # workspace, prompt, version, environment, hour


def sample_of(execution_id: str) -> float:
    """The execution's place in [0, 1) for deterministic sampling (the online judge)."""
    digest = hashlib.sha256(execution_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_64


def column_values(execution: Execution, started_at: Any, received_at: Any) -> tuple[Any, ...]:
    """An execution as a row in `EXECUTION_COLUMNS` order, `input` and `metadata` as JSON
    text; `started_at` and `received_at` as the caller's store writes times."""
    e = execution
    return (
        started_at,
        e.id,
        e.workspace,
        e.prompt,
        e.version,
        e.environment,
        e.tenant,
        e.request_id,
        e.resolve_reason,
        e.model,
        e.provider,
        e.latency_ms,
        e.tokens_in,
        e.tokens_out,
        e.cost_usd,
        e.status,
        e.error,
        e.score,
        _json_text(e.input),
        e.output,
        _json_text(e.metadata),
        sample_of(e.id),
        received_at,
    )


def _json_text(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def hour_of(moment: datetime) -> int:
    """Unix seconds of the start of the hour `moment` falls in: the rollups' time key."""
    return math.floor(moment.timestamp() / 3600) * 3600


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour, UTC)


@dataclass(slots=True)
class Execution:
    """One production call, validated and priced, as stored. Not changed once made (not
    frozen only because a frozen dataclass costs 4x to build, 1,000 times a batch)."""

    id: str
    workspace: str
    prompt: str
    version: int
    environment: str
    started_at: datetime
    status: str
    latency_ms: float
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None
    tenant: str | None = None
    request_id: str | None = None
    resolve_reason: str | None = None
    model: str | None = None
    provider: str | None = None
    error: str | None = None
    score: float | None = None
    input: dict[str, Any] | None = None
    output: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[datetime, str]:
        return (self.started_at, self.id)

    @property
    def rollup_key(self) -> RollupKey:
        return (
            self.workspace,
            self.prompt,
            self.version,
            self.environment,
            hour_of(self.started_at),
        )


@dataclass
class RollupDelta:
    """What one batch adds to one rollup row, and to its latency histogram."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ROLLUP_SUMS, 0))
    latency: dict[int, int] = field(default_factory=dict)

    def add_execution(self, execution: Execution) -> None:
        sums = self.sums
        sums["count"] += 1
        sums[execution.status] += 1
        sums["tokens_in"] += execution.tokens_in
        sums["tokens_out"] += execution.tokens_out
        if execution.cost_usd is None:
            sums["unpriced"] += 1
        else:
            sums["cost_usd"] += execution.cost_usd
        if execution.score is not None:
            self.add_score(execution.score)
        bucket = bucket_of(execution.latency_ms)
        self.latency[bucket] = self.latency.get(bucket, 0) + 1

    def add_score(self, score: float) -> None:
        self.sums["score_sum"] += score
        self.sums["score_sq_sum"] += score * score
        self.sums["score_count"] += 1


def rollup_deltas(executions: Iterable[Execution]) -> list[tuple[RollupKey, RollupDelta]]:
    """A batch aggregated per rollup row, in key order (a fixed lock order across writers)."""
    deltas: dict[RollupKey, RollupDelta] = {}
    for execution in executions:
        key = execution.rollup_key
        delta = deltas.get(key)
        if delta is None:
            delta = deltas[key] = RollupDelta()
        delta.add_execution(execution)
    return sorted(deltas.items(), key=lambda item: item[0])


@dataclass
class Rollup:
    """One rollup row as read: the sums of one (prompt, version, environment, hour)."""

    prompt: str
    version: int
    environment: str
    hour: int
    sums: dict[str, float]
    latency: LatencyHistogram


@dataclass(frozen=True)
class StoredExecution:
    """What a feedback or a score needs to know of an execution: where it rolls up."""

    id: str
    workspace: str
    prompt: str
    version: int
    environment: str
    started_at: datetime

    @property
    def rollup_key(self) -> RollupKey:
        return (
            self.workspace,
            self.prompt,
            self.version,
            self.environment,
            hour_of(self.started_at),
        )


@dataclass(frozen=True)
class JudgeCandidate:
    """An execution the online judge may score: it has an output and fell in the sample."""

    id: str
    prompt: str
    version: int
    environment: str
    started_at: datetime
    input: dict[str, Any] | None
    output: str
    model: str | None
    sample: float


def assemble(
    prompt: str, environment: str, rows: Sequence[Any], buckets: Sequence[Any]
) -> list[Rollup]:
    """Rollup rows and their latency buckets (both `version, hour, …`) joined in Python."""
    found: dict[tuple[int, int], Rollup] = {}
    for row in rows:
        version, hour = int(row[0]), int(row[1])
        sums = {name: float(value) for name, value in zip(ROLLUP_SUMS, row[2:], strict=True)}
        found[(version, hour)] = Rollup(
            prompt, version, environment, hour, sums, LatencyHistogram()
        )
    for version, hour, bucket, count in buckets:
        rollup = found.get((int(version), int(hour)))
        if rollup is not None:
            rollup.latency.add_bucket(int(bucket), int(count))
    return sorted(found.values(), key=lambda r: (r.version, r.hour))


class ExecutionStore(ABC):
    """Executions, feedback and scores (append-only) and their hourly rollups."""

    @abstractmethod
    def create_tables(self) -> None: ...

    @abstractmethod
    def ingest(self, executions: Iterable[Execution]) -> list[bool]:
        """Insert the executions not stored yet and roll them up, in one transaction.
        Returns, per execution, whether it was new (False: a retry of one stored before).
        The iterator may be a batch's check, the store taking each execution as it comes."""

    @abstractmethod
    def find(self, workspace: str, execution_id: str) -> StoredExecution | None: ...

    @abstractmethod
    def add_feedback(
        self, workspace: str, execution_id: str, rating: str, comment: str | None, at: datetime
    ) -> StoredExecution | None:
        """Record a thumbs up or down and count it in the rollup; None for an unknown id."""

    @abstractmethod
    def add_scores(self, workspace: str, scores: Sequence[tuple[str, float, str]]) -> int:
        """Append `(execution_id, score, source)`; once per (execution, source). Unknown
        executions are skipped. Returns how many were new."""

    @abstractmethod
    def judge_candidates(
        self, workspace: str, prompt: str, sample_rate: float, since: datetime, limit: int
    ) -> list[JudgeCandidate]: ...

    @abstractmethod
    def rollups(
        self,
        workspace: str,
        prompt: str,
        environment: str,
        start_hour: int,
        end_hour: int,
        versions: Sequence[int] | None = None,
    ) -> list[Rollup]:
        """Rollup rows of hours in [start_hour, end_hour), with their histograms."""

    @abstractmethod
    def version_counts(
        self,
        workspace: str,
        tenant: str,
        prompt: str,
        environment: str,
        start: datetime,
        end: datetime,
    ) -> dict[int, int]:
        """Executions per version the tenant ran in [start, end): what the audit observed."""

    @abstractmethod
    def close(self) -> None: ...


def open_execution_store(settings: Settings) -> ExecutionStore:
    """The store for the database the events live in, with its tables created."""
    env = settings.eventsourcing_env()
    store: ExecutionStore
    if settings.is_postgres:
        from promptrecord.projections.executions_postgres import PostgresExecutionStore

        store = PostgresExecutionStore(env)
    else:
        from promptrecord.projections.executions_sqlite import SQLiteExecutionStore

        store = SQLiteExecutionStore(env["SQLITE_DBNAME"])
    try:
        store.create_tables()
    except BaseException:
        store.close()
        raise
    return store
