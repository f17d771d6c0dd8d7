"""Errors a user can cause, each naming the thing at fault and what to do about it."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every refusal the domain gives. `code` is stable; `detail` is for people."""

    code = "invalid"
    title = "Invalid request"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        hint: str | None = None,
        code: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.hint = hint
        if code is not None:
            self.code = code
        self.extra = extra


class InvalidInput(DomainError):
    """The request is well formed but its content is not acceptable (HTTP 422)."""

    code = "invalid_input"
    title = "Invalid input"


class NotFound(DomainError):
    """The named thing does not exist in this workspace (HTTP 404)."""

    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    """The command does not fit the current state, e.g. a stale expected version (HTTP 409)."""

    code = "conflict"
    title = "Conflict"


class Forbidden(DomainError):
    """The caller is known but may not do this (HTTP 403)."""

    code = "forbidden"
    title = "Forbidden"


class Unauthenticated(DomainError):
    """No valid API key was presented (HTTP 401)."""

    code = "unauthenticated"
    title = "Unauthenticated"


class Unavailable(DomainError):
    """Not answerable yet, e.g. the read views have not reached a position (HTTP 503)."""

    code = "unavailable"
    title = "Service unavailable"
