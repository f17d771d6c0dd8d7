"""The event feed: the raw log of the caller's workspace, oldest first, paged by position."""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections import OrderedDict
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from eventsourcing.utils import get_topic
from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from promptrecord.api.deps import Caller, ServicesDep, Viewer
from promptrecord.api.problems import problem_responses
from promptrecord.api.services import Services
from promptrecord.domain.base import ChainedAggregate, event_data, event_id, workspace_named_by
from promptrecord.domain.errors import Forbidden, InvalidInput

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/events", tags=["events"], responses=problem_responses(401, 403, 422))

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Positions one request reads at most, so a workspace with few events in a busy log costs
# a bounded query per page; the client continues from `next_after`.
SCAN_WINDOW = 10_000
BATCH = 1000
# Aggregates whose workspace was looked up in the log (the live state knows most of them).
MEMBERSHIP_CACHE = 100_000

_EXAMPLE: dict[str, Any] = {
    "position": 42,
    "id": "6f1c1d2e-8a4b-5c3d-9e2f-0a1b2c3d4e5f",
    "type": "Prompt.VersionCommitted",
    "aggregate_id": "0d6f6a8e-3f9c-5b1e-8c2d-7e4f5a6b7c8d",
    "aggregate_version": 3,
    "timestamp": "2026-03-14T09:00:00+00:00",
    "actor": {"key_id": "3f2a9c0d1e4b5a69", "key_name": "ci", "on_behalf_of": "jane"},
    "data": {"number": 2, "message": "shorter greeting", "content_hash": "sha256:…"},
    "prev_hash": "9b1c…",
}


class EventOut(BaseModel):
    """One stored event as it was written."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    position: int = Field(description="Place in the log; pass it as `after` to read on from it")
    id: str = Field(description="Stable event id (uuid5 of aggregate id and version)")
    type: str = Field(examples=["Prompt.VersionCommitted"])
    aggregate_id: UUID
    aggregate_version: int
    timestamp: datetime
    actor: dict[str, Any] | None = Field(description="API key id and name, and on_behalf_of")
    data: dict[str, Any] = Field(description="The event's own fields (secrets left out)")
    prev_hash: str = Field(description="Digest of the aggregate's previous event; '' for its first")


class EventPage(BaseModel):
    """A page of the feed. Read on with `after=next_after`; poll again when `has_more` is false."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_EXAMPLE], "next_after": 42, "has_more": True}]}
    )

    items: list[EventOut]
    next_after: int = Field(description="The position this page read up to")
    has_more: bool = Field(description="False when the page reached the end of the log")


@functools.cache
def event_types() -> dict[str, str]:
    """Every event type name (`Prompt.VersionCommitted`) and its stored topic."""
    found: dict[str, str] = {}
    pending = [ChainedAggregate.Event]
    while pending:
        cls = pending.pop()
        children = cls.__subclasses__()
        pending.extend(children)
        if not children:  # the bases (`Prompt.Event`, `ChainedAggregate.Created`) never occur
            found[cls.__qualname__] = get_topic(cls)
    return dict(sorted(found.items()))


