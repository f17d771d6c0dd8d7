"""The WebhookEndpoint aggregate: a URL other systems want events posted to, and its secrets.

The signing secret is stored sealed (encrypted by `promptrecord.sealing` outside the domain),
so the log never holds a usable secret. A rotation keeps the previous secret signing until
`previous_valid_until`, so a receiver can switch secrets without dropping a delivery.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from promptrecord.domain.base import ChainedAggregate, business_id
from promptrecord.domain.errors import InvalidInput, NotFound

ENDPOINT_ID = re.compile(r"^we_[0-9a-f]{16}$")
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION = 500
MAX_EVENT_TYPES = 100
ALL_EVENTS = "*"
# `Deployment.Promoted`, or `Deployment.*` for every event of one aggregate.
EVENT_TYPE_PATTERN = re.compile(r"^[A-Z][A-Za-z0-9]*\.(\*|[A-Z][A-Za-z0-9]*)$")


def known_event_types() -> list[str]:
    """Every public event type name (`Prompt.VersionCommitted`), as `/v1/events` names them.

    The leaves of the event class tree: `Prompt.Event` or `ChainedAggregate.Created` are bases
    that never occur in the log.
    """
    found: set[str] = set()
    pending: list[type] = [ChainedAggregate.Event]
    while pending:
        cls = pending.pop()
        children: list[type] = cls.__subclasses__()
        pending.extend(children)
        if not children:
            found.add(cls.__qualname__)
    return sorted(found)


def check_endpoint_id(endpoint_id: str, field: str = "endpoint_id") -> str:
    if not isinstance(endpoint_id, str) or not ENDPOINT_ID.match(endpoint_id):
        raise NotFound(
            f"webhook endpoint {endpoint_id!r} does not exist (ids look like we_<16 hex>)",
            field=field,
            code="webhook_not_found",
        )
    return endpoint_id


def check_webhook_url(url: str) -> str:
    """The URL's shape only; whether it may be called (SSRF) is `workers.webhook_urls`."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("url is required: the https:// address to post events to", field="url")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"url is at most {MAX_URL_LENGTH} characters", field="url")
    if not url.lower().startswith(("http://", "https://")):
        raise InvalidInput(
            f"url {url!r} must be an http:// or https:// address",
            field="url",
            code="webhook_url_refused",
        )
    return url


def check_description(description: str | None) -> str | None:
    if description is None or not description.strip():
        return None
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(
            f"description is at most {MAX_DESCRIPTION} characters", field="description"
        )
    return description


def check_event_types(patterns: Iterable[str], known: Iterable[str]) -> list[str]:
    """The filter as stored: each entry `*`, `Aggregate.*` or a known event type, once each."""
    names = set(known)
    aggregates = {name.split(".", 1)[0] for name in names}
    given = list(patterns) if not isinstance(patterns, str) else [patterns]
    if not given:
        raise InvalidInput(
            "event_types needs at least one entry: an event type such as "
            "'Deployment.Promoted', a pattern such as 'Deployment.*', or '*' for all",
            field="event_types",
        )
    if len(given) > MAX_EVENT_TYPES:
        raise InvalidInput(
            f"event_types has at most {MAX_EVENT_TYPES} entries; use patterns such as "
            "'Deployment.*'",
            field="event_types",
        )
    chosen: list[str] = []
    for index, pattern in enumerate(given):
        where = f"event_types[{index}]"
        if not isinstance(pattern, str):
            raise InvalidInput(f"{where} must be a string", field=where)
        ok = pattern == ALL_EVENTS or (
            EVENT_TYPE_PATTERN.match(pattern) is not None
            and (
                pattern in names
                or (pattern.endswith(".*") and pattern.split(".", 1)[0] in aggregates)
            )
        )
        if not ok:
            raise InvalidInput(
                f"{where}: {pattern!r} is not a known event type or pattern; give one of "
                "GET /v1/webhooks/event-types, a pattern such as 'Deployment.*', or '*'",
                field=where,
                code="unknown_event_type",
            )
        if pattern not in chosen:
            chosen.append(pattern)
    return chosen


def filter_matches(event_types: Iterable[str], type_name: str) -> bool:
    """Whether an event of `type_name` passes a filter of names and patterns."""
    aggregate = type_name.split(".", 1)[0]
    return any(pattern in (ALL_EVENTS, type_name, f"{aggregate}.*") for pattern in event_types)


