"""The views of what is now: catalog, versions, current deployments and current pins."""

from __future__ import annotations

from promptrecord.projections.folding import (
    BOOL,
    INT,
    JSON,
    TEXT,
    TIME,
    Column,
    FoldContext,
    LoggedEvent,
    Row,
    Table,
    View,
    cols,
    require,
    rollout_of,
)

CATALOG = Table(
    "catalog",
    (
        *cols("workspace prompt title description", TEXT),
        Column("archived", BOOL, False),
        Column("head_version", INT),
        *cols("created_at updated_at", TIME),
        Column("revision", INT, False),  # the Prompt aggregate's version: its ETag
    ),
    key=("workspace", "prompt"),
    cached=True,
)


class CatalogView(View):
    """One row per prompt: title, archived flag, head version."""

    name = "catalog"
    tables = (CATALOG,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        e, s, at = logged.event, logged.subject, logged.timestamp
        if logged.type == "Prompt.Created":
            ctx.put(
                CATALOG,
                {
                    "workspace": e.workspace,
                    "prompt": e.name,
                    "title": e.title,
                    "description": e.description,
                    "archived": False,
                    "head_version": None,
                    "created_at": at,
                    "updated_at": at,
                    "revision": e.originator_version,
                },
            )
            return
        change: Row
        match logged.type:
            case "Prompt.VersionCommitted":
                change = {"head_version": e.number}
            case "Prompt.Archived":
                change = {"archived": True}
            case "Prompt.Unarchived":
                change = {"archived": False}
            case _:
                return
        row = require(ctx.get(CATALOG, (s.workspace, s.prompt)), "catalog %r", s.prompt)
        ctx.put(CATALOG, {**row, **change, "updated_at": at, "revision": e.originator_version})


VERSIONS = Table(
    "versions",
    (
        *cols("workspace prompt", TEXT),
        Column("number", INT, False),
        Column("content", JSON, False),
        Column("content_hash", TEXT, False),
        *cols("variables warnings author", JSON),
        Column("message", TEXT, False),
        *cols("parent restored_from", INT, True),
        *cols("git_sha git_path", TEXT, True),
        Column("committed_at", TIME, False),
        Column("event_id", TEXT, False),
        Column("position", INT, False),
    ),
    key=("workspace", "prompt", "number"),
)


class VersionsView(View):
    """Every committed version with its content, as the Prompt aggregate holds it."""

    name = "versions"
    tables = (VERSIONS,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        if logged.type != "Prompt.VersionCommitted":
            return
        e, s = logged.event, logged.subject
        ctx.put(
            VERSIONS,
            {
                "workspace": s.workspace,
                "prompt": s.prompt,
                "number": e.number,
                "content": e.content,
                "content_hash": e.content_hash,
                "variables": list(e.variables),
                "warnings": list(e.warnings),
                "author": dict(e.actor),
                "message": e.message,
                "parent": e.parent,
                "restored_from": e.restored_from,
                "git_sha": e.git_sha,
                "git_path": e.git_path,
                "committed_at": logged.timestamp,
                "event_id": logged.event_id,
                "position": logged.position,
            },
        )


DEPLOYMENTS = Table(
    "deployments",
    (
        *cols("workspace prompt environment", TEXT),
        Column("serving_version", INT),
        Column("rollout", JSON),
        Column("cause_event_id", TEXT),
        Column("updated_at", TIME, False),
        *cols("stack ever_served", JSON),  # the versions rollback walks back; every one served
        Column("rollout_started_at", TIME),
        Column("serving_event_id", TEXT),  # the promotion, completion, abort or rollback
        Column("revision", INT, False),  # the Deployment aggregate's version: its ETag
    ),
    key=("workspace", "prompt", "environment"),
    cached=True,
)


class DeploymentsView(View):
    """Each deployment as its aggregate holds it: what it serves, the active rollout, the
    stack rollback walks back, the versions that ever served, and its revision.

    `cause_event_id` is the event `resolve` names as the cause: the rollout's last start or
    adjustment while one runs, else `serving_event_id`, the promotion, completion, abort or
    rollback. Promotion requests change only `revision` (their own view keeps them).
    """

    name = "deployments"
    tables = (DEPLOYMENTS,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        if not logged.type.startswith("Deployment."):
            return
        e, s = logged.event, logged.subject
        key = (s.workspace, s.prompt, s.environment)
        if logged.type == "Deployment.Created":
            row = dict(zip(DEPLOYMENTS.key, key, strict=True))
            ctx.put(
                DEPLOYMENTS,
                {
                    **row,
                    "serving_version": None,
                    "rollout": None,
                    "cause_event_id": None,
                    "updated_at": logged.timestamp,
                    "stack": [],
                    "ever_served": [],
                    "rollout_started_at": None,
                    "serving_event_id": None,
                    "revision": e.originator_version,
                },
            )
            return
        current = require(ctx.get(DEPLOYMENTS, key), "deployment %s", key)
        stack: list[int] = current["stack"]
        change: Row
        match logged.type:
            case "Deployment.Promoted" | "Deployment.RolloutCompleted":
                change = _serves(current, [*stack, e.version], logged.event_id)
            case "Deployment.RolledBack":
                if e.pop:
                    stack = stack[:-1]
                elif not stack or e.to_version != stack[-1]:
                    stack = [*stack, e.to_version]
                change = _serves(current, stack, logged.event_id)
            case "Deployment.RolloutAborted":
                change = {"rollout": None, "rollout_started_at": None}
                change["serving_event_id"] = logged.event_id
            case "Deployment.RolloutStarted":
                change = {"rollout": rollout_of(e), "rollout_started_at": logged.timestamp}
            case "Deployment.RolloutAdjusted":
                rollout = require(current["rollout"], "active rollout of %s", key)
                change = {"rollout": {**rollout, "share": e.share}}
            case _:  # promotion requests: only the revision moves
                ctx.put(DEPLOYMENTS, {**current, "revision": e.originator_version})
                return
        ctx.put(
            DEPLOYMENTS,
            {
                **current,
                **change,
                "cause_event_id": logged.event_id,
                "updated_at": logged.timestamp,
                "revision": e.originator_version,
            },
        )


def _serves(current: Row, stack: list[int], event_id: str) -> Row:
    """The change when the deployment serves the top of `stack` and any rollout ends."""
    ever: list[int] = current["ever_served"]
    version = stack[-1]
    return {
        "serving_version": version,
        "stack": stack,
        "ever_served": ever if version in ever else [*ever, version],
        "rollout": None,
        "rollout_started_at": None,
        "serving_event_id": event_id,
    }


PINS = Table(
    "pins",
    (
        *cols("workspace tenant prompt environment", TEXT),
        Column("version", INT, False),
        *cols("expires_at pinned_at", TIME),
        Column("event_id", TEXT, False),
    ),
    key=("workspace", "tenant", "prompt", "environment"),
)


class PinsView(View):
    """The latest pin of each tenant, prompt and environment; gone once unpinned.

    An expired pin stays until it is re-pinned (it cannot be unpinned): readers compare
    `expires_at` with the time they ask about.
    """

    name = "pins"
    tables = (PINS,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        if not logged.type.startswith("TenantPin."):
            return
        s = logged.subject
        key = (s.workspace, s.tenant, s.prompt, s.environment)
        if logged.type == "TenantPin.Pinned":
            ctx.put(
                PINS,
                {
                    **dict(zip(PINS.key, key, strict=True)),
                    "version": logged.event.version,
                    "expires_at": logged.event.expires_at,
                    "pinned_at": logged.timestamp,
                    "event_id": logged.event_id,
                },
            )
        elif logged.type == "TenantPin.Unpinned":
            ctx.delete(PINS, key)
