"""Request and response pieces shared by several routers (content, actors, command results)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from promptrecord.domain.resolution import RolloutView

MAX_JSON_DEPTH = 32

CONTENT_EXAMPLE: dict[str, Any] = {
    "type": "chat",
    "messages": [
        {"role": "system", "content": "You are the support assistant of {{ company }}."},
        {"role": "user", "content": "{{ question }}"},
    ],
    "model": {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929", "temperature": 0.2},
    "metadata": {"owners": ["support-team"]},
}


def _check_text(value: str) -> str:
    # A lone surrogate parses from JSON ("\ud800") but cannot be stored or sent as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text contains an unpaired surrogate; send valid Unicode") from None
    return value


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels; flatten it")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and Infinity are not JSON numbers; send a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(str(key))
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _checked_object(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value)
    return value


Text = Annotated[str, AfterValidator(_check_text)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_checked_object)]


class RequestBody(BaseModel):
    """Base of request bodies: unknown fields are refused so a typo does not pass silently."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ChatMessage(RequestBody):
    role: Literal["system", "user", "assistant"]
    content: Text = Field(description="A Jinja2 template", examples=["Hello {{ name }}"])


class ModelConfig(BaseModel):
    """The model a version is written for; other provider parameters are kept as given."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    provider: Text = Field(examples=["anthropic"])
    name: Text = Field(examples=["claude-sonnet-4-5-20250929"])
    temperature: float | None = Field(default=None, examples=[0.2])
    max_tokens: int | None = Field(default=None, examples=[1024])
    top_p: float | None = None
    top_k: int | None = None

    @model_validator(mode="after")
    def _extra_is_json(self) -> ModelConfig:
        _check_json(self.model_extra or {})
        return self


class Content(RequestBody):
    """What a version holds: chat messages or a text template, the model, optional schema."""

    model_config = ConfigDict(json_schema_extra={"examples": [CONTENT_EXAMPLE]})

    type: Literal["chat", "text"] | None = Field(
        default=None, description="Inferred from messages / text when left out"
    )
    messages: list[ChatMessage] | None = None
    text: Text | None = None
    model: ModelConfig
    output_schema: JsonObject | None = Field(default=None, description="A JSON Schema")
    metadata: JsonObject | None = Field(default=None, description="Owners, tags, free-form")

    def as_domain(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ReasonBody(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "canary looks healthy"}]})

    reason: Text = Field(default="", max_length=2000, examples=["canary looks healthy"])


class RequiredReasonBody(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "replaced by v2 bot"}]})

    reason: Text = Field(min_length=1, max_length=2000, examples=["support asked for it"])


class ActorOut(BaseModel):
    """Who did something: the API key, and the person a CI key acted for."""

    key_id: str = Field(examples=["3f2a9c0d1e4b5a69"])
    key_name: str = Field(examples=["ci"])
    on_behalf_of: str | None = Field(default=None, examples=["alice@example.com"])


class CommandResponse(BaseModel):
    """What every command returns: the log position written (null when nothing changed) and
    the revision of what it changed (also sent as the ETag)."""

    position: int | None = Field(description="Log position written; null if nothing changed")
    revision: int = Field(description="Revision of the changed aggregate; the ETag")


class VersionCommitted(CommandResponse):
    """A commit's outcome: the new version, or the head when the content was identical."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prompt": "support-bot",
                    "number": 4,
                    "created": True,
                    "content_hash": "sha256:69a7…",
                    "variables": ["company", "question"],
                    "warnings": [],
                    "restored_from": None,
                    "position": 31,
                    "revision": 6,
                }
            ]
        }
    )

    prompt: str
    number: int
    created: bool = Field(description="False when the content equals the head's: nothing written")
    content_hash: str
    variables: list[str] = Field(description="Names the templates use")
    warnings: list[str] = Field(description="E.g. a floating model name")
    restored_from: int | None = None


