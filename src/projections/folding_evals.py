"""The views of datasets and eval runs: what `/v1/datasets`, `/v1/evals` and the reconciler read.

Each view reads only its own tables while it folds, so either can be rebuilt alone: a dataset
version's cumulative count comes from the dataset's row, an eval result's ordinal from the
`recorded` total its batch carries.
"""

from __future__ import annotations

from typing import Any

from promptrecord.projections.folding import (
    BOOL,
    INT,
    JSON,
    TEXT,
    TIME,
    Column,
    FoldContext,
    LoggedEvent,
    Row,
    Table,
    View,
    cols,
    require,
    without_nul,
)

DATASETS = Table(
    "datasets",
    (
        *cols("workspace name description", TEXT),
        *cols("latest_version example_count", INT),  # 0 and 0 until the first append
        Column("created_by", JSON, False),
        *cols("created_at updated_at", TIME),
        Column("revision", INT, False),  # the Dataset aggregate's version: its ETag
    ),
    key=("workspace", "name"),
    cached=True,  # every append reads it back
)

DATASET_VERSIONS = Table(
    "dataset_versions",
    (
        *cols("workspace name", TEXT),
        *cols("version count added", INT),  # count: examples in this version, cumulative
        *cols("digest message", TEXT),
        Column("actor", JSON, False),
        Column("created_at", TIME, False),
        Column("event_id", TEXT, False),
    ),
    key=("workspace", "name", "version"),
)

DATASET_EXAMPLES = Table(
    "dataset_examples",
    (
        *cols("workspace name", TEXT),
        Column("ordinal", INT, False),  # 1.. in order of append: version N is ordinals <= count
        Column("example_id", TEXT, False),
        Column("inputs", JSON, False),
        Column("reference", TEXT),
        Column("tags", JSON, False),
        Column("version", INT, False),  # the dataset version that added it
    ),
    key=("workspace", "name", "ordinal"),
)


class DatasetsView(View):
    """Datasets with their versions and examples; examples are never changed or removed."""

    name = "datasets"
    tables = (DATASETS, DATASET_VERSIONS, DATASET_EXAMPLES)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        e, s, at = logged.event, logged.subject, logged.timestamp
        if logged.type == "Dataset.Created":
            ctx.put(
                DATASETS,
                {
                    "workspace": e.workspace,
                    "name": e.name,
                    "description": without_nul(e.description),
                    "latest_version": 0,
                    "example_count": 0,
                    "created_by": without_nul(dict(e.actor)),
                    "created_at": at,
                    "updated_at": at,
                    "revision": e.originator_version,
                },
            )
        elif logged.type == "Dataset.ExamplesAppended":
            key = (s.workspace, s.dataset)
            row = require(ctx.get(DATASETS, key), "dataset %r", s.dataset)
            before = row["example_count"]
            for offset, example in enumerate(e.examples, start=1):
                ctx.put(
                    DATASET_EXAMPLES,
                    {
                        "workspace": s.workspace,
                        "name": s.dataset,
                        "ordinal": before + offset,
                        "example_id": example["id"],
                        "inputs": without_nul(example["inputs"]),
                        "reference": without_nul(example.get("reference")),
                        "tags": without_nul(list(example.get("tags") or [])),
                        "version": e.version,
                    },
                )
            count = before + len(e.examples)
            ctx.put(
                DATASET_VERSIONS,
                {
                    "workspace": s.workspace,
                    "name": s.dataset,
                    "version": e.version,
                    "count": count,
                    "added": len(e.examples),
                    "digest": e.digest,
                    "message": without_nul(e.message),
                    "actor": without_nul(dict(e.actor)),
                    "created_at": at,
                    "event_id": logged.event_id,
                },
            )
            change = {"latest_version": e.version, "example_count": count}
            ctx.put(DATASETS, {**row, **change, "updated_at": at, "revision": e.originator_version})


EVAL_RUNS = Table(
    "eval_runs",
    (
        *cols("workspace run_id prompt", TEXT),
        *cols("candidate baseline", INT),
        Column("against", TEXT),
        Column("dataset", TEXT, False),
        *cols("dataset_version example_count recorded", INT),
        Column("status", TEXT, False),  # requested | running | completed | failed
        Column("attempts", INT, False),
        Column("passed", BOOL),  # NULL until completed
        *cols("verdict error", JSON, True),
        *cols("spec requested_by", JSON),
        Column("requested_at", TIME, False),
        Column("started_at", TIME),  # of the latest attempt
        Column("updated_at", TIME, False),
        Column("completed_at", TIME),  # when it finished: completed or failed
        Column("position", INT, False),  # of Requested: the newest-first cursor
        *cols("candidate_correct baseline_correct errors", INT),
        Column("usage", JSON, False),  # {calls, input_tokens, output_tokens, cost_usd}
    ),
    key=("workspace", "run_id"),
    indexes=(
        ("workspace", "position"),
        ("workspace", "prompt", "position"),
        ("status", "position"),  # unfinished runs, for the reconciler
    ),
    cached=True,  # every batch reads it back
)

