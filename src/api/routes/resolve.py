"""What a tenant gets: resolve a prompt in an environment, or resolve and render it."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptrecord.api.deps import Caller, PromptName, Runtime, ServicesDep, requires
from promptrecord.api.problems import problem, problem_responses
from promptrecord.api.schemas import CONTENT_EXAMPLE, JsonObject, RequestBody, Text
from promptrecord.domain.errors import NotFound
from promptrecord.domain.resolution import (
    Resolution,
    ResolutionState,
    RolloutDecision,
    VersionView,
    resolve,
    servable_prompt,
)
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


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# The encoded `"version":…,"content_hash":…,"content":…,"model":…,"variables":…` of each
# version served, by the id of the event that committed it (and its hash, as a guard):
# a committed version never changes, and its content is most of every answer's bytes.
_VERSION_JSON: dict[tuple[str, str], str] = {}
VERSION_JSON_CACHE_SIZE = 4096


def _version_json(version: VersionView) -> str:
    cache_key = (version.event_id, version.content_hash)
    encoded = _VERSION_JSON.get(cache_key)
    if encoded is None:
        encoded = _encode(
            {
                "version": version.number,
                "content_hash": version.content_hash,
                "content": version.content,
                "model": version.content["model"],
                "variables": version.variables,
            }
        )[1:-1]
        if len(_VERSION_JSON) >= VERSION_JSON_CACHE_SIZE:
            _VERSION_JSON.clear()  # rare; the versions served now come back at once
        _VERSION_JSON[cache_key] = encoded
    return encoded


def _resolved_at(
    state: ResolutionState,
    workspace: str,
    name: str,
    environment: str,
    tenant: str | None,
    key: str | None,
) -> tuple[Resolution, int]:
    resolution = resolve(state, workspace, name, environment, tenant, key, datetime.now(UTC))
    return resolution, state.position


_str = json.encoder.encode_basestring  # a JSON string as the encoder above writes it


def _str_or_null(value: str | None) -> str:
    return "null" if value is None else _str(value)


def _number(value: float | None) -> str:
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)  # what the encoder writes for a finite float
    return _encode(value)


def _arm_json(decision: RolloutDecision | None) -> str:
    if decision is None:
        return "null"
    return (
        f'{{"rollout_id":{_str(decision.rollout_id)},"arm":{_str(decision.arm)},'
        f'"bucket":{_number(decision.bucket)},"share":{_number(decision.share)},'
        f'"key_by":{_str(decision.key_by)},"baseline":{_number(decision.baseline)},'
        f'"candidate":{_number(decision.candidate)}}}'
    )


def _encode_answer(
    resolution: Resolution,
    position: int,
    name: str,
    environment: str,
    tenant: str | None,
    key: str | None,
) -> bytes:
    """The `Resolved` body, field for field and byte for byte as `json.dumps` (compact,
    ensure_ascii=False) writes it, with the version's part encoded once per version."""
    expires = resolution.pin_expires_at
    return (
        f'{{"prompt":{_str(name)},"environment":{_str(environment)},'
        f'"tenant":{_str_or_null(tenant)},"key":{_str_or_null(key)},'
        f"{_version_json(resolution.version)},"
        f'"reason":{_str(resolution.reason)},'
        f'"rollout":{_arm_json(resolution.rollout)},'
        f'"pin_expires_at":{"null" if expires is None else _str(expires.isoformat())},'
        f'"cause_event_id":{_str(resolution.cause)},"position":{int(position)}}}'
    ).encode()


def _answer(
    state: ResolutionState,
    workspace: str,
    name: str,
    environment: str,
    tenant: str | None,
    key: str | None,
) -> bytes:
    """The encoded answer to a resolve, from `state` (call it under the live state's lock)."""
    resolution, position = _resolved_at(state, workspace, name, environment, tenant, key)
    return _encode_answer(resolution, position, name, environment, tenant, key)


