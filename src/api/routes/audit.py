"""The compliance audit: which version a tenant got at a time, and every interval of a window."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from promptrecord.api.deps import PromptName, ServicesDep, Viewer
from promptrecord.api.problems import problem_responses
from promptrecord.api.schemas import ActorOut
from promptrecord.api.services import Services
from promptrecord.domain.errors import InvalidInput
from promptrecord.projections.audit import (
    TIME_EXAMPLE,
    AuditSource,
    Interval,
    check_window,
    parse_instant,
)
from promptrecord.projections.replay import ReplayAudit
from promptrecord.projections.view_audit import ViewAudit
from promptrecord.projections.views import ViewStore

router = APIRouter(
    prefix="/v1/audit",
    tags=["audit"],
    responses=problem_responses(401, 403, 404, 409, 422),
)

# "views" answers by indexed lookups; "replay" folds the raw log, the ground truth the views
# are checked against. The default is "views" when they have caught up, else "replay".
AUDIT_METHODS = ("views", "replay")
# How long a request waits for the views to reach the live state before replaying instead.
VIEWS_CATCH_UP_TIMEOUT = 2.0
VIEWS_POLL = 0.02
DEFAULT_ENVIRONMENT = "production"
EVENT_ID_EXAMPLE = "d8f3ef4a-6de6-537a-bdab-4818bc971916"

Tenant = Annotated[
    str, Path(min_length=1, max_length=256, description="The tenant's id", examples=["acme"])
]
Environment = Annotated[str, Query(min_length=1, max_length=32, examples=["production"])]
RoutingKey = Annotated[
    str | None,
    Query(
        max_length=256,
        description="User or request id, for rollouts keyed by user or request; without it "
        "such a rollout is answered with its split",
        examples=["user-42"],
    ),
]
Method = Annotated[
    str,
    Query(
        description="How to answer: `views` (the default) reads the views when they have "
        "caught up with the log, else answers by replay; `replay` folds the raw event log up "
        "to the time. The answer's `method` says which one answered",
        examples=["views"],
        json_schema_extra={"enum": list(AUDIT_METHODS)},
    ),
]


def _time_query(what: str, alias: str | None = None) -> Any:
    return Query(
        alias=alias,
        max_length=64,
        description=f"{what}: ISO 8601 with a timezone (`Z` or an offset)",
        examples=[TIME_EXAMPLE],
        json_schema_extra={"format": "date-time"},
    )


class CausingEventOut(BaseModel):
    id: str = Field(examples=[EVENT_ID_EXAMPLE])
    type: str = Field(examples=["TenantPin.Pinned"])
    actor: ActorOut
    timestamp: datetime
    position: int = Field(description="Position in the event log", examples=[57])
    reason: str | None = Field(examples=["acme validated v7 only"])


class RolloutSplitOut(BaseModel):
    rollout_id: str = Field(examples=["b1946ac92492d2347c6235b4d2611184"])
    baseline: int = Field(examples=[6])
    candidate: int = Field(examples=[7])
    share: float = Field(description="Candidate's share of traffic then", examples=[0.1])
    key_by: str = Field(description="tenant | user | request", examples=["tenant"])
    bucket: float | None = Field(
        description="The tenant's (or key's) place in [0, 1); candidate when below share; "
        "null when the rollout is keyed by user or request and no key was given",
        examples=[0.0731],
    )
    arm: str | None = Field(description="candidate | baseline; null for a split")


class AuditAnswerOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "workspace": "default",
                    "tenant": "acme",
                    "prompt": "support-bot",
                    "environment": "production",
                    "key": None,
                    "at": "2026-03-14T09:00:00Z",
                    "version": 7,
                    "content_hash": "sha256:69a7…",
                    "reason": "pinned",
                    "rollout": None,
                    "pin_expires_at": "2026-03-21T09:00:00Z",
                    "cause_event_id": EVENT_ID_EXAMPLE,
                    "events": [
                        {
                            "id": EVENT_ID_EXAMPLE,
                            "type": "TenantPin.Pinned",
                            "actor": {"key_id": "3f2a9c0d1e4b5a69", "key_name": "alice"},
                            "timestamp": "2026-03-10T12:00:00Z",
                            "position": 57,
                            "reason": "acme validated v7 only",
                        }
                    ],
                    "method": "replay",
                }
            ]
        }
    )

    workspace: str
    tenant: str
    prompt: str
    environment: str
    key: str | None
    at: datetime
    version: int | None = Field(description="The version served; null when it was a split")
    content_hash: str | None
    reason: str = Field(description="pinned | rollout | promoted")
    rollout: RolloutSplitOut | None
    pin_expires_at: datetime | None
    cause_event_id: str = Field(description="The event that made this the answer")
    events: list[CausingEventOut] = Field(description="The events the answer rests on")
    method: str = Field(description="How the answer was computed", examples=["replay"])


class IntervalOut(BaseModel):
    valid_from: datetime = Field(description="Inclusive")
    valid_to: datetime | None = Field(
        description="Exclusive; null when the answer still held at the window's end"
    )
    version: int | None = Field(description="Null for a split or a refusal")
    reason: str = Field(description="pinned | rollout | promoted | refused")
    rollout: RolloutSplitOut | None
    pin_expires_at: datetime | None
    cause_event_id: str | None
    refusal: str | None = Field(description="Why nothing was served, e.g. not_deployed")


class ObservedOut(BaseModel):
    version: int = Field(examples=[7])
    executions: int = Field(description="Executions the tenant logged on it in the window")


class IntervalsOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tenant": "acme",
                    "prompt": "support-bot",
                    "environment": "production",
                    "key": None,
                    "from": "2026-03-01T00:00:00Z",
                    "to": "2026-04-01T00:00:00Z",
                    "method": "replay",
                    "intervals": [
                        {
                            "valid_from": "2026-03-01T00:00:00Z",
                            "valid_to": "2026-03-21T09:00:00Z",
                            "version": 7,
                            "reason": "pinned",
                            "rollout": None,
                            "pin_expires_at": "2026-03-21T09:00:00Z",
                            "cause_event_id": EVENT_ID_EXAMPLE,
                            "refusal": None,
                        },
                        {
                            "valid_from": "2026-03-21T09:00:00Z",
                            "valid_to": None,
                            "version": 6,
                            "reason": "promoted",
                            "rollout": None,
                            "pin_expires_at": None,
                            "cause_event_id": "0b4e3c1d-95a2-5f4e-8d7c-2a1b9e8f7c6d",
                            "refusal": None,
                        },
                    ],
                    "observed": [{"version": 7, "executions": 1840}],
                }
            ]
        },
    )

    tenant: str
    prompt: str
    environment: str
    key: str | None
    start: datetime = Field(serialization_alias="from", description="Window start, inclusive")
    end: datetime = Field(serialization_alias="to", description="Window end, exclusive")
    method: str
    intervals: list[IntervalOut]
    observed: list[ObservedOut] = Field(
        default_factory=list,
        description="What was observed: executions per version the application logged for "
        "this tenant, prompt and environment in the window (`POST /v1/executions`)",
    )


CSV_COLUMNS = (
    "tenant",
    "prompt",
    "environment",
    "valid_from",
    "valid_to",
    "version",
    "reason",
    "rollout_id",
    "baseline",
    "candidate",
    "share",
    "key_by",
    "bucket",
    "arm",
    "pin_expires_at",
    "cause_event_id",
    "refusal",
)
CSV_EXAMPLE = (
    ",".join(CSV_COLUMNS) + "\r\n"
    "acme,support-bot,production,2026-03-01T00:00:00Z,2026-03-21T09:00:00Z,7,pinned,,,,,,,,"
    f"2026-03-21T09:00:00Z,{EVENT_ID_EXAMPLE},\r\n"
)


def audit_source(services: Services, method: str) -> AuditSource:
    """The way of answering `method` names: the views when they have applied everything the
    live state had when asked (waiting briefly for them), else replay of the raw log."""
    if method == "replay":
        return ReplayAudit(services.app)
    if method == "views":
        views = services.view_store
        if _views_caught_up(views, services.live.position):
            return ViewAudit(views, services.app)
        return ReplayAudit(services.app)
    raise InvalidInput(
        f"method {method!r} is not available; use one of: {', '.join(AUDIT_METHODS)}",
        field="query.method",
        code="unknown_method",
        allowed=list(AUDIT_METHODS),
    )


def _views_caught_up(views: ViewStore, needed: int) -> bool:
    # Views never built (or needing a rebuild) will not catch up by waiting: replay at once.
    if views.outdated or views.position() == 0:
        return needed == 0 and not views.outdated
    deadline = time.monotonic() + VIEWS_CATCH_UP_TIMEOUT
    while views.position() < needed:
        if time.monotonic() >= deadline:
            return False
        time.sleep(VIEWS_POLL)
    return True


@router.get(
    "/tenants/{tenant}/prompts/{name}",
    response_model=AuditAnswerOut,
    summary="Which version the tenant got at a time, why, and the events that caused it",
    description=(
        "Answers from the state at `at`: a pin valid then, else the rollout then (with the "
        "tenant's bucket and the share), else the promoted version. For a rollout keyed by "
        "user or request, give `key` for one user's version; without it the answer is the "
        "split (`version` null). Refusals at that time (nothing deployed yet, prompt "
        "archived, prompt or environment not yet created) are 404 / 409 problems with "
        "their code."
    ),
)
def audit_answer(
    caller: Viewer,
    tenant: Tenant,
    name: PromptName,
    services: ServicesDep,
    at: Annotated[str, _time_query("The time asked about")],
    environment: Environment = DEFAULT_ENVIRONMENT,
    key: RoutingKey = None,
    method: Method = "views",
) -> AuditAnswerOut:
    caller.check_environment(environment, field="query.environment")
    when = parse_instant(at, "query.at")
    source = audit_source(services, method)
    answer = source.answer_at(caller.workspace, tenant, name, environment, when, key)
    return AuditAnswerOut.model_validate({**answer.as_dict(), "method": source.method})


@router.get(
    "/tenants/{tenant}/prompts/{name}/intervals",
    response_model=IntervalsOut,
    summary="Every interval of a window with one answer, as JSON or CSV",
    description=(
        "Every maximal interval of [from, to) in which the tenant's answer did not change: "
        "`valid_from` inclusive, `valid_to` exclusive (null when the answer still held at "
        "`to`). Intervals split at every event that changed the answer and at pin expiries. "
        "Stretches in which nothing was served have reason `refused` and the refusal code. "
        "The window is at most 366 days. `format=csv` returns the same rows with a header."
    ),
    responses={200: {"content": {"text/csv": {"example": CSV_EXAMPLE}}}},
)
def audit_intervals(
    caller: Viewer,
    tenant: Tenant,
    name: PromptName,
    services: ServicesDep,
    start: Annotated[str, _time_query("Window start, inclusive", alias="from")],
    end: Annotated[str, _time_query("Window end, exclusive", alias="to")],
    environment: Environment = DEFAULT_ENVIRONMENT,
    key: RoutingKey = None,
    output: Annotated[
        Literal["json", "csv"], Query(alias="format", description="json (default) or csv")
    ] = "json",
    method: Method = "views",
) -> Response | IntervalsOut:
    caller.check_environment(environment, field="query.environment")
    window_start = parse_instant(start, "query.from")
    window_end = parse_instant(end, "query.to")
    check_window(window_start, window_end, "query.from", "query.to")
    source = audit_source(services, method)
    found = source.intervals(
        caller.workspace, tenant, name, environment, window_start, window_end, key
    )
    if output == "csv":
        return Response(_csv(tenant, name, environment, found), media_type="text/csv")
    return IntervalsOut(
        tenant=tenant,
        prompt=name,
        environment=environment,
        key=key,
        start=window_start,
        end=window_end,
        method=source.method,
        intervals=[IntervalOut.model_validate(interval.as_dict()) for interval in found],
        observed=[
            ObservedOut(version=version, executions=count)
            for version, count in services.executions.version_counts(
                caller.workspace, tenant, name, environment, window_start, window_end
            ).items()
        ],
    )


def _csv(tenant: str, prompt: str, environment: str, found: list[Interval]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for interval in found:
        row = interval.as_dict()
        split = row.pop("rollout") or {}
        values = {"tenant": tenant, "prompt": prompt, "environment": environment, **row, **split}
        writer.writerow(
            ["" if values.get(column) is None else values[column] for column in CSV_COLUMNS]
        )
    return out.getvalue()
