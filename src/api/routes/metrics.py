"""Per-version production metrics of a prompt from the hourly rollups, and two versions compared."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from promptrecord.api.deps import PromptName, ServicesDep, Viewer
from promptrecord.api.problems import problem_responses
from promptrecord.api.services import Services
from promptrecord.domain.errors import InvalidInput, NotFound
from promptrecord.projections.audit import parse_instant
from promptrecord.projections.executions import hour_of, hour_start
from promptrecord.projections.executions_metrics import GROUPINGS, Figures, grouped
from promptrecord.workers.metrics_stats import bootstrap_quantile, two_proportions, welch

router = APIRouter(
    prefix="/v1/prompts", tags=["metrics"], responses=problem_responses(401, 403, 404, 422)
)

DEFAULT_WINDOW = timedelta(days=1)
MAX_WINDOW = timedelta(days=366)
WINDOW_NOTE = (
    "windows are whole hours: `from` is rounded down and `to` up to the hour, and every "
    "execution counts in the hour it started"
)
TIME_DESCRIPTION = "ISO 8601 with a timezone; rounded to whole hours"

Environment = Annotated[str, Query(min_length=1, max_length=32, examples=["production"])]
Start = Annotated[
    str | None,
    Query(
        alias="from",
        max_length=64,
        description=f"Window start ({TIME_DESCRIPTION}); default: 24 hours before `to`",
    ),
]
End = Annotated[
    str | None,
    Query(alias="to", max_length=64, description=f"Window end ({TIME_DESCRIPTION}); default: now"),
]


class LatencyOut(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None


class FiguresOut(BaseModel):
    count: int
    statuses: dict[str, int] = Field(examples=[{"ok": 97, "error": 2, "timeout": 1, "refusal": 0}])
    error_rate: float | None = Field(description="Share of calls not `ok`")
    tokens_in: int
    tokens_out: int
    cost_usd: float | None = Field(description="Sum over priced calls; null if none was priced")
    unpriced: int = Field(description="Calls with no cost given and a model not in the price table")
    latency_ms: LatencyOut = Field(description="Within 1% of the exact percentiles")
    mean_score: float | None
    scored: int
    feedback_up: int
    feedback_down: int
    feedback_rate: float | None = Field(description="Thumbs up over all thumbs")


class GroupOut(FiguresOut):
    version: int | None = None
    hour: datetime | None = None


class MetricsOut(BaseModel):
    prompt: str
    environment: str
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    group_by: str
    note: str = Field(examples=[WINDOW_NOTE])
    groups: list[GroupOut]


class DifferenceOut(BaseModel):
    a: float | None
    b: float | None
    difference: float | None = Field(description="b - a")
    test: str = Field(examples=["two-proportion z-test"])
    p_value: float | None
    ci_low: float | None = Field(description="95% interval of the difference")
    ci_high: float | None
    note: str | None


class ComparisonOut(BaseModel):
    prompt: str
    environment: str
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    note: str
    a: GroupOut
    b: GroupOut
    differences: dict[str, DifferenceOut] = Field(
        description="error_rate, feedback_rate, latency_p95_ms, mean_score"
    )


def window(start: str | None, end: str | None) -> tuple[int, int]:
    """The hours [first, last) of a window given as optional ISO times."""
    to = parse_instant(end, "query.to") if end is not None else datetime.now(UTC)
    since = parse_instant(start, "query.from") if start is not None else to - DEFAULT_WINDOW
    if since >= to:
        raise InvalidInput("`from` must be before `to`", field="query.from", code="empty_window")
    if to - since > MAX_WINDOW:
        raise InvalidInput(
            f"the window is at most {MAX_WINDOW.days} days",
            field="query.from",
            code="window_too_long",
        )
    return hour_of(since), math.ceil(to.timestamp() / 3600) * 3600


def _versions(services: Services, workspace: str, prompt: str) -> dict[int, Any]:
    known = services.live.state.prompts.get((workspace, prompt))
    if known is None:
        raise NotFound(
            f"prompt {prompt!r} does not exist in this workspace",
            field="name",
            code="prompt_not_found",
        )
    versions: dict[int, Any] = known.versions
    return versions


@router.get(
    "/{name}/metrics",
    response_model=MetricsOut,
    summary="Production metrics per version and/or hour",
    description=(
        "Counts by status, error rate, tokens, cost, latency p50/p95/p99 (within 1%), mean "
        "score and feedback, from the hourly rollups of logged executions. " + WINDOW_NOTE + "."
    ),
)
def prompt_metrics(
    caller: Viewer,
    name: PromptName,
    services: ServicesDep,
    environment: Environment = "production",
    start: Start = None,
    end: End = None,
    group_by: Annotated[
        str,
        Query(
            description="version | hour | version,hour", json_schema_extra={"enum": list(GROUPINGS)}
        ),
    ] = "version",
) -> MetricsOut:
    caller.check_environment(environment, field="query.environment")
    if group_by not in GROUPINGS:
        raise InvalidInput(
            f"group_by {group_by!r} is not one of {', '.join(GROUPINGS)}",
            field="query.group_by",
            code="invalid_group_by",
        )
    _versions(services, caller.workspace, name)
    first, last = window(start, end)
    rollups = services.executions.rollups(caller.workspace, name, environment, first, last)
    return MetricsOut(
        prompt=name,
        environment=environment,
        start=hour_start(first),
        end=hour_start(last),
        group_by=group_by,
        note=WINDOW_NOTE,
        groups=[GroupOut.model_validate(g) for g in grouped(rollups, group_by)],
    )


@router.get(
    "/{name}/metrics/compare",
    response_model=ComparisonOut,
    summary="Two versions' production figures, their differences and significance",
    description=(
        "Differences are b - a. Error and feedback rates: two-proportion z-test with a Wald "
        "95% interval; p95 latency: bootstrap resampling each version's latency histogram "
        "(fixed seed, so the same data gives the same interval); mean score: Welch's t-test. "
        + WINDOW_NOTE
        + "."
    ),
)
def compare_versions(
    caller: Viewer,
    name: PromptName,
    services: ServicesDep,
    a: Annotated[int, Query(ge=1, description="The baseline version")],
    b: Annotated[int, Query(ge=1, description="The version compared with it")],
    environment: Environment = "production",
    start: Start = None,
    end: End = None,
) -> ComparisonOut:
    caller.check_environment(environment, field="query.environment")
    versions = _versions(services, caller.workspace, name)
    for field, version in (("query.a", a), ("query.b", b)):
        if version not in versions:
            raise NotFound(
                f"prompt {name!r} has no version {version}", field=field, code="version_not_found"
            )
    first, last = window(start, end)
    rollups = services.executions.rollups(caller.workspace, name, environment, first, last, [a, b])
    fa = Figures.of(r for r in rollups if r.version == a)
    fb = Figures.of(r for r in rollups if r.version == b)
    differences = {
        "error_rate": two_proportions(fa.failures, fa.count, fb.failures, fb.count),
        "feedback_rate": two_proportions(
            int(fa.sums["feedback_up"]), fa.feedback, int(fb.sums["feedback_up"]), fb.feedback
        ),
        "latency_p95_ms": bootstrap_quantile(fa.latency, fb.latency, 0.95),
        "mean_score": welch(
            fa.mean_score(),
            fa.score_variance(),
            fa.score_count,
            fb.mean_score(),
            fb.score_variance(),
            fb.score_count,
        ),
    }
    return ComparisonOut(
        prompt=name,
        environment=environment,
        start=hour_start(first),
        end=hour_start(last),
        note=WINDOW_NOTE,
        a=GroupOut.model_validate({"version": a, **fa.as_dict()}),
        b=GroupOut.model_validate({"version": b, **fb.as_dict()}),
        differences={k: DifferenceOut.model_validate(d.as_dict()) for k, d in differences.items()},
    )