class WebhookEndpoint(ChainedAggregate):
    """One receiver: its URL, the events it wants, its sealed secrets, and whether it is on."""

    @staticmethod
    def create_id(workspace: str, endpoint_id: str) -> UUID:
        return business_id("webhook_endpoint", workspace, endpoint_id)

    @event("Registered")
    def __init__(
        self,
        workspace: str,
        endpoint_id: str,
        url: str,
        event_types: list[str],
        description: str | None,
        sealed_secret: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.workspace = workspace
        self.endpoint_id = endpoint_id
        self.url = url
        self.event_types = list(event_types)
        self.description = description
        self.sealed_secret = sealed_secret
        self.previous_secret: str | None = None
        self.previous_valid_until: datetime | None = None
        self.enabled = True
        self.removed = False
        self.disabled_reason: str | None = None
        self.created_by = actor
        self.created_at = timestamp
        self.updated_at = timestamp

    def subscribes_to(self, type_name: str) -> bool:
        """Whether an event of this type is to be delivered here (while enabled)."""
        return self.enabled and not self.removed and filter_matches(self.event_types, type_name)

    def signing_secrets(self, at: datetime) -> list[str]:
        """The sealed secrets valid at `at`: the current one, then the previous one while its
        overlap lasts."""
        secrets = [self.sealed_secret]
        if (
            self.previous_secret is not None
            and self.previous_valid_until is not None
            and at < self.previous_valid_until
        ):
            secrets.append(self.previous_secret)
        return secrets

    def require_present(self) -> None:
        if self.removed:
            raise NotFound(
                f"webhook endpoint {self.endpoint_id} was deleted; register a new one",
                field="endpoint_id",
                code="webhook_not_found",
            )

    # --- secrets -----------------------------------------------------------------------------

    def rotate_secret(
        self,
        sealed_secret: str,
        previous_valid_until: datetime,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        """Sign with a new secret from now on; the one replaced keeps signing beside it until
        `previous_valid_until` (a second rotation within the overlap ends the first one's)."""
        self.require_present()
        if previous_valid_until < timestamp:
            raise InvalidInput(
                "the previous secret cannot stop before the rotation; give an overlap of 0 or more",
                field="overlap_hours",
            )
        self._secret_rotated(sealed_secret, previous_valid_until, actor, timestamp)

    @event("SecretRotated")
    def _secret_rotated(
        self,
        sealed_secret: str,
        previous_valid_until: datetime,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.previous_secret = self.sealed_secret
        self.previous_valid_until = previous_valid_until
        self.sealed_secret = sealed_secret
        self.updated_at = timestamp

    # --- settings ------------------------------------------------------------------------------

    def update(
        self,
        url: str,
        event_types: list[str],
        description: str | None,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> bool:
        """Change what and where it receives; False (nothing written) when nothing changes."""
        self.require_present()
        if (url, list(event_types), description) == (self.url, self.event_types, self.description):
            return False
        self._updated(url, event_types, description, actor, timestamp)
        return True

    @event("Updated")
    def _updated(
        self,
        url: str,
        event_types: list[str],
        description: str | None,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.url = url
        self.event_types = list(event_types)
        self.description = description
        self.updated_at = timestamp

    def disable(self, reason: str, actor: dict[str, Any], timestamp: datetime) -> bool:
        """Stop deliveries; False (nothing written) when it is already disabled, so the
        worker seeing several 410s in a row writes one event."""
        self.require_present()
        if not reason or not reason.strip():
            raise InvalidInput("say why the endpoint is disabled", field="reason")
        if not self.enabled:
            return False
        self._disabled(reason, actor, timestamp)
        return True

    @event("Disabled")
    def _disabled(self, reason: str, actor: dict[str, Any], timestamp: datetime) -> None:
        self.enabled = False
        self.disabled_reason = reason
        self.updated_at = timestamp

    def enable(self, actor: dict[str, Any], timestamp: datetime) -> bool:
        """Resume deliveries; False (nothing written) when it is already enabled."""
        self.require_present()
        if self.enabled:
            return False
        self._enabled(actor, timestamp)
        return True

    @event("Enabled")
    def _enabled(self, actor: dict[str, Any], timestamp: datetime) -> None:
        self.enabled = True
        self.disabled_reason = None
        self.updated_at = timestamp

    def remove(self, actor: dict[str, Any], timestamp: datetime) -> None:
        self.require_present()
        self._removed(actor, timestamp)

    @event("Removed")
    def _removed(self, actor: dict[str, Any], timestamp: datetime) -> None:
        self.removed = True
        self.enabled = False
        self.updated_at = timestamp


__all__ = [
    "ALL_EVENTS",
    "ENDPOINT_ID",
    "WebhookEndpoint",
    "check_description",
    "check_endpoint_id",
    "check_event_types",
    "check_webhook_url",
    "filter_matches",
    "known_event_types",
]
