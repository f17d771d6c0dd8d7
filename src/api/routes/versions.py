"""Versions of a prompt: commit, list, read one, and restore an old one as a new version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import ConfigDict, Field

from promptrecord.api.commands import committed_version, settle
from promptrecord.api.deps import Editor, ExpectedRevision, PromptName, ServicesDep, Viewer, Views
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import problem_responses
from promptrecord.api.reads import require_prompt, require_version, version_detail, version_summary
from promptrecord.api.schemas import (
    CONTENT_EXAMPLE,
    Content,
    RequestBody,
    Text,
    VersionCommitted,
    VersionDetail,
    VersionSummary,
)

router = APIRouter(
    prefix="/v1/prompts/{name}/versions",
    tags=["versions"],
    responses=problem_responses(401, 403, 404, 422),
)

VersionNumber = Annotated[int, Path(ge=1, le=2**31, description="Version number", examples=[3])]


class VersionIn(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "content": CONTENT_EXAMPLE,
                    "message": "shorter greeting",
                    "git_sha": "9fceb02",
                    "git_path": "prompts/support-bot/system.md",
                }
            ]
        }
    )

    content: Content
    message: Text = Field(default="", max_length=2000)
    git_sha: str | None = Field(default=None, max_length=64)
    git_path: Text | None = Field(default=None, max_length=1000)


class RestoreIn(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"message": "back to the v2 tone"}]})

    message: Text = Field(default="", max_length=2000, description="Default: 'restore version n'")


@router.post(
    "",
    response_model=VersionCommitted,
    status_code=201,
    summary="Commit a new version (identical content returns the head, 200)",
    responses={
        200: {"model": VersionCommitted, "description": "Identical to the head: nothing written"},
        **problem_responses(409),
    },
)
def commit_version(
    caller: Editor,
    name: PromptName,
    body: VersionIn,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> VersionCommitted:
    result = services.app.commit_version(
        caller.workspace,
        name,
        body.content.as_domain(),
        caller.actor,
        message=body.message,
        expected_revision=expected,
        git_sha=body.git_sha,
        git_path=body.git_path,
    )
    number, created = result.value
    if not created:
        response.status_code = 200
    settle(services, response, result)
    return committed_version(services, caller.workspace, name, result, number, created)


@router.get(
    "", response_model=Page[VersionSummary], summary="List a prompt's versions, oldest first"
)
def list_versions(
    caller: Viewer, name: PromptName, views: Views, paging: Paging
) -> Page[VersionSummary]:
    fetched = views.versions(caller.workspace, name, paging.limit + 1, paging.after_number())
    if not fetched:
        require_prompt(views, caller.workspace, name)
    chosen, cursor = paging.page(fetched, lambda version: version.number)
    return Page[VersionSummary](
        items=[version_summary(version) for version in chosen], next_cursor=cursor
    )


@router.get("/{number}", response_model=VersionDetail, summary="One version, with its content")
def get_version(
    caller: Viewer, name: PromptName, number: VersionNumber, views: Views
) -> VersionDetail:
    return version_detail(require_version(views, caller.workspace, name, number))


@router.post(
    "/{number}/restore",
    response_model=VersionCommitted,
    status_code=201,
    summary="Content rollback: commit an old version's content as a new version",
    responses={
        200: {"model": VersionCommitted, "description": "Already the head's content"},
        **problem_responses(409),
    },
)
def restore_version(
    caller: Editor,
    name: PromptName,
    number: VersionNumber,
    body: RestoreIn,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> VersionCommitted:
    result = services.app.restore_version(
        caller.workspace, name, number, caller.actor, body.message, expected
    )
    created_number, created = result.value
    if not created:
        response.status_code = 200
    settle(services, response, result)
    return committed_version(
        services,
        caller.workspace,
        name,
        result,
        created_number,
        created,
        restored_from=number if created else None,
    )