class _Membership:
    """Which workspace each aggregate belongs to, for one API process.

    The live state already maps every workspace, prompt, deployment and pin to its key
    (the workspace first); anything else is looked up once from its Created event.
    """

    def __init__(self) -> None:
        # Holds no reference to the services: they key the WeakKeyDictionary it lives in.
        self._found: OrderedDict[UUID, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def workspace_of(self, services: Services, aggregate_id: UUID, created: Any) -> str | None:
        subject = services.live.state._subjects.get(aggregate_id)
        if subject:
            return subject[0]
        with self._lock:
            if aggregate_id in self._found:
                self._found.move_to_end(aggregate_id)
                return self._found[aggregate_id]
        if created is None:
            rows = services.app.recorder.select_events(aggregate_id, lte=1)
            created = _decode(services, rows[0]) if rows else None
        workspace = workspace_named_by(created)
        with self._lock:
            self._found[aggregate_id] = workspace
            if len(self._found) > MEMBERSHIP_CACHE:
                self._found.popitem(last=False)
        return workspace


_memberships: weakref.WeakKeyDictionary[Services, _Membership] = weakref.WeakKeyDictionary()
_memberships_lock = threading.Lock()


def _membership(services: Services) -> _Membership:
    with _memberships_lock:
        found = _memberships.get(services)
        if found is None:
            found = _memberships[services] = _Membership()
        return found


def _topics(types: str | None) -> list[str]:
    if types is None:
        return []
    names = [name.strip() for name in types.split(",") if name.strip()]
    known = event_types()
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        listed = ", ".join(repr(name) for name in unknown) or "none given"
        raise InvalidInput(
            f"unknown event types: {listed}; give a comma-separated list of "
            f"{', '.join(known)}, or leave types out for all",
            field="query.types",
            code="unknown_event_type",
            known_types=list(known),
        )
    return [known[name] for name in names]


def _refuse_limited(caller: Caller) -> None:
    # The feed is the whole workspace's log: showing it to a key limited to some
    # environments or prompts would show it everything else too.
    if caller.key.environments is not None or caller.key.prompt_patterns is not None:
        raise Forbidden(
            f"key {caller.key.name!r} is limited to some environments or prompts, and the "
            "event feed shows the whole workspace's log — use a key without limits",
            code="limited_key",
        )


def _item(position: int, event: Any) -> EventOut | None:
    if event is None:
        return None
    data = event_data(event)
    try:
        return EventOut(
            position=position,
            id=event_id(event),
            type=type(event).__qualname__,
            aggregate_id=event.originator_id,
            aggregate_version=event.originator_version,
            timestamp=event.timestamp,
            actor=getattr(event, "actor", None),
            data=jsonable_encoder(data),
            prev_hash=getattr(event, "prev_hash", ""),
        )
    except Exception:  # decodable, but its fields were changed out of shape
        _left_out(position)
        return None


def read_feed(
    services: Services, workspace: str, after: int, limit: int, topics: list[str]
) -> EventPage:
    """Up to `limit` events of `workspace` after position `after`, reading at most
    SCAN_WINDOW positions of the log."""
    app = services.app
    membership = _membership(services)
    high = app.recorder.max_notification_id() or 0
    end = min(high, after + SCAN_WINDOW)
    items: list[EventOut] = []
    position = after
    while position < end and len(items) < limit:
        stop = min(position + BATCH, end)
        rows = app.recorder.select_notifications(
            start=position,
            stop=stop,
            limit=stop - position,
            topics=topics,
            inclusive_of_start=False,
        )
        position = stop
        for row in rows:
            event = None
            if row.originator_version == 1:  # a Created event names its workspace itself
                event = _decode(services, row)
            aggregate_id = row.originator_id
            if not isinstance(aggregate_id, UUID):
                aggregate_id = UUID(aggregate_id)
            if membership.workspace_of(services, aggregate_id, event) != workspace:
                continue
            item = _item(row.id, event or _decode(services, row))
            if item is not None:
                items.append(item)
            if len(items) == limit:
                position = row.id
                break
    return EventPage(items=items, next_after=position, has_more=position < high)


def _decode(services: Services, row: Any) -> Any:
    try:
        return services.app.mapper.to_domain_event(row)
    except Exception:
        _left_out(getattr(row, "id", None))
        return None


def _left_out(position: int | None) -> None:
    # One bad row must not stop every reader of the feed; `promptrecord verify` names it.
    log.exception(
        "the event at position %s cannot be read and is left out of the feed; "
        "run promptrecord verify to see what changed",
        position,
    )


@router.get(
    "",
    summary="Read the event log of your workspace",
    description=(
        "Every event of the caller's workspace, oldest first: commits, promotions, rollout "
        "steps, rollbacks, pins and key changes, as stored. Start with `after=0` and continue "
        f"with `after=next_after`. One request reads at most {SCAN_WINDOW:,} positions of the "
        "log, so a page may hold fewer than `limit` events while `has_more` is true. "
        "Keys limited to environments or prompts cannot read the feed."
    ),
)
def list_events(
    services: ServicesDep,
    caller: Viewer,
    after: Annotated[
        int,
        Query(ge=0, le=2**62, description="Read events after this position (0: from the start)"),
    ] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Events per page (1..{MAX_LIMIT})")
    ] = DEFAULT_LIMIT,
    types: Annotated[
        str | None,
        Query(
            max_length=2000,
            description="Comma-separated event types, e.g. "
            "Prompt.VersionCommitted,Deployment.Promoted",
        ),
    ] = None,
) -> EventPage:
    _refuse_limited(caller)
    return read_feed(services, caller.workspace, after, limit, _topics(types))
