"""A prompt's monitoring: configure the online judge and the drift schedule, read where each
environment's drift check stands, and the history of checks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from promptrecord.api.commands import etag, settle
from promptrecord.api.deps import Deployer, ExpectedRevision, PromptName, ServicesDep, Viewer
from promptrecord.api.problems import problem_responses
from promptrecord.api.routes.evals import Providers
from promptrecord.api.schemas import CommandResponse, JsonObject, RequestBody
from promptrecord.domain.errors import InvalidInput
from promptrecord.domain.monitors import Monitor
from promptrecord.workers.drift import assess

router = APIRouter(prefix="/v1", tags=["monitoring"], responses=problem_responses(401, 403, 404))


class MonitoringIn(RequestBody):
    judge: JsonObject | None = Field(
        default=None,
        description="null: no online judge. {sample_rate 0..1, provider (offline | anthropic | "
        "openai), model, criteria, repeats (1)}",
        examples=[
            {
                "sample_rate": 0.05,
                "provider": "anthropic",
                "model": "claude-haiku-4-5-20251001",
                "criteria": "Answers the question asked, politely, without inventing facts.",
                "repeats": 3,
            }
        ],
    )
    drift: JsonObject | None = Field(
        default=None,
        description="null: no drift checks. {dataset, environments, every_hours (168), "
        "threshold (0.1: the win-rate move that alerts)}",
        examples=[{"dataset": "support-golden", "environments": ["production"]}],
    )


class MonitoringConfigured(CommandResponse):
    prompt: str


class EnvironmentDrift(BaseModel):
    environment: str
    version: int | None = Field(description="The version promoted there; null if none")
    state: str = Field(
        description="nothing_deployed | waiting | running | recording | no_reference | due"
    )
    reason: str = Field(description="Why it is in this state; for no_reference, what to run")
    next_due_at: datetime | None
    run_id: str | None = Field(description="The drift run under way, or the failed one")
    reference_run_id: str | None = Field(description="The passing run a due check repeats")
    last_check: dict[str, Any] | None


class MonitoringOut(BaseModel):
    prompt: str
    configured: bool = Field(description="False until the first PUT")
    revision: int = Field(description="The ETag to send as If-Match")
    judge: dict[str, Any] | None
    judge_since: datetime | None = Field(description="Executions from then on are judged")
    drift: dict[str, Any] | None
    environments: list[EnvironmentDrift] = Field(description="Drift state per environment")


class CheckOut(BaseModel):
    environment: str
    version: int
    run_id: str
    reference_run_id: str
    win_rate: float
    reference_win_rate: float
    delta: float = Field(description="win_rate - reference_win_rate")
    alerted: bool
    threshold: float | None = Field(description="The threshold an alert passed")
    checked_at: datetime


def _check_provider(judge: dict[str, Any] | None) -> None:
    if judge is None or "provider" not in judge:
        return  # the domain names a missing provider
    if judge["provider"] not in get_args(Providers):
        raise InvalidInput(
            f"judge.provider must be one of {', '.join(get_args(Providers))}, not "
            f"{judge['provider']!r}",
            field="judge.provider",
        )


@router.put(
    "/prompts/{name}/monitoring",
    response_model=MonitoringConfigured,
    summary="Configure the online judge and the drift checks (null switches one off)",
    responses=problem_responses(409, 422),
)
def configure(
    name: PromptName,
    body: MonitoringIn,
    caller: Deployer,
    services: ServicesDep,
    response: Response,
    expected: ExpectedRevision,
) -> MonitoringConfigured:
    _check_provider(body.judge)
    if body.drift is not None and isinstance(body.drift.get("environments"), list):
        for index, environment in enumerate(body.drift["environments"]):
            if isinstance(environment, str):
                caller.check_environment(environment, field=f"drift.environments[{index}]")
    result = services.app.configure_monitor(
        caller.workspace, name, body.judge, body.drift, caller.actor, expected
    )
    settle(services, response, result)
    return MonitoringConfigured(position=result.position, revision=result.revision, prompt=name)


def _monitor(services: Any, workspace: str, name: str) -> Monitor | None:
    services.app.prompt(workspace, name, copy=False)  # 404 for an unknown prompt
    found: Monitor | None = services.app.find_monitor(workspace, name)
    return found


@router.get(
    "/prompts/{name}/monitoring",
    response_model=MonitoringOut,
    summary="The monitoring configured, and where each environment's drift check stands",
)
def read(
    name: PromptName, caller: Viewer, services: ServicesDep, response: Response
) -> MonitoringOut:
    monitor = _monitor(services, caller.workspace, name)
    if monitor is None:
        response.headers["ETag"] = etag(0)
        return MonitoringOut(
            prompt=name,
            configured=False,
            revision=0,
            judge=None,
            judge_since=None,
            drift=None,
            environments=[],
        )
    response.headers["ETag"] = etag(monitor.version)
    now = services.app.clock()
    environments = []
    for environment in (monitor.drift or {}).get("environments", []):
        if not caller.may_see_environment(environment):
            continue
        status = assess(services.app, monitor, environment, now)
        environments.append(
            EnvironmentDrift(
                environment=environment,
                version=status.version,
                state=status.state,
                reason=status.reason,
                next_due_at=status.next_due_at,
                run_id=status.run_id,
                reference_run_id=status.reference_run_id,
                last_check=status.last_check,
            )
        )
    return MonitoringOut(
        prompt=name,
        configured=True,
        revision=monitor.version,
        judge=monitor.judge,
        judge_since=monitor.judge_since if monitor.judge else None,
        drift=monitor.drift,
        environments=environments,
    )


@router.get(
    "/prompts/{name}/monitoring/checks",
    response_model=list[CheckOut],
    summary="Drift checks, newest first",
)
def checks(
    name: PromptName,
    caller: Viewer,
    services: ServicesDep,
    environment: Annotated[str | None, Query(max_length=32, description="Only this one")] = None,
    alerted: Annotated[bool | None, Query(description="Only alerts (true) or not")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CheckOut]:
    if environment is not None:
        caller.check_environment(environment, field="query.environment")
    monitor = _monitor(services, caller.workspace, name)
    found = [] if monitor is None else list(reversed(monitor.checks))
    chosen = [
        CheckOut(**check)
        for check in found
        if (environment is None or check["environment"] == environment)
        and (alerted is None or check["alerted"] == alerted)
        and caller.may_see_environment(check["environment"])
    ]
    return chosen[:limit]
