"""RFC 9457 problem details: every error the API returns is `application/problem+json`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptrecord.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:promptrecord:problem:"

DOMAIN_STATUS: dict[type[DomainError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    Unauthenticated: 401,
    Unavailable: 503,
}

# Codes for errors raised by the framework itself (unknown route, wrong method, …).
HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "route_not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "content_too_large",
    415: "unsupported_media_type",
}
_STANDARD_MEMBERS = frozenset(
    {"type", "title", "status", "detail", "instance", "code", "field", "hint", "errors"}
)


class ProblemFieldError(BaseModel):
    """One invalid field of a request."""

    field: str = Field(examples=["body.content.model.name"])
    message: str = Field(examples=["Field required"])


class Problem(BaseModel):
    """An error, as RFC 9457 problem details plus a stable `code` and the field at fault."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:promptrecord:problem:stale_revision",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "prompt 'support-bot' is at revision 4, not 3: it changed since "
                    "you read it; reload and retry",
                    "instance": "/v1/prompts/support-bot/versions",
                    "code": "stale_revision",
                    "current_revision": 4,
                },
                {
                    "type": "urn:promptrecord:problem:validation_failed",
                    "title": "Request validation failed",
                    "status": 422,
                    "detail": "body.content.model.name: Field required",
                    "instance": "/v1/prompts",
                    "code": "validation_failed",
                    "field": "body.content.model.name",
                    "errors": [{"field": "body.content.model.name", "message": "Field required"}],
                },
            ]
        },
    )

    type: str = Field(description="urn:promptrecord:problem:<code>")
    title: str
    status: int
    detail: str = Field(description="What went wrong and what to do about it, for people")
    instance: str = Field(description="The request path")
    code: str = Field(description="Stable, machine-readable error code")
    field: str | None = Field(default=None, description="The input at fault, when there is one")
    hint: str | None = None
    errors: list[ProblemFieldError] | None = None


def problem(
    status: int,
    code: str,
    detail: str,
    instance: str,
    *,
    title: str | None = None,
    field: str | None = None,
    hint: str | None = None,
    errors: Sequence[Mapping[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response; `extra` members never replace the standard ones."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
    }
    if field is not None:
        body["field"] = field
    if hint is not None:
        body["hint"] = hint
    if errors is not None:
        body["errors"] = [dict(error) for error in errors]
    for key, value in (extra or {}).items():
        if key not in _STANDARD_MEMBERS:
            body[key] = jsonable_encoder(value)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def domain_status(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    return 422


def field_path(loc: Sequence[int | str]) -> str:
    """`("body", "content", "messages", 0, "role")` -> `body.content.messages[0].role`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    status = domain_status(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    return problem(
        status,
        exc.code,
        exc.detail,
        request.url.path,
        title=exc.title,
        field=exc.field,
        hint=exc.hint,
        headers=headers,
        extra=exc.extra,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    malformed = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if malformed is not None:
        reason = (malformed.get("ctx") or {}).get("error", "invalid JSON")
        offset = malformed["loc"][-1] if malformed.get("loc") else 0
        return problem(
            400,
            "malformed_json",
            f"the request body is not valid JSON: {reason} at character {offset}",
            request.url.path,
            title="Malformed JSON",
            field="body",
            hint="send a JSON object with Content-Type: application/json",
        )
    items = [
        {"field": field_path(e.get("loc", ())) or "body", "message": str(e.get("msg", "invalid"))}
        for e in errors
    ]
    detail = "; ".join(f"{item['field']}: {item['message']}" for item in items)
    return problem(
        422,
        "validation_failed",
        detail or "the request is not valid",
        request.url.path,
        title="Request validation failed",
        field=items[0]["field"] if items else None,
        errors=items,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; see /openapi.json"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem(
        status,
        HTTP_CODES.get(status, f"http_{status}"),
        detail,
        request.url.path,
        headers=exc.headers,
    )


def _internal_error(method: str, path: str, exc: BaseException) -> JSONResponse:
    log.error("unexpected error on %s %s", method, path, exc_info=exc)
    return problem(
        500,
        "internal_error",
        "the server failed to handle this request; it has been logged — retry later, "
        "and report it if it persists",
        path,
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return _internal_error(request.method, request.url.path, exc)


class InternalErrorMiddleware:
    """Answers an unexpected exception with a 500 problem and swallows it.

    Starlette's own last-resort handler re-raises after responding, and the server then
    drops the connection: a keep-alive client would see its next request reset.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            response = _internal_error(scope["method"], scope["path"], exc)
            await response(scope, receive, send)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


_DESCRIPTIONS = {
    400: "Malformed request (body not JSON, bad header)",
    401: "Missing, malformed, unknown or revoked API key",
    403: "The key's role or its environment / prompt limits do not allow this",
    404: "The named thing does not exist in this workspace",
    409: "Conflicts with the current state (stale If-Match, archived prompt, …)",
    422: "The input is not acceptable; `field` and `errors` say which",
    503: "Not ready, or the requested log position was not reached in time",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for these error statuses (moved to problem+json later)."""
    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in statuses}
