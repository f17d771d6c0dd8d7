"""The aggregate base every promptrecord aggregate shares: actors, uuid5 ids, a hash chain."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

GENESIS_HASH = ""


def business_id(kind: str, *keys: str) -> UUID:
    """The aggregate id for a business key, so the same command twice finds the same aggregate."""
    return uuid5(NAMESPACE_URL, "promptrecord:" + kind + ":" + "\x1f".join(keys))


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def event_digest(event: Any) -> str:
    """SHA-256 over an event's canonical JSON: its type name and every attribute.

    The next event of the same aggregate stores this as `prev_hash`, so editing,
    deleting or reordering a stored event breaks the chain.
    """
    payload = {"type": type(event).__qualname__, **_canonical(dict(vars(event)))}
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True)
class Actor:
    """Who issued a command: the API key, and optionally the person a CI job acts for."""

    key_id: str
    key_name: str
    on_behalf_of: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "key_name": self.key_name, "on_behalf_of": self.on_behalf_of}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Actor:
        return cls(data["key_id"], data["key_name"], data.get("on_behalf_of"))


SYSTEM = Actor(key_id="system", key_name="promptrecord")


# Attributes every event carries outside its own data: where it belongs, when, who, its chain.
EVENT_ENVELOPE = frozenset(
    {"originator_id", "originator_version", "timestamp", "prev_hash", "actor"}
)


def is_data_field(name: str) -> bool:
    """Whether an event attribute is part of the data readers see (`/v1/events`, webhook
    bodies): not the envelope, and nothing secret."""
    return name not in EVENT_ENVELOPE and "secret" not in name


def event_data(event: Any) -> dict[str, Any]:
    """An event's own fields, as readers of the log see them."""
    return {name: value for name, value in vars(event).items() if is_data_field(name)}


def workspace_named_by(created: Any) -> str | None:
    """The workspace a version-1 event names: `Workspace.Created` its slug, every other
    aggregate's first event its `workspace` field."""
    if created is None or getattr(created, "originator_version", None) != 1:
        return None
    if type(created).__qualname__ == "Workspace.Created":
        slug = getattr(created, "slug", None)
        return slug if isinstance(slug, str) else None
    workspace = getattr(created, "workspace", None)
    return workspace if isinstance(workspace, str) else None


class ChainedAggregate(Aggregate):
    """An aggregate whose events each carry the digest of the event before them."""

    class Event(Aggregate.Event):
        prev_hash: str

        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            aggregate.chain_hash = event_digest(self)

    class Created(Event, Aggregate.Created):
        pass

    chain_hash: str = GENESIS_HASH

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prev_hash", self.chain_hash)
        super().trigger_event(event_class, **kwargs)

    @classmethod
    def _create(cls, event_class: Any, *, id: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("prev_hash", GENESIS_HASH)
        return super()._create(event_class, id=id, **kwargs)


def event_id(event: Any) -> str:
    """A stable id for a stored event: uuid5 of its aggregate id and version."""
    return event_id_at(event.originator_id, event.originator_version)


def event_id_at(aggregate_id: UUID, version: int) -> str:
    """The id `event_id` gives the event of `aggregate_id` at `version`."""
    return str(uuid5(aggregate_id, str(version)))
