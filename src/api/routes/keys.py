"""API keys of the workspace: issue (the token is shown once), list, revoke."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from promptrecord.api.commands import settle
from promptrecord.api.deps import Admin, Caller, ExpectedRevision, ServicesDep, Views
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import problem_responses
from promptrecord.api.schemas import CommandResponse, RequestBody, RequiredReasonBody, Text
from promptrecord.domain.errors import Forbidden
from promptrecord.domain.policy import ROLES

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=problem_responses(401, 403, 422))

_KEY_EXAMPLE: dict[str, Any] = {
    "key_id": "3f2a9c0d1e4b5a69",
    "name": "ci",
    "role": "deployer",
    "environments": ["staging"],
    "prompt_patterns": ["support-*"],
    "revoked": False,
}


class KeyIn(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "ci",
                    "role": "deployer",
                    "environments": ["staging"],
                    "prompt_patterns": ["support-*"],
                }
            ]
        }
    )

    name: Text = Field(max_length=200, description="Who or what uses the key")
    role: str = Field(description=f"One of {', '.join(ROLES)}", examples=["editor"])
    environments: list[Text] | None = Field(
        default=None, max_length=32, description="Limit the key to these environments"
    )
    prompt_patterns: list[Annotated[Text, Field(max_length=200)]] | None = Field(
        default=None, max_length=32, description="Limit the key to prompts matching these globs"
    )


class KeyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_KEY_EXAMPLE]})

    key_id: str
    name: str
    role: str
    environments: list[str] | None
    prompt_patterns: list[str] | None
    revoked: bool


class KeyIssued(CommandResponse, KeyOut):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_KEY_EXAMPLE,
                    "token": "pr_3f2a9c0d1e4b5a69_Vb1…",
                    "position": 12,
                    "revision": 5,
                }
            ]
        }
    )

    token: str = Field(description="The API key; shown this once, only its hash is stored")


class KeyRevoked(CommandResponse):
    key_id: str
    revoked: bool = True


def _within_limits(caller: Caller, body: KeyIn) -> None:
    """A key with limits may only issue keys inside them: no way around a limit by issuing."""
    mine = caller.key
    if mine.environments is not None and (
        body.environments is None or not set(body.environments) <= set(mine.environments)
    ):
        raise Forbidden(
            f"your key is limited to environments {', '.join(mine.environments)}; the new key "
            "must be limited to (some of) them too",
            field="environments",
            code="environment_not_allowed",
            limit="environments",
        )
    if mine.prompt_patterns is not None and (
        body.prompt_patterns is None
        or not all(
            any(fnmatchcase(pattern, own) for own in mine.prompt_patterns)
            for pattern in body.prompt_patterns
        )
    ):
        raise Forbidden(
            f"your key is limited to prompts matching {', '.join(mine.prompt_patterns)}; the "
            "new key's patterns must fall inside them",
            field="prompt_patterns",
            code="prompt_not_allowed",
            limit="prompt_patterns",
        )


@router.post(
    "",
    response_model=KeyIssued,
    status_code=201,
    summary="Issue an API key (the token is in this response only)",
    responses=problem_responses(404),
)
def issue_key(body: KeyIn, services: ServicesDep, caller: Admin, response: Response) -> KeyIssued:
    _within_limits(caller, body)
    result, token = services.app.issue_key(
        caller.workspace,
        body.name,
        body.role,
        caller.actor,
        environments=list(body.environments) if body.environments is not None else None,
        prompt_patterns=list(body.prompt_patterns) if body.prompt_patterns is not None else None,
    )
    settle(services, response, result)
    return KeyIssued(
        position=result.position,
        revision=result.revision,
        key_id=token.key_id,
        name=body.name,
        role=body.role,
        environments=body.environments,
        prompt_patterns=body.prompt_patterns,
        revoked=False,
        token=token.token,
    )


@router.get("", response_model=Page[KeyOut], summary="List the workspace's keys (never secrets)")
def list_keys(views: Views, caller: Admin, paging: Paging) -> Page[KeyOut]:
    # Keys are never removed, so the order of issue is a stable index to page by.
    fetched = views.api_keys(caller.workspace, paging.limit + 1, paging.after_number())
    chosen, cursor = paging.page(fetched, lambda key: key.number)
    items = [
        KeyOut(
            key_id=key.key_id,
            name=key.name,
            role=key.role,
            environments=key.environments,
            prompt_patterns=key.prompt_patterns,
            revoked=key.revoked,
        )
        for key in chosen
    ]
    return Page[KeyOut](items=items, next_cursor=cursor)


@router.post(
    "/{key_id}/revoke",
    response_model=KeyRevoked,
    summary="Revoke a key; it stops working at once",
    responses=problem_responses(404, 409),
)
def revoke_key(
    key_id: Annotated[str, Path(max_length=64, examples=["3f2a9c0d1e4b5a69"])],
    body: RequiredReasonBody,
    services: ServicesDep,
    caller: Admin,
    response: Response,
    expected: ExpectedRevision,
) -> KeyRevoked:
    result = services.app.revoke_key(caller.workspace, key_id, body.reason, caller.actor, expected)
    settle(services, response, result)
    return KeyRevoked(position=result.position, revision=result.revision, key_id=key_id)
