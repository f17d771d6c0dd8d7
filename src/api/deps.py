"""Request dependencies: services, the calling API key and its limits, If-Match."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Header, Path, Query, Request

from promptrecord.api.services import Services
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import Forbidden, InvalidInput, Unauthenticated
from promptrecord.domain.keys import parse_token, secret_matches
from promptrecord.domain.policy import role_rank
from promptrecord.domain.resolution import KeyView
from promptrecord.projections.views import ViewStore

MAX_ON_BEHALF_OF = 200

ON_BEHALF_OF_HEADER = "X-On-Behalf-Of"


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def read_views(
    request: Request,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            description=(
                "Answer once the read views have applied this log position (a command's "
                "`position`), waiting up to 5 s; 503 `views_behind` if they do not"
            ),
        ),
    ] = None,
) -> ViewStore:
    # A plain def: waiting for the views blocks, so FastAPI runs it on a worker thread.
    services: Services = request.app.state.services
    return services.views(after)


Views = Annotated[ViewStore, Depends(read_views)]


@dataclass(frozen=True)
class Caller:
    """The API key behind a request. Its workspace is the only one the request can touch."""

    key: KeyView
    actor: Actor

    @property
    def workspace(self) -> str:
        return self.key.workspace

    def may_see_environment(self, environment: str) -> bool:
        return self.key.environments is None or environment in self.key.environments

    def may_see_prompt(self, name: str) -> bool:
        patterns = self.key.prompt_patterns
        return patterns is None or any(fnmatchcase(name, pattern) for pattern in patterns)

    def check_environment(self, environment: str, field: str = "environment") -> str:
        if not self.may_see_environment(environment):
            allowed = ", ".join(self.key.environments or [])
            raise Forbidden(
                f"key {self.key.name!r} is limited to environments {allowed}; it cannot touch "
                f"{environment!r} — use a key that covers it",
                field=field,
                code="environment_not_allowed",
                limit="environments",
            )
        return environment

    def check_prompt(self, name: str, field: str = "name") -> str:
        if not self.may_see_prompt(name):
            allowed = ", ".join(self.key.prompt_patterns or [])
            raise Forbidden(
                f"key {self.key.name!r} is limited to prompts matching {allowed}; it cannot "
                f"touch {name!r} — use a key that covers it",
                field=field,
                code="prompt_not_allowed",
                limit="prompt_patterns",
            )
        return name


_refresh_lock = threading.Lock()


def _refresh(services: Services, seen: int) -> None:
    # One refresh at a time, and none when another waiter's refresh already moved the state,
    # so a flood of unknown key ids cannot queue up reads of the log.
    with _refresh_lock:
        if services.live.position == seen:
            services.live.catch_up()


async def _find_key(services: Services, key_id: str) -> KeyView | None:
    key = services.live.state.keys.get(key_id)
    if key is not None:
        return key
    # A key issued by another process may not be folded in yet.
    await anyio.to_thread.run_sync(_refresh, services, services.live.position)
    return services.live.state.keys.get(key_id)


CALLER_SCOPE_KEY = "promptrecord.caller"


async def authenticate(request: Request) -> Caller:
    """The caller behind `Authorization: Bearer pr_<id>_<secret>`, or 401.

    Reads headers itself rather than through header dependencies: every dependency costs
    a pass of FastAPI's solver, and this runs on every request, resolve included. The
    result is kept on the request so role and limit checks share one authentication.
    """
    cached = request.scope.get(CALLER_SCOPE_KEY)
    if cached is not None:
        assert isinstance(cached, Caller)
        return cached
    scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthenticated(
            "send your API key as 'Authorization: Bearer pr_<id>_<secret>'",
            field="Authorization",
            code="unauthenticated",
        )
    token = parse_token(credentials.strip())
    if token is None:
        raise Unauthenticated(
            "the bearer token is not an API key of the form pr_<id>_<secret>",
            field="Authorization",
            code="malformed_key",
        )
    key = await _find_key(request.app.state.services, token.key_id)
    if key is None or not secret_matches(token.secret, key.secret_hash):
        raise Unauthenticated(
            "this API key is not known; check it was copied whole",
            field="Authorization",
            code="unknown_key",
        )
    if key.revoked:
        raise Unauthenticated(
            f"API key {key.name!r} has been revoked; ask an admin for a new one",
            field="Authorization",
            code="revoked_key",
        )
    on_behalf_of = request.headers.get(ON_BEHALF_OF_HEADER) or None
    if on_behalf_of is not None and len(on_behalf_of) > MAX_ON_BEHALF_OF:
        raise InvalidInput(
            f"{ON_BEHALF_OF_HEADER} is at most {MAX_ON_BEHALF_OF} characters",
            field=f"header.{ON_BEHALF_OF_HEADER}",
            code="invalid_on_behalf_of",
        )
    caller = Caller(key, Actor(key.key_id, key.name, on_behalf_of))
    request.scope[CALLER_SCOPE_KEY] = caller
    return caller


CurrentKey = Annotated[Caller, Depends(authenticate)]


def requires(role: str) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency admitting keys whose role is at least `role`."""
    rank = role_rank(role)

    async def dependency(request: Request) -> Caller:
        caller = await authenticate(request)
        if role_rank(caller.key.role) < rank:
            raise Forbidden(
                f"this needs the {role} role or higher; key {caller.key.name!r} is "
                f"{caller.key.role}",
                code="role_required",
                required_role=role,
                role=caller.key.role,
            )
        return caller

    dependency.__name__ = f"requires_{role}"
    return dependency


Viewer = Annotated[Caller, Depends(requires("viewer"))]
Runtime = Annotated[Caller, Depends(requires("runtime"))]
Editor = Annotated[Caller, Depends(requires("editor"))]
Deployer = Annotated[Caller, Depends(requires("deployer"))]
Admin = Annotated[Caller, Depends(requires("admin"))]


async def allowed_prompt(
    request: Request,
    name: Annotated[str, Path(description="Prompt name", examples=["support-bot"])],
) -> str:
    return (await authenticate(request)).check_prompt(name)


async def allowed_environment(
    request: Request,
    environment: Annotated[str, Path(description="Environment name", examples=["production"])],
) -> str:
    return (await authenticate(request)).check_environment(environment)


PromptName = Annotated[str, Depends(allowed_prompt)]
EnvironmentName = Annotated[str, Depends(allowed_environment)]


async def expected_revision(
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='The revision you read (its ETag, e.g. "3"); 409 if it changed since',
            examples=['"3"'],
        ),
    ] = None,
) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit() or len(value) > 18:
        raise InvalidInput(
            f'If-Match must be a revision in quotes, as in the ETag you read (e.g. "3"); '
            f"got {if_match!r}",
            field="header.If-Match",
            code="invalid_if_match",
        )
    return int(value)


ExpectedRevision = Annotated[int | None, Depends(expected_revision)]