class _ResolveQuery(BaseModel):
    """The query of resolve, validated as FastAPI would (used when the fast path declines)."""

    environment: str = Field(default=DEFAULT_ENVIRONMENT, max_length=32)
    tenant: str | None = Field(default=None, max_length=256)
    key: str | None = Field(default=None, max_length=256)
    after: int | None = Field(default=None, ge=0)


# Declared for the OpenAPI document only: the route reads them itself (see _query).
_QUERY_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "environment",
        "in": "query",
        "required": False,
        "schema": {
            "type": "string",
            "maxLength": 32,
            "default": DEFAULT_ENVIRONMENT,
            "title": "Environment",
        },
    },
    {
        "name": "tenant",
        "in": "query",
        "required": False,
        "schema": {
            "anyOf": [{"type": "string", "maxLength": 256}, {"type": "null"}],
            "title": "Tenant",
        },
    },
    {
        "name": "key",
        "in": "query",
        "required": False,
        "schema": {
            "anyOf": [{"type": "string", "maxLength": 256}, {"type": "null"}],
            "description": "Routing key for key_by=user|request",
            "title": "Key",
        },
        "description": "Routing key for key_by=user|request",
    },
    {
        "name": "after",
        "in": "query",
        "required": False,
        "schema": {
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}],
            "description": "Wait until this log position is applied (≤ 5 s)",
            "title": "After",
        },
        "description": "Wait until this log position is applied (≤ 5 s)",
    },
]


def _query(request: Request) -> tuple[str, str | None, str | None, int | None]:
    """environment, tenant, key and after from the query string.

    Read here rather than as declared parameters: FastAPI's per-parameter machinery costs
    more than the whole resolution. Plainly valid values take the fast path; anything else
    goes through `_ResolveQuery`, so errors (422, `query.<name>`) read as FastAPI's would.
    """
    params = request.query_params
    environment = params.get("environment", DEFAULT_ENVIRONMENT)
    tenant = params.get("tenant")
    key = params.get("key")
    after = params.get("after")
    if (
        len(environment) <= 32
        and (tenant is None or len(tenant) <= 256)
        and (key is None or len(key) <= 256)
        and (after is None or (after.isascii() and after.isdigit()))
    ):
        return environment, tenant, key, None if after is None else int(after)
    given = {name: params.get(name) for name in ("environment", "tenant", "key", "after")}
    try:
        query = _ResolveQuery.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as error:
        errors = [{**e, "loc": ("query", *e["loc"])} for e in error.errors()]
        raise RequestValidationError(errors) from None
    return query.environment, query.tenant, query.key, query.after


_runtime = requires("runtime")


@router.get(
    "/{name}/resolve",
    response_model=Resolved,
    summary="The version this tenant (or routing key) gets now, with its content",
    responses=problem_responses(503),
    openapi_extra={"parameters": _QUERY_PARAMETERS},
)
async def resolve_prompt(
    request: Request,
    name: Annotated[str, Path(description="Prompt name", examples=["support-bot"])],
) -> Response:
    # Lean on purpose: this is the hot path. It reads memory only, authenticates and reads
    # its query without FastAPI's dependency and parameter machinery, checks the key's
    # limits inline, and encodes once (the version's part cached), with no response model.
    caller = await _runtime(request)
    environment, tenant, key, after = _query(request)
    caller.check_prompt(name)
    caller.check_environment(environment, field="query.environment")
    live: LiveState = request.app.state.services.live
    # waits on the event loop (the follower thread releases it): no thread is held
    if (
        after is not None
        and live.position < after
        and not await live.wait_async(after, AFTER_TIMEOUT_SECONDS)
    ):
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
    resolution, position = live.read(
        lambda state: _resolved_at(state, caller.workspace, name, environment, tenant, key)
    )
    return Response(
        _encode_answer(resolution, position, name, environment, tenant, key),
        media_type="application/json",
    )


def _version_for(state: ResolutionState, caller: Caller, name: str, number: int) -> VersionView:
    version = servable_prompt(state, caller.workspace, name).versions.get(number)
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
