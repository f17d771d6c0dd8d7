"""The views behind the workspace's own reads: workspaces, API keys and promotion requests.
With the catalog, versions, deployments and pins they hold everything the API's list and
read endpoints show and everything the live state starts from."""

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
)

WORKSPACES = Table(
    "workspaces",
    (
        *cols("slug name", TEXT),
        *cols("environments policies", JSON),
        Column("revision", INT, False),  # the Workspace aggregate's version: its ETag
        *cols("created_at updated_at", TIME),
    ),
    key=("slug",),
    cached=True,
)


class WorkspacesView(View):
    """One row per workspace: name, environments in promotion order, policies, revision."""

    name = "workspaces"
    tables = (WORKSPACES,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        if not logged.type.startswith("Workspace."):
            return
        e, at = logged.event, logged.timestamp
        if logged.type == "Workspace.Created":
            ctx.put(
                WORKSPACES,
                {
                    "slug": e.slug,
                    "name": e.name,
                    "environments": list(e.environments),
                    "policies": {},
                    "revision": e.originator_version,
                    "created_at": at,
                    "updated_at": at,
                },
            )
            return
        slug = logged.subject.workspace
        row = require(ctx.get(WORKSPACES, (slug,)), f"workspace {slug!r}")
        change: Row = {"revision": e.originator_version, "updated_at": at}
        if logged.type == "Workspace.EnvironmentsSet":
            change["environments"] = list(e.environments)
        elif logged.type == "Workspace.PolicySet":
            change["policies"] = {**row["policies"], e.environment: dict(e.policy)}
        ctx.put(WORKSPACES, {**row, **change})


API_KEYS = Table(
    "api_keys",
    (
        *cols("workspace key_id", TEXT),
        Column("number", INT, False),  # order of issue within the workspace
        *cols("name role secret_hash", TEXT),
        *cols("environments prompt_patterns", JSON, True),
        Column("revoked", BOOL, False),
        Column("issued_at", TIME, False),
        Column("revoked_at", TIME),
    ),
    key=("workspace", "key_id"),
    indexes=(("workspace", "number"),),
)


class ApiKeysView(View):
    """Every API key with its limits and whether it is revoked; the secret only as its hash."""

    name = "api_keys"
    tables = (API_KEYS,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        e, workspace = logged.event, logged.subject.workspace
        if logged.type == "Workspace.ApiKeyIssued":
            ctx.put(
                API_KEYS,
                {
                    "workspace": workspace,
                    "key_id": e.key_id,
                    "number": e.originator_version,
                    "name": e.name,
                    "role": e.role,
                    "secret_hash": e.secret_hash,
                    "environments": e.environments,
                    "prompt_patterns": e.prompt_patterns,
                    "revoked": False,
                    "issued_at": logged.timestamp,
                    "revoked_at": None,
                },
            )
        elif logged.type == "Workspace.ApiKeyRevoked":
            key = (workspace, e.key_id)
            row = require(ctx.get(API_KEYS, key), f"API key {e.key_id!r}")
            ctx.put(API_KEYS, {**row, "revoked": True, "revoked_at": logged.timestamp})


PROMOTION_REQUESTS = Table(
    "promotion_requests",
    (
        *cols("workspace prompt environment request_id", TEXT),
        Column("number", INT, False),  # order of request within the deployment
        Column("version", INT, False),
        Column("mode", TEXT, False),
        Column("rollout", JSON),
        Column("required_approvals", INT, False),
        Column("reason", TEXT, False),
        *cols("requester approvals", JSON),
        Column("status", TEXT, False),
        Column("requested_at", TIME, False),
        Column("gate", JSON),  # the eval verdict a `require_gate` policy found
    ),
    key=("workspace", "prompt", "environment", "request_id"),
    indexes=(("workspace", "prompt", "environment", "number"),),
)


class PromotionRequestsView(View):
    """Every promotion request with its approvals and status (pending, executed, rejected)."""

    name = "promotion_requests"
    tables = (PROMOTION_REQUESTS,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        e, s = logged.event, logged.subject
        if logged.type == "Deployment.PromotionRequested":
            ctx.put(
                PROMOTION_REQUESTS,
                {
                    "workspace": s.workspace,
                    "prompt": s.prompt,
                    "environment": s.environment,
                    "request_id": e.request_id,
                    "number": e.originator_version,
                    "version": e.version,
                    "mode": e.mode,
                    "rollout": e.rollout,
                    "required_approvals": e.required_approvals,
                    "reason": e.reason,
                    "requester": dict(e.actor),
                    "approvals": [],
                    "status": "pending",
                    "requested_at": logged.timestamp,
                    # Events stored before gates existed lack the attribute.
                    "gate": getattr(e, "gate", None),
                },
            )
            return
        change: Row
        match logged.type:
            case "Deployment.PromotionApproved":
                change = {}  # approvals are appended below, from the row
            case "Deployment.PromotionRejected":
                change = {"status": "rejected"}
            case "Deployment.Promoted" | "Deployment.RolloutStarted" if e.request_id:
                change = {"status": "executed"}
            case _:
                return
        key = (s.workspace, s.prompt, s.environment, e.request_id)
        row = require(ctx.get(PROMOTION_REQUESTS, key), f"promotion request {e.request_id!r}")
        if logged.type == "Deployment.PromotionApproved":
            change = {"approvals": [*row["approvals"], dict(e.actor)]}
        ctx.put(PROMOTION_REQUESTS, {**row, **change})


ADMIN_VIEWS = (WorkspacesView, ApiKeysView, PromotionRequestsView)
