"""The view of webhook endpoints: what `GET /v1/webhooks` lists. Secrets never enter it."""

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
    Table,
    View,
    cols,
    require,
    without_nul,
)

WEBHOOK_ENDPOINTS = Table(
    "webhook_endpoints",
    (
        *cols("aggregate_id workspace endpoint_id url", TEXT),
        Column("event_types", JSON, False),
        Column("description", TEXT),
        *cols("enabled removed", BOOL),
        Column("disabled_reason", TEXT),
        Column("created_by", JSON, False),
        *cols("created_at updated_at", TIME),
        Column("secret_rotated_at", TIME),
        Column("revision", INT, False),  # the aggregate's version: its ETag
    ),
    # Keyed by aggregate: later events name no endpoint id, only their aggregate.
    key=("aggregate_id",),
    unique=(("workspace", "endpoint_id"),),
)


class WebhookEndpointsView(View):
    """One row per endpoint, removed ones kept (flagged) so a rebuild is a plain refold."""

    name = "webhook_endpoints"
    tables = (WEBHOOK_ENDPOINTS,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        e, at = logged.event, logged.timestamp
        if logged.type == "WebhookEndpoint.Registered":
            ctx.put(
                WEBHOOK_ENDPOINTS,
                {
                    "aggregate_id": logged.aggregate_id,
                    "workspace": e.workspace,
                    "endpoint_id": e.endpoint_id,
                    "url": without_nul(e.url),
                    "event_types": list(e.event_types),
                    "description": without_nul(e.description),
                    "enabled": True,
                    "removed": False,
                    "disabled_reason": None,
                    "created_by": without_nul(dict(e.actor)),
                    "created_at": at,
                    "updated_at": at,
                    "secret_rotated_at": None,
                    "revision": e.originator_version,
                },
            )
            return
        if not logged.type.startswith("WebhookEndpoint."):
            return
        row = require(
            ctx.get(WEBHOOK_ENDPOINTS, (logged.aggregate_id,)),
            "webhook endpoint %s",
            logged.aggregate_id,
        )
        change: dict[str, object] = {"updated_at": at, "revision": e.originator_version}
        match logged.type:
            case "WebhookEndpoint.Updated":
                change.update(
                    url=without_nul(e.url),
                    event_types=list(e.event_types),
                    description=without_nul(e.description),
                )
            case "WebhookEndpoint.SecretRotated":
                change["secret_rotated_at"] = at
            case "WebhookEndpoint.Disabled":
                change.update(enabled=False, disabled_reason=without_nul(e.reason))
            case "WebhookEndpoint.Enabled":
                change.update(enabled=True, disabled_reason=None)
            case "WebhookEndpoint.Removed":
                change.update(removed=True, enabled=False)
        ctx.put(WEBHOOK_ENDPOINTS, {**row, **change})
