"""Commands on webhook endpoints: register, rotate the secret, update, disable, enable, remove.

Secrets arrive sealed: the API generates and seals them (`promptrecord.sealing`), so neither
the domain nor the log ever sees one in the clear.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from promptrecord.domain.app_base import CommandBase, CommandResult
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import Conflict, InvalidInput, NotFound
from promptrecord.domain.webhooks import (
    WebhookEndpoint,
    check_description,
    check_endpoint_id,
    check_event_types,
    check_webhook_url,
    known_event_types,
)

MAX_OVERLAP = timedelta(hours=168)


def new_endpoint_id() -> str:
    return "we_" + secrets.token_hex(8)


def _check_sealed(sealed_secret: str) -> str:
    if not isinstance(sealed_secret, str) or not sealed_secret:
        raise InvalidInput("a webhook needs a sealed secret", field="sealed_secret")
    return sealed_secret


class WebhookCommands(CommandBase):
    """Webhook endpoints of a workspace. Deliveries are the workers' business."""

    def webhook_endpoint(
        self, workspace: str, endpoint_id: str, copy: bool = True
    ) -> WebhookEndpoint:
        """The endpoint, removed or not (the worker needs to see that it was removed)."""
        check_endpoint_id(endpoint_id)
        return self._get(
            WebhookEndpoint,
            WebhookEndpoint.create_id(workspace, endpoint_id),
            NotFound(
                f"webhook endpoint {endpoint_id!r} does not exist in this workspace",
                field="endpoint_id",
                code="webhook_not_found",
            ),
            copy,
        )

    def _present(
        self, workspace: str, endpoint_id: str, expected_revision: int | None
    ) -> WebhookEndpoint:
        endpoint = self.webhook_endpoint(workspace, endpoint_id)
        endpoint.require_present()
        self._expect(endpoint, expected_revision, f"webhook endpoint {endpoint_id}")
        return endpoint

    def register_webhook(
        self,
        workspace: str,
        url: str,
        event_types: list[str],
        description: str | None,
        sealed_secret: str,
        actor: Actor,
    ) -> CommandResult:
        """Register an endpoint; the value is its new id `we_<16 hex>`."""
        self.workspace(workspace, copy=False)
        check_webhook_url(url)
        types = check_event_types(event_types, known_event_types())
        endpoint_id = new_endpoint_id()
        if self._find(WebhookEndpoint.create_id(workspace, endpoint_id)) is not None:
            # 64 random bits: never in practice, but a clash must not merge two endpoints.
            raise Conflict("endpoint id clash; retry", code="concurrent_change")
        endpoint = WebhookEndpoint(
            workspace=workspace,
            endpoint_id=endpoint_id,
            url=url,
            event_types=types,
            description=check_description(description),
            sealed_secret=_check_sealed(sealed_secret),
            actor=actor.as_dict(),
            timestamp=self.clock(),
        )
        return self._commit(endpoint, value=endpoint_id)

    def rotate_webhook_secret(
        self,
        workspace: str,
        endpoint_id: str,
        sealed_secret: str,
        overlap: timedelta,
        actor: Actor,
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Sign with a new secret; the previous one keeps signing for `overlap` (0..168 h)."""
        if not timedelta(0) <= overlap <= MAX_OVERLAP:
            raise InvalidInput(
                "overlap_hours must be between 0 and 168 (a week)", field="overlap_hours"
            )
        endpoint = self._present(workspace, endpoint_id, expected_revision)
        now = self.clock()
        endpoint.rotate_secret(_check_sealed(sealed_secret), now + overlap, actor.as_dict(), now)
        return self._commit(endpoint, value=endpoint_id)

    def update_webhook(
        self,
        workspace: str,
        endpoint_id: str,
        actor: Actor,
        url: str | None = None,
        event_types: list[str] | None = None,
        description: str | None = None,
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Change the fields given (None keeps one; an empty description clears it). Writes
        nothing, position None, when nothing changes."""
        endpoint = self._present(workspace, endpoint_id, expected_revision)
        new_url = endpoint.url if url is None else check_webhook_url(url)
        types = (
            endpoint.event_types
            if event_types is None
            else check_event_types(event_types, known_event_types())
        )
        text = endpoint.description if description is None else check_description(description)
        if not endpoint.update(new_url, types, text, actor.as_dict(), self.clock()):
            return CommandResult(None, endpoint.version, endpoint_id)
        return self._commit(endpoint, value=endpoint_id)

    def disable_webhook(
        self,
        workspace: str,
        endpoint_id: str,
        reason: str,
        actor: Actor,
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Stop deliveries. Disabling a disabled endpoint writes nothing (position None)."""
        endpoint = self._present(workspace, endpoint_id, expected_revision)
        if not endpoint.disable(reason, actor.as_dict(), self.clock()):
            return CommandResult(None, endpoint.version, endpoint_id)
        return self._commit(endpoint, value=endpoint_id)

    def enable_webhook(
        self,
        workspace: str,
        endpoint_id: str,
        actor: Actor,
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Resume deliveries. Enabling an enabled endpoint writes nothing (position None)."""
        endpoint = self._present(workspace, endpoint_id, expected_revision)
        if not endpoint.enable(actor.as_dict(), self.clock()):
            return CommandResult(None, endpoint.version, endpoint_id)
        return self._commit(endpoint, value=endpoint_id)

    def remove_webhook(
        self,
        workspace: str,
        endpoint_id: str,
        actor: Actor,
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Delete the endpoint: it receives nothing more; its history stays in the log."""
        endpoint = self._present(workspace, endpoint_id, expected_revision)
        endpoint.remove(actor.as_dict(), self.clock())
        return self._commit(endpoint, value=endpoint_id)
