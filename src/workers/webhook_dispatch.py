"""The webhook follower: reads the whole log and creates one delivery per event and matching
endpoint; the webhook reconciler re-enqueues deliveries that are due and that no worker has.

The follower keeps its own position (row `webhooks` of the dispatch tracking table) and its
own table of endpoints, folded from `WebhookEndpoint.*` events; both change with the page's
new deliveries in one transaction, so an endpoint registered at position p receives exactly
the events after p, and a crash re-reads a page without creating a delivery twice (a
delivery's id is uuid5 of endpoint and event). Deliveries are enqueued after the commit; a
crash between the two leaves them due, and the reconciler sends them.

Each body is fixed at creation: `{id, type, created_at, workspace, data}`, `data` being the
event's own fields as `/v1/events` shows them (no envelope, nothing named secret).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.utils import get_topic

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import event_data, event_id, workspace_named_by
from promptrecord.domain.webhooks import WebhookEndpoint, filter_matches
from promptrecord.settings import Settings
from promptrecord.workers.dispatcher import PAGE, WINDOW, Loop
from promptrecord.workers.webhook_runtime import WebhookQueue
from promptrecord.workers.webhook_store import (
    Delivery,
    EndpointRow,
    WebhookStore,
    open_webhook_store,
)

log = logging.getLogger(__name__)

# Fields every event carries outside `data` (as `/v1/events` leaves them out).
MEMBERSHIP_CACHE = 100_000
ENDPOINT_EVENTS = "WebhookEndpoint."


class WorkspaceOf:
    """Which workspace each aggregate belongs to: learnt from the first events passing by,
    else looked up once from the aggregate's first event."""

    def __init__(self, app: PromptRecord) -> None:
        self.app = app
        self._found: OrderedDict[UUID, str | None] = OrderedDict()

    def __call__(self, event: Any) -> str | None:
        aggregate_id: UUID = event.originator_id
        if aggregate_id in self._found:
            self._found.move_to_end(aggregate_id)
            return self._found[aggregate_id]
        created = event
        if event.originator_version != 1:
            rows = self.app.recorder.select_events(aggregate_id, lte=1)
            created = self.app.mapper.to_domain_event(rows[0]) if rows else None
        workspace = workspace_named_by(created)
        self._found[aggregate_id] = workspace
        if len(self._found) > MEMBERSHIP_CACHE:
            self._found.popitem(last=False)
        return workspace


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value) if isinstance(value, UUID) else float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a webhook body")


def event_body(event: Any, workspace: str) -> str:
    """The JSON body posted for `event`, fixed once: compact, keys in the event's order."""
    data = event_data(event)
    body = {
        "id": event_id(event),
        "type": type(event).__qualname__,
        "created_at": event.timestamp.isoformat(),
        "workspace": workspace,
        "data": data,
    }
    return json.dumps(body, default=_plain, separators=(",", ":"), ensure_ascii=False)


@functools.cache
def endpoint_topics() -> tuple[str, ...]:
    """The stored topics of every `WebhookEndpoint` event."""
    found: list[str] = []
    pending: list[type] = [WebhookEndpoint.Event]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__qualname__.startswith(ENDPOINT_EVENTS) and cls.__qualname__.count(".") == 1:
            found.append(get_topic(cls))
    return tuple(sorted(set(found)))


def delivery_id_for(workspace: str, endpoint_id: str, event: str) -> str:
    """The delivery's id, the `webhook-id` of every attempt: the same however often the
    follower reads the event."""
    return "msg_" + uuid5(WebhookEndpoint.create_id(workspace, endpoint_id), event).hex


