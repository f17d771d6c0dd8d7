"""What every command endpoint does once the domain has run it."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from promptrecord.api.schemas import DeploymentOutcome, VersionCommitted
from promptrecord.api.services import Services
from promptrecord.domain.application import CommandResult
from promptrecord.domain.content import content_warnings
from promptrecord.domain.resolution import ResolutionState, VersionView


def etag(revision: int) -> str:
    return f'"{revision}"'


def settle(services: Services, response: Response, result: CommandResult) -> None:
    """Send the revision as ETag and wait until this process's live state has the write,
    so the caller's next read through this process sees it."""
    response.headers["ETag"] = etag(result.revision)
    services.read_own_write(result.position)


def committed_version(
    services: Services,
    workspace: str,
    name: str,
    result: CommandResult,
    number: int,
    created: bool,
    restored_from: int | None = None,
) -> VersionCommitted:
    """Describe the version a commit made (or found), from the live state it was folded into."""
    view = services.live.read(lambda state: _version_view(state, workspace, name, number))
    if view is None:  # the live state lags behind the write: ask the aggregate instead
        version = services.app.prompt(workspace, name).get_version(number)
        content, digest, variables = (
            version["content"],
            version["content_hash"],
            version["variables"],
        )
    else:
        content, digest, variables = view.content, view.content_hash, view.variables
    return VersionCommitted(
        position=result.position,
        revision=result.revision,
        prompt=name,
        number=number,
        created=created,
        content_hash=digest,
        variables=list(variables),
        warnings=content_warnings(content),
        restored_from=restored_from,
    )


def _version_view(
    state: ResolutionState, workspace: str, name: str, number: int
) -> VersionView | None:
    prompt = state.prompts.get((workspace, name))
    return None if prompt is None else prompt.versions.get(number)


def deployment_outcome(
    services: Services,
    response: Response,
    result: CommandResult,
    name: str,
    environment: str,
    status: str,
    **fields: Any,
) -> DeploymentOutcome:
    """Settle a deployment command and describe its outcome."""
    settle(services, response, result)
    return DeploymentOutcome(
        position=result.position,
        revision=result.revision,
        prompt=name,
        environment=environment,
        status=status,
        **fields,
    )
