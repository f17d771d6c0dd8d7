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
    Views,
)
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import problem_responses
from promptrecord.api.reads import promotion_request_out, require_environment, require_prompt
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
    views: Views,
    paging: Paging,
) -> Page[PromotionRequestOut]:
    require_environment(views, caller.workspace, environment)
    require_prompt(views, caller.workspace, name)
    fetched = views.promotion_requests(
        caller.workspace, name, environment, paging.limit + 1, paging.after_number()
    )
    chosen, cursor = paging.page(fetched, lambda request: request.number)
    return Page[PromotionRequestOut](
        items=[promotion_request_out(request) for request in chosen], next_cursor=cursor
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
