"""What each environment serves for a prompt, and the commands that change it."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from promptrecord.api.commands import deployment_outcome, etag
from promptrecord.api.deps import (
    Deployer,
    EnvironmentName,
    ExpectedRevision,
    PromptName,
    ServicesDep,
    Viewer,
    Views,
)
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import problem_responses
from promptrecord.api.reads import promotion_request_out, require_environment, require_prompt
from promptrecord.api.schemas import (
    DeploymentOutcome,
    PromotionRequestOut,
    ReasonBody,
    RequestBody,
    RolloutOut,
    Text,
)
from promptrecord.api.services import Services
from promptrecord.domain.application import CommandResult

router = APIRouter(
    prefix="/v1/prompts/{name}/environments",
    tags=["deployments"],
    responses=problem_responses(401, 403, 404, 422),
)
COMMAND_RESPONSES = problem_responses(409)


class PromoteIn(ReasonBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"version": 4, "reason": "passed the eval gate"}]}
    )

    version: int = Field(ge=1, le=2**31)


class RolloutIn(ReasonBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"candidate": 4, "share": 0.1, "key_by": "tenant", "reason": "canary"}]
        }
    )

    candidate: int = Field(ge=1, le=2**31)
    share: float = Field(description="Candidate's share, strictly between 0 and 1")
    key_by: Literal["tenant", "user", "request"] = Field(
        default="tenant",
        description="What is hashed into the bucket: the tenant, or the `key` of resolve",
    )


class AdjustIn(ReasonBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"share": 0.5, "reason": "ramp"}]})

    share: float = Field(description="New candidate share, strictly between 0 and 1")


class RollbackIn(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "answers got rude", "to_version": 2}]}
    )

    to_version: int | None = Field(
        default=None, ge=1, le=2**31, description="Default: what served before"
    )
    reason: Text = Field(max_length=2000, description="Required: why the kill switch")


class RolloutState(RolloutOut):
    started_at: datetime | None = None


class EnvironmentServing(BaseModel):
    environment: str = Field(examples=["production"])
    serving: int | None = Field(examples=[3])
    rollout: RolloutOut | None = None


class DeploymentOut(EnvironmentServing):
    rollout: RolloutState | None = None
    stack: list[int] = Field(description="Versions served in turn; rollback walks back")
    pending_requests: list[PromotionRequestOut]
    past_requests: list[PromotionRequestOut]
    revision: int | None = Field(description="Null while nothing was ever deployed here")


@router.get("", response_model=Page[EnvironmentServing], summary="What serves in each environment")
def list_environments(
    caller: Viewer, name: PromptName, views: Views, paging: Paging
) -> Page[EnvironmentServing]:
    require_prompt(views, caller.workspace, name)
    ws = views.workspace(caller.workspace)
    current = {d.environment: d for d in views.deployments(caller.workspace, name)}
    rows = []
    for index, env in enumerate(ws.environments if ws is not None else []):
        if not caller.may_see_environment(env):
            continue
        deployment = current.get(env)
        split = None if deployment is None else deployment.rollout
        serving = EnvironmentServing(
            environment=env,
            serving=None if deployment is None else deployment.serving_version,
            rollout=None if split is None else RolloutOut(**asdict(split)),
        )
        rows.append((index, serving))
    chosen, cursor = paging.slice(rows, lambda row: row[0])
    return Page[EnvironmentServing](items=[row for _, row in chosen], next_cursor=cursor)


@router.get("/{environment}", response_model=DeploymentOut, summary="One environment in detail")
def get_deployment(
    caller: Viewer,
    name: PromptName,
    environment: EnvironmentName,
    views: Views,
    response: Response,
) -> DeploymentOut:
    require_environment(views, caller.workspace, environment)
    require_prompt(views, caller.workspace, name)
    found = views.deployments(caller.workspace, name, environment)
    if not found:
        return DeploymentOut(
            environment=environment,
            serving=None,
            stack=[],
            pending_requests=[],
            past_requests=[],
            revision=None,
        )
    detail = found[0]
    response.headers["ETag"] = etag(detail.revision)
    requests = [
        promotion_request_out(r)
        for r in views.promotion_requests(caller.workspace, name, environment, limit=10_000)
    ]
    split = detail.rollout
    rollout = None
    if split is not None:
        rollout = RolloutState(**asdict(split), started_at=detail.rollout_started_at)
    return DeploymentOut(
        environment=environment,
        serving=detail.serving_version,
        rollout=rollout,
        stack=list(detail.stack),
        pending_requests=[r for r in requests if r.status == "pending"],
        past_requests=[r for r in requests if r.status != "pending"],
        revision=detail.revision,
    )


@router.post(
    "/{environment}/promote",
    response_model=DeploymentOutcome,
    summary="Promote a version (202 with a request id when the policy wants approvals)",
    responses={
        202: {"model": DeploymentOutcome, "description": "Approval needed: request opened"},
        **COMMAND_RESPONSES,
    },
)
def promote(
    caller: Deployer,
    name: PromptName,
    environment: EnvironmentName,
    body: PromoteIn,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> DeploymentOutcome:
    result = services.app.promote(
        caller.workspace, name, environment, body.version, caller.actor, body.reason, expected
    )
    return _opened_or_done(services, response, result, name, environment, body.version)


def _opened_or_done(
    services: Services,
    response: Response,
    result: CommandResult,
    name: str,
    environment: str,
    version: int,
) -> DeploymentOutcome:
    value: dict[str, Any] = result.value
    if value["status"] == "pending_approval":
        response.status_code = 202
        return deployment_outcome(
            services,
            response,
            result,
            name,
            environment,
            "pending_approval",
            version=version,
            request_id=value["request_id"],
            approvals=0,
        )
    return deployment_outcome(
        services, response, result, name, environment, value["status"], version=version
    )


@router.post(
    "/{environment}/rollout",
    response_model=DeploymentOutcome,
    summary="Start a rollout: the candidate gets `share` of traffic by deterministic hashing",
    responses={
        202: {"model": DeploymentOutcome, "description": "Approval needed: request opened"},
        **COMMAND_RESPONSES,
    },
)
def start_rollout(
    caller: Deployer,
    name: PromptName,
    environment: EnvironmentName,
    body: RolloutIn,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> DeploymentOutcome:
    result = services.app.start_rollout(
        caller.workspace,
        name,
        environment,
        body.candidate,
        body.share,
        caller.actor,
        key_by=body.key_by,
        reason=body.reason,
        expected_revision=expected,
    )
    return _opened_or_done(services, response, result, name, environment, body.candidate)


@router.post(
    "/{environment}/rollout/adjust",
    response_model=DeploymentOutcome,
    summary="Change the candidate's share of an active rollout",
    responses=COMMAND_RESPONSES,
)
def adjust_rollout(
    caller: Deployer,
    name: PromptName,
    environment: EnvironmentName,
    body: AdjustIn,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> DeploymentOutcome:
    result = services.app.adjust_rollout(
        caller.workspace, name, environment, body.share, caller.actor, body.reason, expected
    )
    return deployment_outcome(services, response, result, name, environment, "rollout_adjusted")


@router.post(
    "/{environment}/rollout/complete",
    response_model=DeploymentOutcome,
    summary="Complete a rollout: the candidate serves everyone",
    responses=COMMAND_RESPONSES,
)
def complete_rollout(
    caller: Deployer,
    name: PromptName,
    environment: EnvironmentName,
    body: ReasonBody,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> DeploymentOutcome:
    result = services.app.complete_rollout(
        caller.workspace, name, environment, caller.actor, body.reason, expected
    )
    version = result.value["version"]
    return deployment_outcome(
        services, response, result, name, environment, "promoted", version=version
    )


@router.post(
    "/{environment}/rollout/abort",
    response_model=DeploymentOutcome,
    summary="Abort a rollout: the baseline serves everyone",
    responses=COMMAND_RESPONSES,
)
def abort_rollout(
    caller: Deployer,
    name: PromptName,
    environment: EnvironmentName,
    body: ReasonBody,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> DeploymentOutcome:
    result = services.app.abort_rollout(
        caller.workspace, name, environment, caller.actor, body.reason, expected
    )
    return deployment_outcome(services, response, result, name, environment, "aborted")


@router.post(
    "/{environment}/rollback",
    response_model=DeploymentOutcome,
    summary="Kill switch: serve the previous (or a named) version now, no approval",
    responses=COMMAND_RESPONSES,
)
def rollback(
    caller: Deployer,
    name: PromptName,
    environment: EnvironmentName,
    body: RollbackIn,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> DeploymentOutcome:
    result = services.app.rollback(
        caller.workspace,
        name,
        environment,
        body.reason,
        caller.actor,
        to_version=body.to_version,
        expected_revision=expected,
    )
    version = result.value["version"]
    return deployment_outcome(
        services, response, result, name, environment, "rolled_back", version=version
    )
