"""Promotion requests of a prompt in an environment: list, approve, reject."""

from __future__ import annotations

from fastapi import APIRouter, Response

from promptrecord.api.commands import deployment_outcome
from promptrecord.api.deps import (
    Deployer,
    EnvironmentName,
    ExpectedRevision,
    PromptName,
    ServicesDep,
    Viewer,
)
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import problem_responses
from promptrecord.api.schemas import DeploymentOutcome, PromotionRequestOut, ReasonBody

router = APIRouter(
    prefix="/v1/prompts/{name}/environments/{environment}/requests",
    tags=["promotion requests"],
    responses=problem_responses(401, 403, 404, 422),
)
COMMAND_RESPONSES = problem_responses(409)


@router.get(
    "",
    response_model=Page[PromotionRequestOut],
    summary="Promotion requests, pending and past, oldest first",
)
def list_requests(
    caller: Viewer,
    name: PromptName,
    environment: EnvironmentName,
    services: ServicesDep,
    paging: Paging,
) -> Page[PromotionRequestOut]:
    services.app.workspace(caller.workspace).require_environment(environment)
    services.app.prompt(caller.workspace, name)
    deployment = services.app.deployment(caller.workspace, name, environment)
    requests = [] if deployment is None else list(deployment.requests.values())
    chosen, cursor = paging.slice(list(enumerate(requests)), lambda item: item[0])
    return Page[PromotionRequestOut](
        items=[PromotionRequestOut.of(request) for _, request in chosen], next_cursor=cursor
    )


@router.post(
    "/{request_id}/approve",
    response_model=DeploymentOutcome,
    summary="Approve a promotion request; the last approval needed carries it out",
    responses=COMMAND_RESPONSES,
)
def approve(
    caller: Deployer,
    name: PromptName,
    environment: EnvironmentName,
    request_id: str,
    body: ReasonBody,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> DeploymentOutcome:
    result = services.app.approve(
        caller.workspace, name, environment, request_id, caller.actor, body.reason, expected
    )
    value = result.value
    return deployment_outcome(
        services,
        response,
        result,
        name,
        environment,
        value["status"],
        request_id=request_id,
        approvals=value["approvals"],
    )


@router.post(
    "/{request_id}/reject",
    response_model=DeploymentOutcome,
    summary="Reject a promotion request",
    responses=COMMAND_RESPONSES,
)
def reject(
    caller: Deployer,
    name: PromptName,
    environment: EnvironmentName,
    request_id: str,
    body: ReasonBody,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> DeploymentOutcome:
    result = services.app.reject(
        caller.workspace, name, environment, request_id, caller.actor, body.reason, expected
    )
    return deployment_outcome(
        services, response, result, name, environment, "rejected", request_id=request_id
    )