EVAL_RESULTS = Table(
    "eval_results",
    (
        *cols("workspace run_id", TEXT),
        Column("ordinal", INT, False),  # 1.. in the order results were recorded
        Column("example_id", TEXT, False),
        *cols("candidate baseline", JSON),  # the arms as the worker recorded them
        *cols("regressed improved errored", BOOL),
    ),
    key=("workspace", "run_id", "ordinal"),
)

NO_USAGE: Row = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": None}


class EvalRunsView(View):
    """Eval runs with their status and running tallies, and their per-example results."""

    name = "eval_runs"
    tables = (EVAL_RUNS, EVAL_RESULTS)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        e, s, at = logged.event, logged.subject, logged.timestamp
        if logged.type == "EvalRun.Requested":
            ctx.put(EVAL_RUNS, requested_row(logged))
            return
        if not logged.type.startswith("EvalRun."):
            return
        row = require(ctx.get(EVAL_RUNS, (s.workspace, s.run_id)), "eval run %r", s.run_id)
        change: Row
        match logged.type:
            case "EvalRun.Started":
                change = {"status": "running", "attempts": e.attempt, "started_at": at}
            case "EvalRun.ResultsRecorded":
                change = self._record(logged, row, ctx)
            case "EvalRun.Completed":
                change = {"status": "completed", "passed": e.passed, "completed_at": at}
                change["verdict"] = without_nul(e.verdict)
            case "EvalRun.Failed":
                change = {"status": "failed", "completed_at": at}
                change["error"] = without_nul({"code": e.code, "detail": e.detail})
            case _:
                return
        ctx.put(EVAL_RUNS, {**row, **change, "updated_at": at})

    @staticmethod
    def _record(logged: LoggedEvent, row: Row, ctx: FoldContext) -> Row:
        e, s = logged.event, logged.subject
        first = e.recorded - len(e.results) + 1  # the batch's ordinals end at `recorded`
        tally = {key: row[key] for key in ("candidate_correct", "baseline_correct", "errors")}
        usage = dict(row["usage"])
        for ordinal, result in enumerate(e.results, start=first):
            candidate = result.get("candidate") or {}
            baseline = result.get("baseline") or {}
            candidate_ok, baseline_ok = (
                bool(candidate.get("correct")),
                bool(baseline.get("correct")),
            )
            errored = candidate.get("error") is not None or baseline.get("error") is not None
            ctx.put(
                EVAL_RESULTS,
                {
                    "workspace": s.workspace,
                    "run_id": s.run_id,
                    "ordinal": ordinal,
                    "example_id": result["example_id"],
                    "candidate": without_nul(candidate),
                    "baseline": without_nul(baseline),
                    "regressed": baseline_ok and not candidate_ok,
                    "improved": candidate_ok and not baseline_ok,
                    "errored": errored,
                },
            )
            tally["candidate_correct"] += candidate_ok
            tally["baseline_correct"] += baseline_ok
            tally["errors"] += errored
            add_usage(usage, candidate)
            add_usage(usage, baseline)
        # Results arriving before any Started move the run on, as in the aggregate.
        status = "running" if row["status"] == "requested" else row["status"]
        return {**tally, "recorded": e.recorded, "usage": usage, "status": status}


def requested_row(logged: LoggedEvent) -> Row:
    e, at = logged.event, logged.timestamp
    spec = without_nul(dict(e.spec))
    return {
        "workspace": e.workspace,
        "run_id": e.run_id,
        "prompt": spec["prompt"],
        "candidate": spec["candidate"],
        "baseline": spec["baseline"],
        "against": spec.get("against"),
        "dataset": spec["dataset"],
        "dataset_version": spec["dataset_version"],
        "example_count": spec["example_count"],
        "recorded": 0,
        "status": "requested",
        "attempts": 0,
        "passed": None,
        "verdict": None,
        "error": None,
        "spec": spec,
        "requested_by": without_nul(dict(e.actor)),
        "requested_at": at,
        "started_at": None,
        "updated_at": at,
        "completed_at": None,
        "position": logged.position,
        "candidate_correct": 0,
        "baseline_correct": 0,
        "errors": 0,
        "usage": dict(NO_USAGE),
    }


def add_usage(usage: Row, arm: dict[str, Any]) -> None:
    """Add one arm's model call, and any judge calls its grades report, to `usage`.

    Counted as the executor counts its verdict's totals (`workers.arms.usage_totals`), in
    the same order, so the tallies end equal to them: an arm with an output is one call of
    the version's model; a judge grade reports its calls under `details.usage`; the cost
    stays None until some call was priced.
    """
    spent = [arm] if arm.get("output") is not None else []
    for grade in arm.get("grades") or []:
        judged = (grade.get("details") or {}).get("usage") if isinstance(grade, dict) else None
        if judged:
            spent.append(judged)
    for part in spent:
        usage["calls"] += int(part.get("calls", 1) or 0)  # an arm is one call
        usage["input_tokens"] += int(part.get("input_tokens") or 0)
        usage["output_tokens"] += int(part.get("output_tokens") or 0)
        cost = part.get("cost_usd")
        if cost is not None:
            usage["cost_usd"] = (usage["cost_usd"] or 0) + float(cost)


EVAL_VIEWS = (DatasetsView, EvalRunsView)
