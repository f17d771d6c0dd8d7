"""Tenant pins: hold one tenant on one version of a prompt in an environment until an expiry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from promptrecord.api.commands import settle
from promptrecord.api.deps import Deployer, ExpectedRevision, ServicesDep, Viewer, Views
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import problem_responses
from promptrecord.api.schemas import CommandResponse, ReasonBody, Text
from promptrecord.domain.policy import MAX_PIN_TTL_SECONDS

router = APIRouter(
    prefix="/v1/tenants/{tenant}/pins",
    tags=["pins"],
    responses=problem_responses(401, 403, 404, 422),
)

# Bounds the expiry arithmetic: beyond this a datetime overflows, and no pin needs it.


Tenant = Annotated[
    str, Path(min_length=1, max_length=256, description="The tenant's id", examples=["acme"])
]


class PinIn(ReasonBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prompt": "support-bot",
                    "environment": "production",
                    "version": 3,
                    "ttl_seconds": 86400,
                    "reason": "acme validated v3 only",
                }
            ]
        }
    )

    prompt: Text = Field(max_length=64)
    environment: Text = Field(max_length=32)
    version: int = Field(ge=1, le=2**31)
    expires_at: datetime | None = Field(
        default=None, description="With a timezone; at most the policy's pin_max_ttl_seconds"
    )
    ttl_seconds: int | None = Field(
        default=None,
        gt=0,
        le=MAX_PIN_TTL_SECONDS,
        description="Instead of expires_at; default: the policy's pin_default_ttl_seconds",
    )


class PinOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tenant": "acme",
                    "prompt": "support-bot",
                    "environment": "production",
                    "version": 3,
                    "expires_at": "2026-03-21T09:00:00Z",
                    "active": True,
                    "cause_event_id": "d8f3ef4a-6de6-537a-bdab-4818bc971916",
                }
            ]
        }
    )

    tenant: str
    prompt: str
    environment: str
    version: int
    expires_at: datetime
    active: bool = Field(description="Whether the pin holds now (not yet expired)")
    cause_event_id: str


class Pinned(CommandResponse):
    tenant: str
    prompt: str
    environment: str
    version: int
    expires_at: datetime


class Unpinned(CommandResponse):
    tenant: str
    prompt: str
    environment: str


@router.post(
    "",
    response_model=Pinned,
    status_code=201,
    summary="Pin the tenant to a version (replaces its pin for that prompt and environment)",
    responses=problem_responses(409),
)
def pin(
    caller: Deployer,
    tenant: Tenant,
    body: PinIn,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> Pinned:
    caller.check_prompt(body.prompt, field="prompt")
    caller.check_environment(body.environment)
    result = services.app.pin(
        caller.workspace,
        tenant,
        body.prompt,
        body.environment,
        body.version,
        caller.actor,
        reason=body.reason,
        expires_at=body.expires_at,
        ttl_seconds=body.ttl_seconds,
        expected_revision=expected,
    )
    settle(services, response, result)
    return Pinned(
        position=result.position,
        revision=result.revision,
        tenant=tenant,
        prompt=body.prompt,
        environment=body.environment,
        version=result.value["version"],
        expires_at=result.value["expires_at"],
    )


@router.get("", response_model=Page[PinOut], summary="The tenant's pins, expired ones included")
def list_pins(caller: Viewer, tenant: Tenant, views: Views, paging: Paging) -> Page[PinOut]:
    now = datetime.now(UTC)
    pins = [
        PinOut(
            tenant=tenant,
            prompt=pin.prompt,
            environment=pin.environment,
            version=pin.version,
            expires_at=pin.expires_at,
            active=now < pin.expires_at,
            cause_event_id=pin.event_id,
        )
        for pin in views.pins(caller.workspace, tenant)
        if caller.may_see_prompt(pin.prompt) and caller.may_see_environment(pin.environment)
    ]
    pins.sort(key=lambda pin: (pin.prompt, pin.environment))
    chosen, cursor = paging.slice(pins, lambda pin: f"{pin.prompt}\x1f{pin.environment}")
    return Page[PinOut](items=chosen, next_cursor=cursor)


@router.delete(
    "/{prompt}/{environment}",
    response_model=Unpinned,
    summary="Unpin: the tenant follows the deployment again",
    responses=problem_responses(409),
)
def unpin(
    caller: Deployer,
    tenant: Tenant,
    prompt: Annotated[str, Path(max_length=64, examples=["support-bot"])],
    environment: Annotated[str, Path(max_length=32, examples=["production"])],
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
    reason: Annotated[str, Query(max_length=2000, description="Why")] = "",
) -> Unpinned:
    caller.check_prompt(prompt, field="prompt")
    caller.check_environment(environment)
    result = services.app.unpin(
        caller.workspace, tenant, prompt, environment, caller.actor, reason, expected
    )
    settle(services, response, result)
    return Unpinned(
        position=result.position,
        revision=result.revision,
        tenant=tenant,
        prompt=prompt,
        environment=environment,
    )
