"""What a tenant gets: resolve a prompt in an environment, or resolve and render it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from promptrecord.api.deps import Caller, PromptName, Runtime, ServicesDep
from promptrecord.api.problems import problem, problem_responses
from promptrecord.api.schemas import CONTENT_EXAMPLE, JsonObject, RequestBody, Text
from promptrecord.domain.errors import Conflict, NotFound
from promptrecord.domain.resolution import Resolution, ResolutionState, VersionView, resolve
from promptrecord.domain.templates import render
from promptrecord.projections.live import LiveState

router = APIRouter(
    prefix="/v1/prompts",
    tags=["resolution"],
    responses=problem_responses(401, 403, 404, 409, 422),
)

AFTER_TIMEOUT_SECONDS = 5.0
DEFAULT_ENVIRONMENT = "production"


class RolloutArm(BaseModel):
    rollout_id: str
    arm: str = Field(description="candidate | baseline", examples=["candidate"])
    bucket: float | None = Field(description="The key's place in [0, 1); null without a key")
    share: float = Field(examples=[0.1])
    key_by: str = Field(examples=["tenant"])
    baseline: int = Field(examples=[3])
    candidate: int = Field(examples=[4])


class Resolved(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prompt": "support-bot",
                    "environment": "production",
                    "tenant": "acme",
                    "key": None,
                    "version": 4,
                    "content_hash": "sha256:69a7…",
                    "content": CONTENT_EXAMPLE,
                    "model": CONTENT_EXAMPLE["model"],
                    "variables": ["company", "question"],
                    "reason": "rollout",
                    "rollout": {
                        "rollout_id": "b1946ac92492d2347c6235b4d2611184",
                        "arm": "candidate",
                        "bucket": 0.0731,
                        "share": 0.1,
                        "key_by": "tenant",
                        "baseline": 3,
                        "candidate": 4,
                    },
                    "pin_expires_at": None,
                    "cause_event_id": "d8f3ef4a-6de6-537a-bdab-4818bc971916",
                    "position": 57,
                }
            ]
        }
    )

    prompt: str
    environment: str
    tenant: str | None
    key: str | None
    version: int
    content_hash: str
    content: dict[str, Any]
    model: dict[str, Any]
    variables: list[str]
    reason: str = Field(description="pinned | rollout | promoted")
    rollout: RolloutArm | None
    pin_expires_at: datetime | None
    cause_event_id: str = Field(description="The event that made this the answer")
    position: int = Field(description="Log position this answer reflects")


class CompileIn(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "environment": "production",
                    "tenant": "acme",
                    "variables": {"company": "Acme", "question": "Where is my order?"},
                }
            ]
        }
    )

    environment: Text | None = Field(
        default=None, max_length=32, description="Default: production (unused with version)"
    )
    tenant: Text | None = Field(default=None, max_length=256)
    key: Text | None = Field(default=None, max_length=256, description="Routing key")
    version: int | None = Field(default=None, ge=1, description="Render this version instead")
    variables: JsonObject = Field(default_factory=dict)


class Compiled(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prompt": "support-bot",
                    "environment": "production",
                    "tenant": "acme",
                    "version": 4,
                    "content_hash": "sha256:69a7…",
                    "reason": "promoted",
                    "model": CONTENT_EXAMPLE["model"],
                    "messages": [
                        {"role": "system", "content": "You are the support assistant of Acme."},
                        {"role": "user", "content": "Where is my order?"},
                    ],
                    "text": None,
                    "variables": ["company", "question"],
                    "unused": [],
                }
            ]
        }
    )

    prompt: str
    environment: str | None
    tenant: str | None
    version: int
    content_hash: str
    reason: str = Field(description="pinned | rollout | promoted | requested")
    model: dict[str, Any]
    messages: list[dict[str, str]] | None = Field(description="For chat prompts")
    text: str | None = Field(description="For text prompts")
    variables: list[str] = Field(description="Names the templates use")
    unused: list[str] = Field(description="Variables passed that no template uses")
    output_schema: dict[str, Any] | None = None


def _rollout_arm(resolution: Resolution) -> dict[str, Any] | None:
    decision = resolution.rollout
    if decision is None:
        return None
    return {
        "rollout_id": decision.rollout_id,
        "arm": decision.arm,
        "bucket": decision.bucket,
        "share": decision.share,
        "key_by": decision.key_by,
        "baseline": decision.baseline,
        "candidate": decision.candidate,
    }


def _answer(
    state: ResolutionState,
    workspace: str,
    name: str,
    environment: str,
    tenant: str | None,
    key: str | None,
) -> dict[str, Any]:
    resolution = resolve(state, workspace, name, environment, tenant, key, datetime.now(UTC))
    version = resolution.version
    expires = resolution.pin_expires_at
    return {
        "prompt": name,
        "environment": environment,
        "tenant": tenant,
        "key": key,
        "version": version.number,
        "content_hash": version.content_hash,
        "content": version.content,
        "model": version.content["model"],
        "variables": version.variables,
        "reason": resolution.reason,
        "rollout": _rollout_arm(resolution),
        "pin_expires_at": expires.isoformat() if expires is not None else None,
        "cause_event_id": resolution.cause,
        "position": state.position,
    }


@router.get(
    "/{name}/resolve",
    response_model=Resolved,
    summary="The version this tenant (or routing key) gets now, with its content",
    responses=problem_responses(503),
)
async def resolve_prompt(
    request: Request,
    caller: Runtime,
    name: Annotated[str, Path(description="Prompt name", examples=["support-bot"])],
    environment: Annotated[str, Query(max_length=32)] = DEFAULT_ENVIRONMENT,
    tenant: Annotated[str | None, Query(max_length=256)] = None,
    key: Annotated[
        str | None, Query(max_length=256, description="Routing key for key_by=user|request")
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, description="Wait until this log position is applied (≤ 5 s)")
    ] = None,
) -> Response:
    # Lean on purpose: this is the hot path. It reads memory only, checks the key's limits
    # inline instead of through more dependencies, and encodes once, without a
    # response-model round trip.
    caller.check_prompt(name)
    caller.check_environment(environment, field="query.environment")
    live: LiveState = request.app.state.services.live
    if after is not None and live.position < after:
        reached = await anyio.to_thread.run_sync(live.wait_for, after, AFTER_TIMEOUT_SECONDS)
        if not reached:
            return problem(
                503,
                "position_not_reached",
                f"log position {after} was not applied within {AFTER_TIMEOUT_SECONDS:g} s "
                f"(at {live.position}); retry shortly",
                f"/v1/prompts/{name}/resolve",
                field="query.after",
                headers={"Retry-After": "1"},
                extra={"position": live.position},
            )
    answer = live.read(
        lambda state: _answer(state, caller.workspace, name, environment, tenant, key)
    )
    body = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")


def _version_for(state: ResolutionState, caller: Caller, name: str, number: int) -> VersionView:
    prompt = state.prompts.get((caller.workspace, name))
    if prompt is None:
        raise NotFound(
            f"prompt {name!r} does not exist in this workspace",
            field="name",
            code="prompt_not_found",
        )
    if prompt.archived:
        raise Conflict(
            f"prompt {name!r} is archived and cannot be served; unarchive it to serve it again",
            code="prompt_archived",
        )
    version = prompt.versions.get(number)
    if version is None:
        raise NotFound(
            f"prompt {name!r} has no version {number}",
            field="version",
            code="version_not_found",
        )
    return version


@router.post(
    "/{name}/compile",
    response_model=Compiled,
    summary="Resolve (or take the named version) and render it with variables",
)
def compile_prompt(
    caller: Runtime, name: PromptName, body: CompileIn, services: ServicesDep
) -> Compiled:
    # A plain def: rendering is CPU work on a user's template, kept off the event loop.
    environment = None
    number = body.version
    if number is not None:
        version = services.live.read(lambda state: _version_for(state, caller, name, number))
        reason = "requested"
    else:
        environment = caller.check_environment(body.environment or DEFAULT_ENVIRONMENT)
        resolution = services.live.read(
            lambda state: resolve(
                state,
                caller.workspace,
                name,
                environment,
                body.tenant,
                body.key,
                datetime.now(UTC),
            )
        )
        version, reason = resolution.version, resolution.reason
    rendered = render(version.content, body.variables)
    return Compiled(
        prompt=name,
        environment=environment,
        tenant=body.tenant,
        version=version.number,
        content_hash=version.content_hash,
        reason=reason,
        model=version.content["model"],
        messages=rendered.messages,
        text=rendered.text,
        variables=list(version.variables),
        unused=rendered.unused,
        output_schema=version.content.get("output_schema"),
    )
