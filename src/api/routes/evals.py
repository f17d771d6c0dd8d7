"""Eval runs: request one (workers carry it out), follow its progress, read results and verdict."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from promptrecord.api.commands import etag, settle
from promptrecord.api.deps import Caller, Editor, ServicesDep, Viewer, Views
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import problem_responses
from promptrecord.api.schemas import ActorOut, CommandResponse, JsonObject, RequestBody, Text
from promptrecord.domain.errors import Conflict, InvalidInput, NotFound
from promptrecord.domain.eval_commands import MAX_BATCH, MAX_CONCURRENCY, check_run_id
from promptrecord.projections.views import EvalRunEntry, ViewStore
from promptrecord.workers.gate import GateInputError, GateThresholds
from promptrecord.workers.graders import GraderConfigError, JudgeSpec, parse_grader_spec

router = APIRouter(
    prefix="/v1/evals", tags=["evals"], responses=problem_responses(401, 403, 404, 422)
)

MAX_GRADERS = 16
DEFAULT_GRADERS: list[dict[str, Any]] = [{"type": "exact"}]
# One example is enough to reach a verdict; set more for a gate that means something.
DEFAULT_THRESHOLDS: dict[str, Any] = {"min_examples": 1}
Providers = Literal["offline", "anthropic", "openai"]
RunStatus = Literal["requested", "running", "completed", "failed"]
RunId = Annotated[
    str,
    Path(max_length=64, description="The run's id (32 hex)", examples=["9f2c" + "0" * 28]),
]


class EvalIn(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prompt": "support-bot",
                    "candidate": 8,
                    "against": "production",
                    "dataset": "support-golden",
                    "graders": [{"type": "exact", "normalize": True}],
                    "thresholds": {"min_examples": 50, "alpha": 0.05, "win_rate_floor": 0.8},
                    "reason": "PR #412",
                }
            ]
        }
    )

    prompt: str = Field(max_length=64, examples=["support-bot"])
    candidate: int = Field(ge=1, le=2**31, description="The version under test")
    against: str | None = Field(
        default=None,
        max_length=32,
        description="Compare with what this environment serves now (or give baseline)",
    )
    baseline: int | None = Field(
        default=None, ge=1, le=2**31, description="Compare with this version (or give against)"
    )
    dataset: str = Field(max_length=64, examples=["support-golden"])
    dataset_version: int | None = Field(default=None, ge=1, le=2**31, description="Default: latest")
    graders: list[JsonObject] | None = Field(
        default=None,
        max_length=MAX_GRADERS,
        description='Grader configs; an example is correct when all pass. Default [{"type": '
        '"exact"}]',
    )
    thresholds: JsonObject | None = Field(
        default=None,
        description="Gate thresholds: min_examples (default 1), win_rate_floor, "
        "max_p95_latency_ms, alpha (0.05), bootstrap_resamples, seed",
    )
    concurrency: int = Field(default=8, ge=1, le=MAX_CONCURRENCY, description="Calls in flight")
    batch_size: int = Field(default=20, ge=1, le=MAX_BATCH, description="Results per record")
    provider: Providers | None = Field(
        default=None,
        description="Call every version through this provider; default: each version's own. "
        "`offline` is deterministic and needs no network",
    )
    reason: Text = Field(default="", max_length=2000)


class EvalRequested(CommandResponse):
    run_id: str = Field(examples=["9f2c" + "0" * 28])
    status: str = Field(examples=["requested"])
    links: dict[str, str]


class Progress(BaseModel):
    recorded: int = Field(description="Examples with results recorded")
    total: int = Field(description="Examples in the dataset version")
    fraction: float = Field(description="recorded / total, 0..1")


class Tallies(BaseModel):
    candidate_correct: int
    baseline_correct: int
    errors: int = Field(description="Examples where a model call or a grader failed")


class EvalRunOut(BaseModel):
    run_id: str
    prompt: str
    candidate: int
    baseline: int
    against: str | None
    dataset: str
    dataset_version: int
    status: str = Field(description="requested | running | completed | failed")
    progress: Progress
    attempts: int = Field(description="Times a worker took the run up")
    tallies: Tallies
    usage: dict[str, Any] | None = Field(description="calls, input/output tokens, cost_usd")
    passed: bool | None = Field(description="Null until the run completes")
    verdict: dict[str, Any] | None = Field(description="The gate verdict, once completed")
    error: dict[str, Any] | None = Field(description="{code, detail} when the run failed")
    spec: dict[str, Any] = Field(description="The request as resolved: graders, thresholds, …")
    requested_by: ActorOut
    requested_at: datetime
    started_at: datetime | None
    updated_at: datetime
    completed_at: datetime | None
    position: int = Field(description="Log position of the request")
    links: dict[str, str]


class Arm(BaseModel):
    """One version's answer to one example, and how it was graded."""

    model_config = ConfigDict(extra="allow")

    output: str | None = Field(description="Clipped to 4000 characters")
    correct: bool
    score: float | None = None
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    error: str | None = Field(default=None, description="Model-call or grading error")
    grades: list[dict[str, Any]] = Field(default_factory=list)


