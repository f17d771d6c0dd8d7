"""The resolution rule: which version a tenant gets, as one pure function over a folded state."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from promptrecord.domain.base import event_id
from promptrecord.domain.errors import Conflict, NotFound

_TWO_64 = float(2**64)


def bucket(salt: str, key: str) -> float:
    """A key's place in [0, 1): the first 8 bytes of sha256(salt:key) over 2**64."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_64


@dataclass(frozen=True)
class VersionView:
    number: int
    content: dict[str, Any]
    content_hash: str
    variables: list[str]
    event_id: str


@dataclass
class PromptView:
    workspace: str
    name: str
    archived: bool = False
    versions: dict[int, VersionView] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutView:
    rollout_id: str
    baseline: int
    candidate: int
    share: float
    key_by: str
    event_id: str


@dataclass
class DeploymentView:
    serving: int | None = None
    rollout: RolloutView | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class PinView:
    version: int
    expires_at: datetime
    event_id: str


@dataclass(frozen=True)
class KeyView:
    key_id: str
    workspace: str
    name: str
    role: str
    secret_hash: str
    environments: list[str] | None
    prompt_patterns: list[str] | None
    revoked: bool


@dataclass
class WorkspaceView:
    slug: str
    environments: list[str]


@dataclass(frozen=True)
class RolloutDecision:
    rollout_id: str
    arm: str  # "candidate" | "baseline"
    bucket: float | None  # None when the request carried no routing key
    share: float
    key_by: str
    baseline: int
    candidate: int


@dataclass(frozen=True)
class Resolution:
    version: VersionView
    reason: str  # "pinned" | "rollout" | "promoted"
    cause: str  # id of the event that made this the answer
    rollout: RolloutDecision | None = None
    pin_expires_at: datetime | None = None


@dataclass
class ResolutionState:
    """Everything `resolve` and authentication need, folded from the event log."""

    position: int = 0
    workspaces: dict[str, WorkspaceView] = field(default_factory=dict)
    keys: dict[str, KeyView] = field(default_factory=dict)
    prompts: dict[tuple[str, str], PromptView] = field(default_factory=dict)
    deployments: dict[tuple[str, str, str], DeploymentView] = field(default_factory=dict)
    pins: dict[tuple[str, str, str, str], PinView] = field(default_factory=dict)
    _subjects: dict[UUID, tuple[str, ...]] = field(default_factory=dict)

    def apply(self, event: Any, position: int | None = None) -> None:
        """Fold one domain event in. Events of other kinds leave the state alone."""
        handler = _HANDLERS.get(type(event).__qualname__)
        if handler is not None:
            handler(self, event)
        if position is not None:
            self.position = position

    def _subject(self, event: Any) -> tuple[str, ...]:
        return self._subjects[event.originator_id]


def _workspace_created(state: ResolutionState, e: Any) -> None:
    state._subjects[e.originator_id] = (e.slug,)
    state.workspaces[e.slug] = WorkspaceView(e.slug, list(e.environments))


def _environments_set(state: ResolutionState, e: Any) -> None:
    state.workspaces[state._subject(e)[0]].environments = list(e.environments)


def _key_issued(state: ResolutionState, e: Any) -> None:
    state.keys[e.key_id] = KeyView(
        e.key_id,
        state._subject(e)[0],
        e.name,
        e.role,
        e.secret_hash,
        e.environments,
        e.prompt_patterns,
        False,
    )


def _key_revoked(state: ResolutionState, e: Any) -> None:
    state.keys[e.key_id] = replace(state.keys[e.key_id], revoked=True)


def _prompt_created(state: ResolutionState, e: Any) -> None:
    state._subjects[e.originator_id] = (e.workspace, e.name)
    state.prompts[(e.workspace, e.name)] = PromptView(e.workspace, e.name)


def _version_committed(state: ResolutionState, e: Any) -> None:
    prompt = state.prompts[state._subject(e)]  # type: ignore[index]
    prompt.versions[e.number] = VersionView(
        e.number, e.content, e.content_hash, list(e.variables), event_id(e)
    )


def _archived(state: ResolutionState, e: Any) -> None:
    state.prompts[state._subject(e)].archived = True  # type: ignore[index]


def _unarchived(state: ResolutionState, e: Any) -> None:
    state.prompts[state._subject(e)].archived = False  # type: ignore[index]


def _deployment_created(state: ResolutionState, e: Any) -> None:
    key = (e.workspace, e.prompt, e.environment)
    state._subjects[e.originator_id] = key
    state.deployments[key] = DeploymentView()


def _deployment(state: ResolutionState, e: Any) -> DeploymentView:
    return state.deployments[state._subject(e)]  # type: ignore[index]


def _promoted(state: ResolutionState, e: Any) -> None:
    d = _deployment(state, e)
    d.serving, d.rollout, d.event_id = e.version, None, event_id(e)


