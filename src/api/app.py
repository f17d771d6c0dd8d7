"""The FastAPI application: routers, problem handlers, idempotency, OpenAPI metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from promptrecord import __version__
from promptrecord.api.idempotency import IdempotencyMiddleware, IdempotencyStore
from promptrecord.api.openapi import install_openapi
from promptrecord.api.problems import InternalErrorMiddleware, install_problem_handlers
from promptrecord.api.routes import (
    audit,
    datasets,
    deployments,
    evals,
    events,
    executions,
    health,
    keys,
    metrics,
    monitoring,
    pins,
    promotion_requests,
    prompts,
    resolve,
    versions,
    webhook_deliveries,
    webhooks,
    workspace,
)
from promptrecord.api.services import Services
from promptrecord.settings import Settings

DESCRIPTION = """\
promptrecord is the system of record for LLM prompts. Every commit, promotion, rollout
step, rollback and tenant pin is an immutable event; `resolve` answers from a live
in-memory state which version a tenant gets, and why.

**Auth**: `Authorization: Bearer pr_<id>_<secret>`. A key belongs to one workspace and
every route acts on that workspace only. Roles: viewer < runtime < editor < deployer <
admin; a key may be limited to environments and prompt-name patterns.

**Commands** return the log `position` they wrote and the `revision` of what they
changed (also the `ETag`). Send `If-Match: "<revision>"` to refuse the command when
someone changed it since you read it (409 `stale_revision`), and `Idempotency-Key` to
make a retry safe. Read your own write elsewhere with `resolve?after=<position>`.

**Errors** are RFC 9457 `application/problem+json` with a stable `code` and, where one
input is at fault, its `field`.
"""

TAGS = [
    {"name": "prompts", "description": "Named, versioned templates; archive; diff"},
    {"name": "versions", "description": "Immutable commits of a prompt; content rollback"},
    {"name": "deployments", "description": "Promote, roll out, roll back per environment"},
    {"name": "promotion requests", "description": "Approvals where a policy wants them"},
    {"name": "pins", "description": "Hold a tenant on a version until an expiry"},
    {"name": "resolution", "description": "What a tenant gets now; render with variables"},
    {"name": "keys", "description": "API keys: issue, list, revoke"},
    {"name": "workspace", "description": "Environments and their deployment policies"},
    {"name": "datasets", "description": "Append-only example sets, versioned per append"},
    {"name": "evals", "description": "Eval runs of a candidate against a baseline; the gate"},
    {"name": "webhooks", "description": "Signed notifications of events; deliveries and retries"},
    {"name": "executions", "description": "Production calls and feedback, as your app logs them"},
    {"name": "metrics", "description": "Per-version rollups: latency, errors, cost, score"},
    {"name": "monitoring", "description": "Online judging and drift checks of serving versions"},
    {"name": "audit", "description": "Which version a tenant got at a time, and why"},
    {"name": "events", "description": "The raw event log of your workspace, paged"},
    {"name": "health", "description": "Liveness and readiness probes"},
]

# resolve first: routes are matched in order, and it is the hot path.
ROUTERS = (
    resolve.router,
    health.router,
    workspace.router,
    keys.router,
    prompts.router,
    versions.router,
    deployments.router,
    promotion_requests.router,
    pins.router,
    datasets.router,
    evals.router,
    # before webhooks: its `/v1/webhooks/{endpoint_id}` would take `/v1/webhooks/deliveries`
    webhook_deliveries.router,
    webhooks.router,
    executions.router,
    metrics.router,
    monitoring.router,
    audit.router,
    events.router,
)


def _services(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The app over `services`, or over services it opens (and closes) from `settings`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = None
        if services is None:
            opened = await anyio.to_thread.run_sync(Services.open, settings or Settings())
            app.state.services = opened
        try:
            yield
        finally:
            if opened is not None:
                await anyio.to_thread.run_sync(opened.close)

    app = FastAPI(
        title="promptrecord",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    if services is not None:
        app.state.services = services
    install_problem_handlers(app)

    def idempotency_store() -> IdempotencyStore:
        return _services(app).idempotency

    app.add_middleware(IdempotencyMiddleware, store=idempotency_store)
    app.add_middleware(InternalErrorMiddleware)  # outermost of ours: sees what idempotency raises
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app)
    return app