class EvalResultOut(BaseModel):
    ordinal: int = Field(description="Order of recording, from 1; the paging key")
    example_id: str
    candidate: Arm
    baseline: Arm
    regressed: bool = Field(description="Baseline right, candidate wrong")
    improved: bool = Field(description="Baseline wrong, candidate right")
    errored: bool


class VerdictOut(BaseModel):
    """The gate's decision and the numbers behind it (see promptrecord.workers.gate)."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    prompt: str
    candidate: int
    baseline: int
    dataset: str
    dataset_version: int
    passed: bool
    reasons: list[dict[str, Any]] = Field(description="{code, detail} per failing check")
    n_examples: int
    table: dict[str, int] = Field(
        description="both_correct, baseline_only (regressions), candidate_only, both_wrong"
    )
    mcnemar: dict[str, Any] = Field(description="test (exact | chi2), statistic, p_value")
    win_rate: dict[str, Any] = Field(description="baseline, candidate, difference, 95% ci")
    latency: dict[str, Any] = Field(description="candidate_p95_ms, baseline_p95_ms")
    regressed_ids: list[str]
    improved_ids: list[str]
    usage: dict[str, Any] | None = None


def _links(run_id: str) -> dict[str, str]:
    base = f"/v1/evals/{run_id}"
    return {"self": base, "results": f"{base}/results", "verdict": f"{base}/verdict"}


def checked_graders(configs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The grader configs, each parsed as a worker will parse it; a bad one is a 422."""
    graders = DEFAULT_GRADERS if configs is None else configs
    if not graders:
        raise InvalidInput("give at least one grader, or leave graders out", field="graders")
    for index, config in enumerate(graders):
        where = f"graders[{index}]"
        try:
            spec = parse_grader_spec(config)
        except GraderConfigError as error:
            field = where if error.field == "(root)" else f"{where}.{error.field}"
            raise InvalidInput(
                f"{field}: {error.message}", field=field, code="invalid_grader"
            ) from None
        if isinstance(spec, JudgeSpec) and spec.provider not in get_args(Providers):
            raise InvalidInput(
                f"{where}.provider: the judge's provider must be one of "
                f"{', '.join(get_args(Providers))}, not {spec.provider!r}",
                field=f"{where}.provider",
                code="invalid_grader",
            )
    return [dict(config) for config in graders]


def checked_thresholds(given: dict[str, Any] | None) -> dict[str, Any]:
    """The thresholds with their defaults filled in; a bad one is a 422 naming it."""
    known = {f.name for f in fields(GateThresholds)}
    unknown = sorted(set(given or {}) - known)
    if unknown:
        raise InvalidInput(
            f"thresholds.{unknown[0]} is not a threshold; known: {', '.join(sorted(known))}",
            field=f"thresholds.{unknown[0]}",
            code="invalid_threshold",
        )
    try:
        thresholds = GateThresholds(**{**DEFAULT_THRESHOLDS, **(given or {})})
    except GateInputError as error:
        raise InvalidInput(
            f"thresholds.{error}", field=f"thresholds.{error.field}", code="invalid_threshold"
        ) from None
    return asdict(thresholds)


@router.post(
    "",
    response_model=EvalRequested,
    status_code=202,
    summary="Request an eval run of a candidate against a baseline on a dataset",
    responses=problem_responses(409),
)
def request_eval(
    body: EvalIn, caller: Editor, services: ServicesDep, response: Response
) -> EvalRequested:
    caller.check_prompt(body.prompt, field="prompt")
    if body.against is not None:
        caller.check_environment(body.against, field="against")
    graders = checked_graders(body.graders)
    thresholds = checked_thresholds(body.thresholds)
    result = services.app.request_eval(
        caller.workspace,
        caller.actor,
        body.prompt,
        body.candidate,
        body.dataset,
        graders,
        thresholds,
        baseline=body.baseline,
        against=body.against,
        dataset_version=body.dataset_version,
        concurrency=body.concurrency,
        batch_size=body.batch_size,
        provider=body.provider,
        reason=body.reason,
    )
    settle(services, response, result)
    run_id: str = result.value
    response.headers["Location"] = f"/v1/evals/{run_id}"
    return EvalRequested(
        position=result.position,
        revision=result.revision,
        run_id=run_id,
        status="requested",
        links=_links(run_id),
    )


