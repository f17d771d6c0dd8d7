"""Webhook deliveries: list them per endpoint or per event, read one with its attempts, and
send one again."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from promptrecord.api.deps import Admin, Caller, ServicesDep, Viewer
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import problem_responses
from promptrecord.api.services import Services
from promptrecord.domain.errors import Forbidden, InvalidInput, NotFound
from promptrecord.workers.webhook_store import Attempt, Delivery

router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], responses=problem_responses(401, 403, 404, 422)
)

DELIVERY_ID = re.compile(r"^msg_[0-9a-f]{32}$")
EVENT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
Status = Literal["pending", "delivered", "failed", "cancelled"]
DeliveryId = Annotated[
    str, Path(max_length=64, description="The delivery id: the `webhook-id` header it is sent with")
]
EndpointId = Annotated[str, Path(max_length=64, description="The endpoint id (we_<16 hex>)")]


class DeliveryOut(BaseModel):
    """One event for one endpoint, and where its attempts stand."""

    id: str = Field(description="Sent as `webhook-id` on every attempt", examples=["msg_9f2c…"])
    endpoint_id: str
    event_id: str = Field(description="The event's id, as in `/v1/events` and the body's `id`")
    event_type: str = Field(examples=["Deployment.Promoted"])
    position: int = Field(description="The event's place in the log")
    status: Status = Field(
        description="pending (an attempt is due or scheduled), delivered (a 2xx), failed "
        "(410, or every retry refused), cancelled (the endpoint was disabled or deleted first)"
    )
    series: int = Field(description="1, then one more per resend")
    attempts_in_series: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None


class AttemptOut(BaseModel):
    """One POST, or one refusal to post (then `status_code` is null and `error` says why)."""

    number: int
    series: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


class DeliveryDetail(DeliveryOut):
    body: dict[str, Any] = Field(description="The JSON body posted, fixed when created")
    attempts: list[AttemptOut]


class DeliveryList(BaseModel):
    items: list[DeliveryOut]


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _out(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.delivery_id,
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "position": delivery.position,
        "status": delivery.status,
        "series": delivery.series,
        "attempts_in_series": delivery.attempts,
        "created_at": _time(delivery.created_at),
        "next_attempt_at": _time(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
    }


def _attempt(attempt: Attempt) -> AttemptOut:
    return AttemptOut(
        number=attempt.number,
        series=attempt.series,
        attempted_at=datetime.fromtimestamp(attempt.attempted_at, UTC),
        status_code=attempt.status_code,
        latency_ms=round(attempt.latency_ms, 3),
        error=attempt.error,
    )


def _refuse_limited(caller: Caller) -> None:
    # A delivery's body is an event of the whole workspace, as the event feed shows it.
    if caller.key.environments is not None or caller.key.prompt_patterns is not None:
        raise Forbidden(
            f"key {caller.key.name!r} is limited to some environments or prompts, and webhook "
            "deliveries carry events of the whole workspace — use a key without limits",
            code="limited_key",
        )


def _delivery(services: Services, caller: Caller, delivery_id: str) -> Delivery:
    found = (
        services.webhook_deliveries.delivery(delivery_id)
        if DELIVERY_ID.match(delivery_id)
        else None
    )
    if found is None or found.workspace != caller.workspace:
        raise NotFound(
            f"webhook delivery {delivery_id!r} does not exist in this workspace (ids look like "
            "msg_<32 hex>; list them with GET /v1/webhooks/{endpoint_id}/deliveries)",
            field="delivery_id",
            code="webhook_delivery_not_found",
        )
    return found


@router.get(
    "/deliveries",
    summary="List the deliveries of one event",
    description="Every delivery made for the event, one per endpoint that wanted it.",
)
def deliveries_of_event(
    services: ServicesDep,
    caller: Viewer,
    event_id: Annotated[
        str, Query(max_length=64, description="An event id, as `/v1/events` gives it")
    ],
) -> DeliveryList:
    _refuse_limited(caller)
    if not EVENT_ID.match(event_id):
        raise InvalidInput(
            f"event_id {event_id!r} is not an event id; give one as `/v1/events` shows it "
            "(a UUID such as 6f1c1d2e-8a4b-5c3d-9e2f-0a1b2c3d4e5f)",
            field="query.event_id",
        )
    found = services.webhook_deliveries.for_event(caller.workspace, event_id)
    return DeliveryList(items=[DeliveryOut(**_out(d)) for d in found])


@router.get(
    "/deliveries/{delivery_id}",
    summary="Read a delivery with its attempts",
    description="The body as posted, its status, and every attempt (status, latency, error).",
)
def read_delivery(services: ServicesDep, caller: Viewer, delivery_id: DeliveryId) -> DeliveryDetail:
    _refuse_limited(caller)
    delivery = _delivery(services, caller, delivery_id)
    attempts = services.webhook_deliveries.attempts(delivery.delivery_id)
    return DeliveryDetail(
        **_out(delivery),
        body=json.loads(delivery.body),
        attempts=[_attempt(a) for a in attempts],
    )


@router.post(
    "/deliveries/{delivery_id}/resend",
    status_code=202,
    summary="Send a delivery again",
    description=(
        "Starts a new series of attempts at once, with the same body and the same "
        "`webhook-id`, whatever the delivery's status: a receiver that deduplicates by "
        "`webhook-id` sees it once. Retries follow the usual schedule. Admins only."
    ),
)
def resend_delivery(services: ServicesDep, caller: Admin, delivery_id: DeliveryId) -> DeliveryOut:
    delivery = _delivery(services, caller, delivery_id)
    endpoint = services.app.webhook_endpoint(caller.workspace, delivery.endpoint_id)
    endpoint.require_present()
    from promptrecord.workers.webhook_runtime import resend

    with _queue(services) as queue:
        again = resend(services.webhook_deliveries, queue, delivery.delivery_id)
    assert again is not None
    return DeliveryOut(**_out(again))


@router.get(
    "/{endpoint_id}/deliveries",
    summary="List an endpoint's deliveries",
    description="Newest event first; filter by status. Page with `cursor=next_cursor`.",
)
def deliveries_of_endpoint(
    services: ServicesDep,
    caller: Viewer,
    endpoint_id: EndpointId,
    paging: Paging,
    status: Annotated[Status | None, Query(description="Only deliveries in this status")] = None,
) -> Page[DeliveryOut]:
    _refuse_limited(caller)
    services.app.webhook_endpoint(caller.workspace, endpoint_id)  # 404 when not there
    before = None if paging.cursor is None else paging.after_number()
    found = services.webhook_deliveries.for_endpoint(
        caller.workspace, endpoint_id, status, before, paging.limit + 1
    )
    chosen, cursor = paging.page(found, key=lambda d: d.position)
    return Page[DeliveryOut](items=[DeliveryOut(**_out(d)) for d in chosen], next_cursor=cursor)


class _queue:
    """The process's webhook queue: the embedded workers', else one on the configured
    broker for this request (its leases closed after)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._leases: Any = None

    def __enter__(self) -> Any:
        workers = self.services.workers
        if workers is not None:
            return workers.webhook_queue
        from promptrecord.workers.broker import configure_broker
        from promptrecord.workers.runtime import database_key, open_leases
        from promptrecord.workers.webhook_runtime import WebhookQueue

        settings = self.services.settings
        self._leases = open_leases(settings)
        return WebhookQueue(
            configure_broker(settings),
            self._leases,
            database_key(settings),
            settings.webhook_requeue_after,
        )

    def __exit__(self, *exc: object) -> None:
        if self._leases is not None:
            self._leases.close()
