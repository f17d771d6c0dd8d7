"""Prompts of the workspace: create, list, read, archive, and diff two versions."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from promptrecord.api.commands import committed_version, etag, settle
from promptrecord.api.deps import (
    Caller,
    Deployer,
    Editor,
    ExpectedRevision,
    PromptName,
    ServicesDep,
    Viewer,
    Views,
)
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import problem_responses
from promptrecord.api.reads import require_prompt, require_version, version_summary
from promptrecord.api.schemas import (
    CONTENT_EXAMPLE,
    CommandResponse,
    Content,
    RequestBody,
    RequiredReasonBody,
    RolloutOut,
    Text,
    VersionCommitted,
    VersionSummary,
)
from promptrecord.api.services import Services
from promptrecord.domain.diff import diff_contents
from promptrecord.domain.errors import InvalidInput
from promptrecord.domain.prompt import name_from_title

router = APIRouter(
    prefix="/v1/prompts", tags=["prompts"], responses=problem_responses(401, 403, 404, 422)
)


class PromptIn(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "support-bot",
                    "title": "Support bot",
                    "description": "First-line answers for the help centre",
                    "content": CONTENT_EXAMPLE,
                    "message": "first version",
                }
            ]
        }
    )

    name: str | None = Field(
        default=None,
        max_length=64,
        description="^[a-z0-9][a-z0-9._-]{0,63}$; made from the title when left out",
    )
    title: Text = Field(default="", max_length=200)
    description: Text = Field(default="", max_length=5000)
    content: Content | None = Field(default=None, description="Commits version 1 when given")
    message: Text = Field(default="", max_length=2000)
    git_sha: str | None = Field(default=None, max_length=64)
    git_path: Text | None = Field(default=None, max_length=1000)


class PromptCreated(CommandResponse):
    name: str = Field(examples=["support-bot"])
    version: VersionCommitted | None = Field(description="Version 1, when content was given")


class DeploymentBrief(BaseModel):
    serving: int | None = Field(examples=[3])
    rollout: RolloutOut | None = None


class PromptSummary(BaseModel):
    name: str = Field(examples=["support-bot"])
    archived: bool = False
    head: int | None = Field(description="Latest version number", examples=[4])
    deployments: dict[str, DeploymentBrief] = Field(description="Per environment")


class PromptOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "support-bot",
                    "title": "Support bot",
                    "description": "First-line answers for the help centre",
                    "archived": False,
                    "versions": 4,
                    "head": {
                        "number": 4,
                        "content_hash": "sha256:69a7…",
                        "variables": ["company", "question"],
                        "message": "shorter greeting",
                        "author": {"key_id": "3f2a9c0d1e4b5a69", "key_name": "ci"},
                        "parent": 3,
                        "committed_at": "2026-03-14T09:00:00Z",
                    },
                    "revision": 6,
                }
            ]
        }
    )

    name: str
    title: str
    description: str
    archived: bool
    versions: int = Field(description="How many versions exist (numbered 1..versions)")
    head: VersionSummary | None
    revision: int = Field(description="Revision of the prompt; also its ETag")


class PromptArchiveState(CommandResponse):
    name: str
    archived: bool


class DiffToken(BaseModel):
    op: str = Field(description="equal | insert | delete", examples=["insert"])
    text: str = Field(examples=["kindly "])


class FieldDiff(BaseModel):
    path: str = Field(examples=["messages[0].content"])
    change: str = Field(description="modified | added | removed | unchanged")
    tokens: list[DiffToken]


class DiffOut(BaseModel):
    prompt: str = Field(examples=["support-bot"])
    from_version: int = Field(examples=[3])
    to_version: int = Field(examples=[4])
    changed: bool
    fields: list[FieldDiff]
    unified: str = Field(
        description="Changed fields with [-deleted-] and {+inserted+} marks",
        examples=["--- support-bot@3\n+++ support-bot@4\n@@ text @@\nHello [-all-]{+you+}\n"],
    )


@router.post(
    "",
    response_model=PromptCreated,
    status_code=201,
    summary="Create a prompt, optionally with its first version",
    responses=problem_responses(409),
)
def create_prompt(
    body: PromptIn, services: ServicesDep, caller: Editor, response: Response
) -> PromptCreated:
    name = body.name
    if name is None and body.title.strip():
        # Named here rather than by the domain so the key's prompt limits can be checked first.
        name = name_from_title(body.title, uuid.uuid4().hex[:8])
    if name is not None:
        caller.check_prompt(name)
    result = services.app.create_prompt(
        caller.workspace,
        caller.actor,
        name=name,
        title=body.title,
        description=body.description,
        content=body.content.as_domain() if body.content is not None else None,
        message=body.message,
        git_sha=body.git_sha,
        git_path=body.git_path,
    )
    settle(services, response, result)
    created_name: str = result.value
    version = None
    if body.content is not None:
        version = committed_version(services, caller.workspace, created_name, result, 1, True)
    return PromptCreated(
        position=result.position, revision=result.revision, name=created_name, version=version
    )


@router.get("", response_model=Page[PromptSummary], summary="List prompts with what serves where")
def list_prompts(views: Views, caller: Viewer, paging: Paging) -> Page[PromptSummary]:
    fetched = views.catalog(caller.workspace, paging.limit + 1, paging.after_name())
    chosen, cursor = paging.page(fetched, lambda entry: entry.prompt)
    ws = views.workspace(caller.workspace)
    environments = [e for e in (ws.environments if ws else []) if caller.may_see_environment(e)]
    serving: dict[str, dict[str, DeploymentBrief]] = {}
    if chosen:
        for d in views.deployments(caller.workspace):
            if d.serving_version is None or d.environment not in environments:
                continue
            rollout = None if d.rollout is None else RolloutOut(**asdict(d.rollout))
            brief = DeploymentBrief(serving=d.serving_version, rollout=rollout)
            serving.setdefault(d.prompt, {})[d.environment] = brief
    items = [
        PromptSummary(
            name=entry.prompt,
            archived=entry.archived,
            head=entry.head_version,
            deployments={
                env: serving[entry.prompt][env]
                for env in environments
                if env in serving.get(entry.prompt, {})
            },
        )
        for entry in chosen
        if caller.may_see_prompt(entry.prompt)
    ]
    return Page[PromptSummary](items=items, next_cursor=cursor)


@router.get("/{name}", response_model=PromptOut, summary="A prompt and its head version")
def get_prompt(caller: Viewer, name: PromptName, views: Views, response: Response) -> PromptOut:
    prompt = require_prompt(views, caller.workspace, name)
    response.headers["ETag"] = etag(prompt.revision)
    number = prompt.head_version
    head = None if number is None else require_version(views, caller.workspace, name, number)
    return PromptOut(
        name=prompt.prompt,
        title=prompt.title,
        description=prompt.description,
        archived=prompt.archived,
        versions=number or 0,
        head=version_summary(head) if head is not None else None,
        revision=prompt.revision,
    )


def _archive_state(
    services: Services,
    caller: Caller,
    name: str,
    archive: bool,
    reason: str,
    expected: int | None,
    response: Response,
) -> PromptArchiveState:
    command = services.app.archive if archive else services.app.unarchive
    result = command(caller.workspace, name, reason, caller.actor, expected)
    settle(services, response, result)
    return PromptArchiveState(
        position=result.position, revision=result.revision, name=name, archived=archive
    )


@router.post(
    "/{name}/archive",
    response_model=PromptArchiveState,
    summary="Archive a prompt: kept, but never served",
    responses=problem_responses(409),
)
def archive_prompt(
    caller: Deployer,
    name: PromptName,
    body: RequiredReasonBody,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> PromptArchiveState:
    return _archive_state(services, caller, name, True, body.reason, expected, response)


@router.post(
    "/{name}/unarchive",
    response_model=PromptArchiveState,
    summary="Unarchive a prompt so it can be deployed and served again",
    responses=problem_responses(409),
)
def unarchive_prompt(
    caller: Deployer,
    name: PromptName,
    body: RequiredReasonBody,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> PromptArchiveState:
    return _archive_state(services, caller, name, False, body.reason, expected, response)


@router.get("/{name}/diff", response_model=DiffOut, summary="Word-level diff of two versions")
def diff_versions(
    caller: Viewer,
    name: PromptName,
    views: Views,
    from_version: Annotated[
        int | None,
        Query(alias="from", ge=1, le=2**31, description="Default: the version before `to`"),
    ] = None,
    to_version: Annotated[
        int | None, Query(alias="to", ge=1, le=2**31, description="Default: the head")
    ] = None,
) -> DiffOut:
    head = require_prompt(views, caller.workspace, name).head_version or 0
    to_number = to_version if to_version is not None else head
    from_number = from_version if from_version is not None else to_number - 1
    if from_number < 1:
        raise InvalidInput(
            f"prompt {name!r} has no version before {to_number}; name both from and to",
            field="query.from",
            code="nothing_to_compare",
        )
    old = asdict(require_version(views, caller.workspace, name, from_number))
    new = asdict(require_version(views, caller.workspace, name, to_number))
    diff = diff_contents(old["content"], new["content"])
    data: dict[str, Any] = diff.to_dict()
    return DiffOut(
        prompt=name,
        from_version=from_number,
        to_version=to_number,
        changed=data["changed"],
        fields=[FieldDiff(**field) for field in data["fields"]],
        unified=diff.unified(f"{name}@{from_number}", f"{name}@{to_number}"),
    )
