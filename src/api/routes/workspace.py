"""The caller's workspace: its environments, in order, and each environment's policy."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from promptrecord.api.commands import etag, settle
from promptrecord.api.deps import (
    Admin,
    EnvironmentName,
    ExpectedRevision,
    ServicesDep,
    Viewer,
    Views,
)
from promptrecord.api.problems import problem_responses
from promptrecord.api.schemas import CommandResponse, RequestBody, Text
from promptrecord.domain.errors import Unavailable
from promptrecord.domain.policy import MAX_PIN_TTL_SECONDS, EnvironmentPolicy

router = APIRouter(
    prefix="/v1/workspace",
    tags=["workspace"],
    responses=problem_responses(401, 403, 422),
)


class Policy(BaseModel):
    """What an environment demands before it serves a version."""

    required_approvals: int = Field(description="Distinct deployers who must approve (0 = none)")
    four_eyes: bool = Field(description="Approvers may be neither requester nor version author")
    require_previous_environment: bool = Field(
        description="The version must have served the environment before this one"
    )
    refuse_floating_models: bool = Field(description="Refuse undated / *-latest model names")
    pin_default_ttl_seconds: int
    pin_max_ttl_seconds: int
    require_gate: bool = Field(
        description="Promotion (and completing a rollout) needs the newest completed eval run "
        "of the candidate against what serves here, on gate_dataset, to have passed"
    )
    gate_dataset: str | None = Field(description="The dataset that eval run must use")


class WorkspaceOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "slug": "acme",
                    "name": "Acme Corp",
                    "environments": ["development", "staging", "production"],
                    "policies": {
                        "production": {
                            "required_approvals": 1,
                            "four_eyes": True,
                            "require_previous_environment": True,
                            "refuse_floating_models": True,
                            "pin_default_ttl_seconds": 604800,
                            "pin_max_ttl_seconds": 7776000,
                            "require_gate": True,
                            "gate_dataset": "support-golden",
                        }
                    },
                    "revision": 7,
                }
            ]
        }
    )

    slug: str
    name: str
    environments: list[str] = Field(description="In promotion order")
    policies: dict[str, Policy] = Field(description="Every environment's effective policy")
    revision: int


class EnvironmentsIn(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"environments": ["development", "staging", "production"]}]}
    )

    environments: list[Text] = Field(
        description="All environments in promotion order; existing ones cannot be removed",
        max_length=32,
    )


class EnvironmentsSet(CommandResponse):
    environments: list[str]


class PolicyIn(RequestBody):
    """Fields to change; the ones you leave out keep their current value."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"required_approvals": 2, "four_eyes": True},
                {"require_gate": True, "gate_dataset": "support-golden"},
            ]
        }
    )

    required_approvals: int | None = Field(default=None, examples=[2])
    four_eyes: bool | None = None
    require_previous_environment: bool | None = None
    refuse_floating_models: bool | None = None
    pin_default_ttl_seconds: Annotated[int | None, Field(le=MAX_PIN_TTL_SECONDS)] = None
    pin_max_ttl_seconds: Annotated[int | None, Field(le=MAX_PIN_TTL_SECONDS)] = None
    require_gate: bool | None = Field(default=None, description="Needs gate_dataset set")
    gate_dataset: str | None = Field(
        default=None, max_length=64, description="A dataset name; null clears it"
    )

    def changes(self) -> dict[str, Any]:
        """The fields given; null means "keep", except for gate_dataset where it clears."""
        changed = self.model_dump(exclude_none=True)
        if "gate_dataset" in self.model_fields_set and self.gate_dataset is None:
            changed["gate_dataset"] = None
        return changed


class PolicySet(CommandResponse):
    environment: str
    policy: Policy


@router.get("", response_model=WorkspaceOut, summary="The caller's workspace")
def get_workspace(views: Views, caller: Viewer, response: Response) -> WorkspaceOut:
    ws = views.workspace(caller.workspace)
    if ws is None:
        raise Unavailable(  # the key is known, so the views lag behind the log
            f"workspace {caller.workspace!r} is not in the read views yet; retry shortly",
            code="views_behind",
        )
    response.headers["ETag"] = etag(ws.revision)
    return WorkspaceOut(
        slug=ws.slug,
        name=ws.name,
        environments=list(ws.environments),
        policies={
            env: Policy(**EnvironmentPolicy(**ws.policies.get(env, {})).as_dict())
            for env in ws.environments
        },
        revision=ws.revision,
    )


@router.post(
    "/environments",
    response_model=EnvironmentsSet,
    summary="Set the ordered list of environments (add or reorder; never remove)",
    responses=problem_responses(409),
)
def set_environments(
    body: EnvironmentsIn,
    services: ServicesDep,
    caller: Admin,
    expected: ExpectedRevision,
    response: Response,
) -> EnvironmentsSet:
    for environment in body.environments:
        caller.check_environment(environment)
    result = services.app.set_environments(
        caller.workspace, list(body.environments), caller.actor, expected
    )
    settle(services, response, result)
    return EnvironmentsSet(
        position=result.position, revision=result.revision, environments=body.environments
    )


@router.post(
    "/policies/{environment}",
    response_model=PolicySet,
    summary="Change an environment's deployment policy",
    responses=problem_responses(404, 409),
)
def set_policy(
    caller: Admin,
    environment: EnvironmentName,
    body: PolicyIn,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
) -> PolicySet:
    ws = services.app.workspace(caller.workspace)
    ws.require_environment(environment)
    merged = {**ws.policy(environment).as_dict(), **body.changes()}
    policy = EnvironmentPolicy.from_dict(merged)
    # Without If-Match, still refuse to write a merge computed from a policy someone else
    # changed in the meantime.
    result = services.app.set_policy(
        caller.workspace,
        environment,
        policy,
        caller.actor,
        expected if expected is not None else ws.version,
    )
    settle(services, response, result)
    return PolicySet(
        position=result.position,
        revision=result.revision,
        environment=environment,
        policy=Policy(**policy.as_dict()),
    )