class VersionSummary(BaseModel):
    number: int = Field(examples=[3])
    content_hash: str = Field(examples=["sha256:69a7…"])
    variables: list[str] = Field(examples=[["company", "question"]])
    message: str = Field(examples=["tone down the apology"])
    author: ActorOut
    parent: int | None = Field(examples=[2])
    restored_from: int | None = Field(default=None, examples=[None])
    git_sha: str | None = None
    git_path: str | None = None
    warnings: list[str] = Field(default_factory=list)
    committed_at: datetime

    @classmethod
    def of(cls, version: dict[str, Any]) -> VersionSummary:
        return cls(
            number=version["number"],
            content_hash=version["content_hash"],
            variables=list(version["variables"]),
            message=version["message"],
            author=ActorOut(**version["author"]),
            parent=version["parent"],
            restored_from=version["restored_from"],
            git_sha=version["git_sha"],
            git_path=version["git_path"],
            warnings=list(version["warnings"]),
            committed_at=version["committed_at"],
        )


class VersionDetail(VersionSummary):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "number": 3,
                    "content_hash": "sha256:69a7…",
                    "variables": ["company", "question"],
                    "message": "tone down the apology",
                    "author": {"key_id": "3f2a9c0d1e4b5a69", "key_name": "ci"},
                    "parent": 2,
                    "restored_from": None,
                    "git_sha": "9fceb02",
                    "git_path": "prompts/support-bot/system.md",
                    "warnings": [],
                    "committed_at": "2026-03-14T09:00:00Z",
                    "content": CONTENT_EXAMPLE,
                }
            ]
        }
    )

    content: dict[str, Any] = Field(description="Normalised content (see Content)")

    @classmethod
    def of(cls, version: dict[str, Any]) -> VersionDetail:
        return cls(**VersionSummary.of(version).model_dump(), content=version["content"])


class RolloutOut(BaseModel):
    rollout_id: str = Field(examples=["b1946ac92492d2347c6235b4d2611184"])
    baseline: int = Field(examples=[3])
    candidate: int = Field(examples=[4])
    share: float = Field(description="Candidate's share of traffic, in (0, 1)", examples=[0.1])
    key_by: str = Field(examples=["tenant"])

    @classmethod
    def of(cls, view: RolloutView) -> RolloutOut:
        return cls(
            rollout_id=view.rollout_id,
            baseline=view.baseline,
            candidate=view.candidate,
            share=view.share,
            key_by=view.key_by,
        )


class DeploymentOutcome(CommandResponse):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prompt": "support-bot",
                    "environment": "production",
                    "status": "pending_approval",
                    "request_id": "a1b2c3d4e5f6",
                    "approvals": 0,
                    "version": 4,
                    "position": 40,
                    "revision": 5,
                }
            ]
        }
    )

    prompt: str
    environment: str
    status: str = Field(
        description="promoted | pending_approval | rollout_started | rollout_adjusted | "
        "aborted | rolled_back | rejected"
    )
    version: int | None = Field(default=None, description="Version concerned / now serving")
    request_id: str | None = None
    approvals: int | None = None


class PromotionRequestOut(BaseModel):
    request_id: str = Field(examples=["a1b2c3d4e5f6"])
    version: int
    mode: str = Field(description="promote | rollout")
    rollout: dict[str, Any] | None = Field(description="share and key_by, for a rollout")
    required_approvals: int
    reason: str
    requester: ActorOut
    approvals: list[ActorOut]
    status: str = Field(description="pending | executed | rejected")
    requested_at: datetime
    gate: dict[str, Any] | None = Field(
        default=None,
        description="The eval gate verdict the request was opened with, when the "
        "environment's policy requires one: dataset, status, run_id, summary (table, "
        "McNemar, win rates)",
    )

    @classmethod
    def of(cls, request: dict[str, Any]) -> PromotionRequestOut:
        return cls(
            request_id=request["request_id"],
            version=request["version"],
            mode=request["mode"],
            rollout=request["rollout"],
            required_approvals=request["required_approvals"],
            reason=request["reason"],
            requester=ActorOut(**request["requester"]),
            approvals=[ActorOut(**actor) for actor in request["approvals"]],
            status=request["status"],
            requested_at=request["requested_at"],
            gate=request.get("gate"),
        )