@router.get("", response_model=Page[EvalRunOut], summary="Eval runs, newest first")
def list_runs(
    caller: Viewer,
    views: Views,
    paging: Paging,
    prompt: Annotated[str | None, Query(max_length=64, description="Only this prompt")] = None,
    status: Annotated[RunStatus | None, Query(description="Only runs in this state")] = None,
) -> Page[EvalRunOut]:
    if prompt is not None:
        caller.check_prompt(prompt, field="query.prompt")
    before = paging.after_number() or None  # the cursor holds the last position seen
    fetched = views.eval_runs(
        caller.workspace, prompt=prompt, status=status, limit=paging.limit + 1, before=before
    )
    chosen, cursor = paging.page(fetched, lambda run: run.position)
    return Page[EvalRunOut](
        items=[run_out(run) for run in chosen if caller.may_see_prompt(run.prompt)],
        next_cursor=cursor,
    )


def require_run(views: ViewStore, caller: Caller, run_id: str) -> EvalRunEntry:
    check_run_id(run_id)
    run = views.eval_run(caller.workspace, run_id)
    if run is None:
        raise NotFound(f"eval run {run_id!r} does not exist", field="run_id", code="run_not_found")
    caller.check_prompt(run.prompt, field="run_id")
    return run


def run_out(run: EvalRunEntry) -> EvalRunOut:
    total = run.example_count
    return EvalRunOut(
        run_id=run.run_id,
        prompt=run.prompt,
        candidate=run.candidate,
        baseline=run.baseline,
        against=run.against,
        dataset=run.dataset,
        dataset_version=run.dataset_version,
        status=run.status,
        progress=Progress(
            recorded=run.recorded,
            total=total,
            fraction=run.recorded / total if total else 0.0,
        ),
        attempts=run.attempts,
        tallies=Tallies(
            candidate_correct=run.candidate_correct,
            baseline_correct=run.baseline_correct,
            errors=run.errors,
        ),
        usage=run.usage,
        passed=run.passed,
        verdict=run.verdict,
        error=run.error,
        spec=run.spec,
        requested_by=ActorOut(**run.requested_by),
        requested_at=run.requested_at,
        started_at=run.started_at,
        updated_at=run.updated_at,
        completed_at=run.completed_at,
        position=run.position,
        links=_links(run.run_id),
    )


@router.get("/{run_id}", response_model=EvalRunOut, summary="A run: status, progress, tallies")
def get_run(caller: Viewer, run_id: RunId, views: Views, response: Response) -> EvalRunOut:
    run = require_run(views, caller, run_id)
    response.headers["ETag"] = etag(run.recorded)
    return run_out(run)


@router.get(
    "/{run_id}/results",
    response_model=Page[EvalResultOut],
    summary="Per-example results in the order they were recorded",
)
def list_results(
    caller: Viewer,
    run_id: RunId,
    views: Views,
    paging: Paging,
    only: Annotated[
        Literal["regressed", "improved", "errored"] | None,
        Query(description="Only examples the candidate regressed on, improved on, or errored"),
    ] = None,
) -> Page[EvalResultOut]:
    require_run(views, caller, run_id)
    fetched = views.eval_results(
        caller.workspace, run_id, after=paging.after_number(), limit=paging.limit + 1, only=only
    )
    chosen, cursor = paging.page(fetched, lambda result: result.ordinal)
    items = [
        EvalResultOut(
            ordinal=r.ordinal,
            example_id=r.example_id,
            candidate=Arm(**r.candidate),
            baseline=Arm(**r.baseline),
            regressed=r.regressed,
            improved=r.improved,
            errored=r.errored,
        )
        for r in chosen
    ]
    return Page[EvalResultOut](items=items, next_cursor=cursor)


@router.get(
    "/{run_id}/verdict",
    response_model=VerdictOut,
    summary="The gate verdict of a completed run (409 while it runs)",
    responses=problem_responses(409),
)
def get_verdict(caller: Viewer, run_id: RunId, views: Views) -> VerdictOut:
    run = require_run(views, caller, run_id)
    if run.status == "failed":
        error = run.error or {}
        raise Conflict(
            f"eval run {run_id} failed ({error.get('code', 'failed')}): "
            f"{error.get('detail', '')}; it has no verdict — fix the cause and request a new run",
            field="run_id",
            code="run_failed",
            error=error,
        )
    if run.status != "completed" or run.verdict is None:
        raise Conflict(
            f"eval run {run_id} is {run.status} ({run.recorded} of {run.example_count} "
            "examples recorded); ask again when it has completed",
            field="run_id",
            code="run_not_finished",
            run_status=run.status,
            recorded=run.recorded,
            total=run.example_count,
        )
    return VerdictOut(
        **{
            **run.verdict,
            "run_id": run.run_id,
            "prompt": run.prompt,
            "candidate": run.candidate,
            "baseline": run.baseline,
            "dataset": run.dataset,
            "dataset_version": run.dataset_version,
        }
    )
