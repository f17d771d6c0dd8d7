"""The TenantPin aggregate: one tenant held on one version of a prompt in one environment."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from promptrecord.domain.base import ChainedAggregate, business_id
from promptrecord.domain.errors import Conflict, InvalidInput

MAX_TENANT_LENGTH = 256


def check_tenant(tenant: str) -> str:
    if not tenant or len(tenant) > MAX_TENANT_LENGTH or not tenant.isprintable():
        raise InvalidInput(
            f"tenant id must be 1..{MAX_TENANT_LENGTH} printable characters", field="tenant"
        )
    return tenant


class TenantPin(ChainedAggregate):
    """Tenant `acme` gets version 7 of `support-bot` in production until `expires_at`."""

    @staticmethod
    def create_id(workspace: str, tenant: str, prompt: str, environment: str) -> UUID:
        return business_id("pin", workspace, tenant, prompt, environment)

    @event("Created")
    def __init__(
        self,
        workspace: str,
        tenant: str,
        prompt: str,
        environment: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.workspace = workspace
        self.tenant = tenant
        self.prompt = prompt
        self.environment = environment
        self.pinned: int | None = None
        self.expires_at: datetime | None = None

    def active_at(self, at: datetime) -> bool:
        return self.pinned is not None and self.expires_at is not None and at < self.expires_at

    def pin(
        self,
        version: int,
        expires_at: datetime,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        if expires_at <= timestamp:
            raise InvalidInput(
                f"expires_at {expires_at.isoformat()} is not in the future", field="expires_at"
            )
        self._pinned(version, expires_at, reason, actor, timestamp)

    @event("Pinned")
    def _pinned(
        self,
        version: int,
        expires_at: datetime,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.pinned = version
        self.expires_at = expires_at

    def unpin(self, reason: str, actor: dict[str, Any], timestamp: datetime) -> None:
        if self.pinned is None:
            raise Conflict(
                f"tenant {self.tenant!r} is not pinned for {self.prompt!r} in {self.environment}",
                code="not_pinned",
            )
        if not self.active_at(timestamp):
            assert self.expires_at is not None
            raise Conflict(
                f"the pin of tenant {self.tenant!r} on {self.prompt!r} in {self.environment} "
                f"already expired at {self.expires_at.isoformat()}; nothing to unpin",
                code="pin_expired",
            )
        self._unpinned(reason, actor, timestamp)

    @event("Unpinned")
    def _unpinned(self, reason: str, actor: dict[str, Any], timestamp: datetime) -> None:
        self.pinned = None
        self.expires_at = None
