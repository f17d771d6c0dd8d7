"""`Idempotency-Key` on every POST: a retried command replays its first response exactly."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptrecord.api.problems import problem

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
TTL_SECONDS = 24 * 3600
# A reservation this old belongs to a request whose process died mid-way: let a retry run it.
ABANDONED_SECONDS = 600
TABLE = "promptrecord_idempotency"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def headers_json(self) -> str:
        return json.dumps(self.headers)

    @classmethod
    def from_row(cls, status: int, headers: str, body: bytes) -> StoredResponse:
        return cls(status, [(name, value) for name, value in json.loads(headers)], bytes(body))


@dataclass(frozen=True)
class Claim:
    """What reserving a key found: ours to run, a response to replay, or a refusal."""

    outcome: Literal["reserved", "replay", "mismatch", "in_progress"]
    response: StoredResponse | None = None


class IdempotencyStore(ABC):
    """Rows of (scope, key) -> fingerprint and, once finished, the response to replay.

    Lives in the same database as the events. Entries older than `TTL_SECONDS` count as
    absent and are pruned as new keys are reserved.
    """

    @abstractmethod
    def create_table(self) -> None: ...

    @abstractmethod
    def reserve(self, scope: str, key: str, fingerprint: str, now: float) -> Claim:
        """Atomically take the key for this request, or report what holds it."""

    @abstractmethod
    def complete(self, scope: str, key: str, response: StoredResponse) -> None: ...

    @abstractmethod
    def release(self, scope: str, key: str) -> None:
        """Forget a reservation whose request failed on our side, so a retry can run it."""

    @abstractmethod
    def ping(self) -> None:
        """A trivial query, for readiness checks."""

    @abstractmethod
    def close(self) -> None: ...

    @staticmethod
    def classify(fingerprint: str, stored_fingerprint: str, stored: StoredResponse | None) -> Claim:
        if stored_fingerprint != fingerprint:
            return Claim("mismatch")
        if stored is None:
            return Claim("in_progress")
        return Claim("replay", stored)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class IdempotencyMiddleware:
    """Pure ASGI, so the request body can be read once, fingerprinted and passed on.

    `store` is a callable because the store opens with the app's lifespan, after the
    middleware stack is built.
    """

    def __init__(self, app: ASGIApp, store: Callable[[], IdempotencyStore]) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_key = headers.get(b"idempotency-key")
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1").strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            response = problem(
                400,
                "invalid_idempotency_key",
                f"{HEADER} must be 1..{MAX_KEY_LENGTH} characters (got {len(key)}); use a UUID",
                scope["path"],
                field=HEADER,
            )
            await response(scope, receive, send)
            return
        body = await _read_body(receive)
        request_scope = _sha256(headers.get(b"authorization", b""))
        fingerprint = _sha256(
            b"\n".join([b"POST", scope["path"].encode(), scope.get("query_string", b""), body])
        )
        store = self.store()
        claim = await anyio.to_thread.run_sync(
            store.reserve, request_scope, key, fingerprint, time.time()
        )
        if claim.outcome != "reserved":
            await _refuse(claim, scope, receive, send)
            return
        await self._run(scope, receive, send, store, request_scope, key, body)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        store: IdempotencyStore,
        request_scope: str,
        key: str,
        body: bytes,
    ) -> None:
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body, only http.disconnect is left to hear
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        held: list[Message] = []
        settled = False

        async def settle() -> None:
            # Recorded before the client sees the response, so a retry sent the moment it
            # arrives finds it stored rather than "in progress".
            nonlocal settled
            settled = True
            status: int = held[0]["status"]
            try:
                if status >= 500:
                    await anyio.to_thread.run_sync(store.release, request_scope, key)
                    return
                headers = [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in held[0].get("headers", [])
                ]
                content = b"".join(message.get("body", b"") for message in held[1:])
                stored = StoredResponse(status, headers, content)
                await anyio.to_thread.run_sync(store.complete, request_scope, key, stored)
            except Exception:
                # The command itself is done: its response still goes out. The reservation
                # stays until it counts as abandoned.
                log.exception("could not record the response for %s %s", HEADER, key)

        async def capture(message: Message) -> None:
            if settled:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await settle()
                for waiting in held:
                    await send(waiting)

        try:
            await self.app(scope, replay_body, capture)
        finally:
            if not settled:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(store.release, request_scope, key)


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _refuse(claim: Claim, scope: Scope, receive: Receive, send: Send) -> None:
    if claim.outcome == "replay":
        assert claim.response is not None
        stored = claim.response
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in stored.headers]
        headers.append((b"idempotency-replayed", b"true"))
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        await send({"type": "http.response.body", "body": stored.body})
        return
    if claim.outcome == "mismatch":
        response = problem(
            422,
            "idempotency_key_reused",
            f"this {HEADER} was already used for a different request (method, path, query or "
            "body differ); use a new key for a new request",
            scope["path"],
            field=HEADER,
        )
    else:
        response = problem(
            409,
            "idempotency_in_progress",
            f"a request with this {HEADER} is still running; retry in a moment to get its response",
            scope["path"],
            field=HEADER,
            headers={"Retry-After": "1"},
        )
    await response(scope, receive, send)
