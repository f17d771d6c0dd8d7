"""The live state as the views hold it: where an API process starts instead of replaying
the whole log. It then follows the log from the views' position as usual."""

from __future__ import annotations

from uuid import UUID

from promptrecord.domain.resolution import (
    DeploymentView,
    KeyView,
    PinView,
    PromptView,
    ResolutionState,
    RolloutView,
    VersionView,
    WorkspaceView,
)
from promptrecord.projections.folding import SUBJECTS
from promptrecord.projections.folding_admin import API_KEYS, WORKSPACES
from promptrecord.projections.folding_state import CATALOG, DEPLOYMENTS, PINS, VERSIONS
from promptrecord.projections.views import ViewStore

_SUBJECT_PARTS = {
    "workspace": ("workspace",),
    "prompt": ("workspace", "prompt"),
    "deployment": ("workspace", "prompt", "environment"),
    "pin": ("workspace", "tenant", "prompt", "environment"),
}


def seed_state(store: ViewStore) -> ResolutionState | None:
    """The state the views hold at their position, read in one consistent snapshot; None
    when a view it needs is outdated (an older release's table) and must be rebuilt first."""
    needed = {"catalog", "versions", "deployments", "pins", "workspaces", "api_keys"}
    if needed & set(store.outdated):
        return None
    with store.snapshot() as snapshot:
        state = ResolutionState(position=snapshot.position())
        for row in snapshot.rows(SUBJECTS):
            parts = _SUBJECT_PARTS.get(row["kind"])
            if parts is None:
                continue  # datasets, eval runs, gate records: nothing `resolve` reads
            state._subjects[UUID(row["aggregate_id"])] = tuple(row[name] for name in parts)
        for row in snapshot.rows(WORKSPACES):
            state.workspaces[row["slug"]] = WorkspaceView(row["slug"], row["environments"])
        for row in snapshot.rows(API_KEYS):
            state.keys[row["key_id"]] = KeyView(
                row["key_id"],
                row["workspace"],
                row["name"],
                row["role"],
                row["secret_hash"],
                row["environments"],
                row["prompt_patterns"],
                row["revoked"],
            )
        for row in snapshot.rows(CATALOG):
            key = (row["workspace"], row["prompt"])
            state.prompts[key] = PromptView(*key, archived=row["archived"])
        for row in snapshot.rows(VERSIONS):
            versions = state.prompts[(row["workspace"], row["prompt"])].versions
            versions[row["number"]] = VersionView(
                row["number"],
                row["content"],
                row["content_hash"],
                row["variables"],
                row["event_id"],
            )
        for row in snapshot.rows(DEPLOYMENTS):
            split, rollout = row["rollout"], None
            if split is not None:  # while a rollout runs, the cause is its last change
                rollout = RolloutView(**split, event_id=row["cause_event_id"])
            state.deployments[(row["workspace"], row["prompt"], row["environment"])] = (
                DeploymentView(row["serving_version"], rollout, row["serving_event_id"])
            )
        for row in snapshot.rows(PINS):
            pin = (row["workspace"], row["tenant"], row["prompt"], row["environment"])
            state.pins[pin] = PinView(row["version"], row["expires_at"], row["event_id"])
    return state