class WebhookFollower(Loop):
    """Follows the log from its tracked position; a delivery per event per endpoint."""

    name = "promptrecord-webhook-follower"

    def __init__(
        self, app: PromptRecord, store: WebhookStore, queue: WebhookQueue, poll_interval: float
    ) -> None:
        super().__init__(poll_interval)
        self.app = app
        self.store = store
        self.queue = queue
        self.workspace_of = WorkspaceOf(app)
        self.position = store.position()
        self._endpoints: dict[tuple[str, str], EndpointRow] | None = None

    def step(self) -> bool:
        recorder = self.app.recorder
        self.position = max(self.position, self.store.position())
        last = recorder.max_notification_id() or 0
        if last <= self.position:
            return False
        stop = min(last, self.position + WINDOW)
        # Folded from the stored table each page: a failed page must not leave its changes.
        endpoints = self.store.endpoints() if self._endpoints is None else self._endpoints
        self._endpoints = None
        listening = any(row.enabled for row in endpoints.values())
        # With no endpoint to deliver to, only endpoint events matter: read those alone, up
        # to the first (events after it may be for the endpoint it registers).
        found = recorder.select_notifications(
            start=self.position,
            stop=stop,
            limit=PAGE if listening else 1,
            topics=() if listening else endpoint_topics(),
            inclusive_of_start=False,
        )
        full = len(found) == (PAGE if listening else 1)
        upto = found[-1].id if full else stop
        changed: dict[tuple[str, str], EndpointRow] = {}
        created: list[Delivery] = []
        now = time.time()
        for notification in found:
            event: Any = self.app.mapper.to_domain_event(notification)
            workspace = self.workspace_of(event)
            if workspace is None:
                continue
            type_name = type(event).__qualname__
            # Endpoints as they were before the event: one registered at position p gets
            # the events after p.
            created.extend(
                self._deliveries(endpoints, workspace, event, type_name, notification.id, now)
            )
            if type_name.startswith(ENDPOINT_EVENTS):
                self._fold(endpoints, changed, workspace, event, type_name)
        self.store.advance(upto, changed.values(), created)
        self._endpoints = endpoints
        self.position = upto
        for delivery in created:
            self.queue.enqueue(delivery.delivery_id)
        if created:
            log.info("created %d webhook deliveries up to log position %d", len(created), upto)
        return full or upto < last

    @staticmethod
    def _fold(
        endpoints: dict[tuple[str, str], EndpointRow],
        changed: dict[tuple[str, str], EndpointRow],
        workspace: str,
        event: Any,
        type_name: str,
    ) -> None:
        if type_name == "WebhookEndpoint.Registered":
            key = (workspace, event.endpoint_id)
            endpoints[key] = EndpointRow(workspace, event.endpoint_id, list(event.event_types))
        else:
            key = next(
                (k for k in endpoints if WebhookEndpoint.create_id(*k) == event.originator_id),
                ("", ""),
            )
            row = endpoints.get(key)
            if row is None:
                return
            if type_name == "WebhookEndpoint.Updated":
                row.event_types = list(event.event_types)
            elif type_name == "WebhookEndpoint.Disabled":
                row.enabled = False
            elif type_name == "WebhookEndpoint.Enabled":
                row.enabled = True
            elif type_name == "WebhookEndpoint.Removed":
                row.enabled, row.removed = False, True
        changed[key] = endpoints[key]

    @staticmethod
    def _deliveries(
        endpoints: dict[tuple[str, str], EndpointRow],
        workspace: str,
        event: Any,
        type_name: str,
        position: int,
        now: float,
    ) -> list[Delivery]:
        body: str | None = None
        made: list[Delivery] = []
        the_event = event_id(event)
        for row in endpoints.values():
            if row.workspace != workspace or not row.enabled or row.removed:
                continue
            if not filter_matches(row.event_types, type_name):
                continue
            body = body or event_body(event, workspace)
            made.append(
                Delivery(
                    delivery_id_for(workspace, row.endpoint_id, the_event),
                    workspace, row.endpoint_id, the_event, type_name, position, body,
                    status="pending", series=1, attempts=0, created_at=now,
                    next_attempt_at=now, last_status_code=None, last_error=None,
                )
            )  # fmt: skip
        return made


class WebhookReconciler(Loop):
    """Every `interval` seconds, enqueues each due pending delivery that no worker holds and
    no message waits for: retries due later than the broker holds them, and what a crash
    dropped."""

    name = "promptrecord-webhook-reconciler"

    def __init__(self, store: WebhookStore, queue: WebhookQueue, interval: float) -> None:
        super().__init__(interval)
        self.store = store
        self.queue = queue
        self.requeued = 0

    def step(self) -> bool:
        for delivery_id in self.store.due(time.time()):
            if self._stop.is_set():
                break
            if self.queue.settled(delivery_id):
                continue
            self.queue.enqueue(delivery_id)
            self.requeued += 1
            log.info("re-enqueued webhook delivery %s", delivery_id)
        return False


class WebhookDispatching:
    """The webhook follower and reconciler running in daemon threads over one store."""

    def __init__(
        self, app: PromptRecord, store: WebhookStore, queue: WebhookQueue, settings: Settings
    ) -> None:
        self.store = store
        self.on_stop: list[Callable[[], None]] = []
        self.follower = WebhookFollower(app, store, queue, settings.webhook_poll_interval)
        self.reconciler = WebhookReconciler(store, queue, settings.reconcile_interval)

    @classmethod
    def start(
        cls, app: PromptRecord, queue: WebhookQueue, settings: Settings
    ) -> WebhookDispatching:
        store = open_webhook_store(settings)
        try:
            dispatching = cls(app, store, queue, settings)
        except BaseException:
            store.close()
            raise
        dispatching.follower.start()
        dispatching.reconciler.start()
        return dispatching

    def nudge(self) -> None:
        self.follower.nudge()

    def stop(self) -> None:
        for loop in (self.follower, self.reconciler):
            loop.stop()
        for loop in (self.follower, self.reconciler):
            loop.join()
        self.store.close()
        for callback in self.on_stop:
            callback()


__all__ = [
    "WebhookDispatching",
    "WebhookFollower",
    "WebhookReconciler",
    "WorkspaceOf",
    "delivery_id_for",
    "event_body",
]