def _rollout_started(state: ResolutionState, e: Any) -> None:
    d = _deployment(state, e)
    d.rollout = RolloutView(e.rollout_id, e.baseline, e.candidate, e.share, e.key_by, event_id(e))


def _rollout_adjusted(state: ResolutionState, e: Any) -> None:
    d = _deployment(state, e)
    assert d.rollout is not None
    d.rollout = replace(d.rollout, share=e.share, event_id=event_id(e))


def _rollout_completed(state: ResolutionState, e: Any) -> None:
    d = _deployment(state, e)
    d.serving, d.rollout, d.event_id = e.version, None, event_id(e)


def _rollout_aborted(state: ResolutionState, e: Any) -> None:
    d = _deployment(state, e)
    d.rollout, d.event_id = None, event_id(e)


def _rolled_back(state: ResolutionState, e: Any) -> None:
    d = _deployment(state, e)
    d.serving, d.rollout, d.event_id = e.to_version, None, event_id(e)


def _pin_created(state: ResolutionState, e: Any) -> None:
    state._subjects[e.originator_id] = (e.workspace, e.tenant, e.prompt, e.environment)


def _pinned(state: ResolutionState, e: Any) -> None:
    key = state._subject(e)
    state.pins[key] = PinView(e.version, e.expires_at, event_id(e))  # type: ignore[index]


def _unpinned(state: ResolutionState, e: Any) -> None:
    state.pins.pop(state._subject(e), None)  # type: ignore[arg-type]


_HANDLERS = {
    "Workspace.Created": _workspace_created,
    "Workspace.EnvironmentsSet": _environments_set,
    "Workspace.ApiKeyIssued": _key_issued,
    "Workspace.ApiKeyRevoked": _key_revoked,
    "Prompt.Created": _prompt_created,
    "Prompt.VersionCommitted": _version_committed,
    "Prompt.Archived": _archived,
    "Prompt.Unarchived": _unarchived,
    "Deployment.Created": _deployment_created,
    "Deployment.Promoted": _promoted,
    "Deployment.RolloutStarted": _rollout_started,
    "Deployment.RolloutAdjusted": _rollout_adjusted,
    "Deployment.RolloutCompleted": _rollout_completed,
    "Deployment.RolloutAborted": _rollout_aborted,
    "Deployment.RolledBack": _rolled_back,
    "TenantPin.Created": _pin_created,
    "TenantPin.Pinned": _pinned,
    "TenantPin.Unpinned": _unpinned,
}


def servable_prompt(state: ResolutionState, workspace: str, prompt: str) -> PromptView:
    """The prompt, refused when it does not exist or is archived (rule 1 of `resolve`)."""
    view = state.prompts.get((workspace, prompt))
    if view is None:
        raise NotFound(
            f"prompt {prompt!r} does not exist in this workspace",
            field="name",
            code="prompt_not_found",
        )
    if view.archived:
        raise Conflict(
            f"prompt {prompt!r} is archived and cannot be served; unarchive it to serve it again",
            code="prompt_archived",
        )
    return view


def resolve(
    state: ResolutionState,
    workspace: str,
    prompt: str,
    environment: str,
    tenant: str | None,
    routing_key: str | None,
    at: datetime,
) -> Resolution:
    """The version `tenant` (or `routing_key`) gets of `prompt` in `environment` at `at`.

    1. archived prompt -> refused; 2. a pin valid at `at`; 3. an active rollout, by bucket;
    4. the promoted version; 5. nothing deployed -> refused.
    """
    view = servable_prompt(state, workspace, prompt)
    ws = state.workspaces.get(workspace)
    if ws is not None and environment not in ws.environments:
        raise NotFound(
            f"environment {environment!r} does not exist; this workspace has "
            f"{', '.join(ws.environments)}",
            field="environment",
            code="environment_not_found",
        )
    if tenant is not None:
        pin = state.pins.get((workspace, tenant, prompt, environment))
        if pin is not None and at < pin.expires_at:
            return Resolution(
                view.versions[pin.version], "pinned", pin.event_id, None, pin.expires_at
            )
    deployment = state.deployments.get((workspace, prompt, environment))
    if deployment is None or deployment.serving is None:
        raise NotFound(
            f"nothing is deployed for prompt {prompt!r} in {environment!r}; "
            "promote a version first",
            field="environment",
            code="not_deployed",
        )
    rollout = deployment.rollout
    if rollout is not None:
        key = tenant if rollout.key_by == "tenant" else routing_key
        place = bucket(rollout.rollout_id, key) if key is not None else None
        arm = "candidate" if place is not None and place < rollout.share else "baseline"
        number = rollout.candidate if arm == "candidate" else rollout.baseline
        decision = RolloutDecision(
            rollout.rollout_id,
            arm,
            place,
            rollout.share,
            rollout.key_by,
            rollout.baseline,
            rollout.candidate,
        )
        return Resolution(view.versions[number], "rollout", rollout.event_id, decision)
    assert deployment.event_id is not None
    return Resolution(view.versions[deployment.serving], "promoted", deployment.event_id)
