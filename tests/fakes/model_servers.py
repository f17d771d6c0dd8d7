"""Local stand-ins for the Anthropic Messages API and the OpenAI Chat Completions API.

Each `FakeModelServer` is a real HTTP server (FastAPI under uvicorn on a free port of
127.0.0.1, in a thread) that the official SDKs talk to unchanged:

``POST /v1/messages``           Anthropic Messages (``kind="anthropic"``)
``POST /v1/chat/completions``   OpenAI Chat Completions (``kind="openai"``)

It records every request (`requests`: path, lower-cased headers, JSON body) and answers
from a script: `enqueue(...)` queues responses that are used first, one per request, in
order; when the queue is empty `reply(body) -> str` makes a normal answer. The helpers
`text`, `status`, `malformed` and `slow` build queued responses; `latency` delays every
answer; `usage` fixes the token counts reported (otherwise they are counted from words);
`api_key` set makes it answer 401 to requests that do not carry that key (as ``x-api-key``
or ``Authorization: Bearer``, the two headers the Anthropic SDKs have used). `in_flight` is
the number of requests being answered now and `max_in_flight` the most there ever were at
once (for tests of a client's concurrency limit).

Test modules cannot import this file (pytest runs with ``--import-mode=importlib``):
``tests/workers/conftest.py`` loads it by path and serves it as the ``anthropic_server``
and ``openai_server`` fixtures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response

Kind = Literal["anthropic", "openai"]
STARTUP_TIMEOUT = 15.0
_ids = itertools.count(1)


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # the decoded JSON body


@dataclass(frozen=True)
class Scripted:
    """One queued response: a reply text, or a status with a body, after a delay."""

    status: int = 200
    text: str | None = None  # a normal 200 answer with this text
    body: Any = None  # dict/list: sent as JSON; str/bytes: sent raw as application/json
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (longer than the client timeout: a timeout)
    usage: tuple[int, int] | None = None


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(item) for item in value)
    if isinstance(value, dict):
        return sum(_words(item) for key, item in value.items() if key in ("content", "text"))
    return 0


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(part.get("text", "")) for part in content)
    return ""


def _credentials(request: Request) -> set[str]:
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    return {bearer, request.headers.get("x-api-key", "")} - {""}


def echo(body: dict[str, Any]) -> str:
    """The default reply: an echo of the last user message."""
    return f"echo: {_last_user_text(body.get('messages', []))}"


class FakeModelServer:
    """A scripted Anthropic or OpenAI endpoint; see the module docstring."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.requests: list[RecordedRequest] = []
        self.reply: Callable[[dict[str, Any]], str] = echo
        self.latency = 0.0
        self.usage: tuple[int, int] | None = None
        self.api_key: str | None = None
        self.base_url = ""  # set while serving
        self.in_flight = 0
        self.max_in_flight = 0
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._closing = False
        self.app = self._build_app()

    # ------------------------------------------------------------------ scripting

    def enqueue(self, *responses: Scripted | str) -> None:
        """Queue responses (a plain string is a text reply) for the next requests."""
        with self._lock:
            for response in responses:
                self._queue.append(
                    Scripted(text=response) if isinstance(response, str) else response
                )

    @staticmethod
    def text(text: str, *, usage: tuple[int, int] | None = None) -> Scripted:
        return Scripted(text=text, usage=usage)

    def status(self, status: int, *, retry_after: str | None = None) -> Scripted:
        """An API error with the provider's error body (and a ``retry-after`` header)."""
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return Scripted(status=status, body=self._error_body(status), headers=headers)

    @staticmethod
    def malformed(body: Any = "{not json") -> Scripted:
        """A 200 whose body is not a valid answer (by default, not even JSON)."""
        return Scripted(body=body)

    @staticmethod
    def slow(delay: float, text: str = "too late") -> Scripted:
        return Scripted(text=text, delay=delay)

    @property
    def bodies(self) -> list[Any]:
        return [request.body for request in self.requests]

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # ------------------------------------------------------------------ answers

    def _next(self) -> Scripted | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _error_body(self, status: int) -> dict[str, Any]:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        message = f"scripted {status}"
        if self.kind == "anthropic":
            return {"type": "error", "error": {"type": kind, "message": message}}
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def _success(self, body: dict[str, Any], text: str, usage: tuple[int, int] | None) -> Any:
        n = next(_ids)
        model = body.get("model", "unknown")
        if usage is None:
            usage = self.usage or (
                _words(body.get("system")) + _words(body.get("messages", [])),
                max(1, len(text.split())),
            )
        if self.kind == "anthropic":
            return {
                "id": f"msg_fake{n:08d}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
            }
        return {
            "id": f"chatcmpl-fake{n:08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": usage[0] + usage[1],
            },
        }

    async def _wait(self, request: Request, seconds: float) -> bool:
        """Sleep `seconds` unless the client hangs up first; True when it did."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._closing or await request.is_disconnected():
                return True
            await asyncio.sleep(min(left, 0.02))
        return False

    async def _answer(self, request: Request) -> Response:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._respond(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _respond(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.url.path, {k.lower(): v for k, v in request.headers.items()}, body
                )
            )
        if self.api_key is not None and self.api_key not in _credentials(request):
            return Response(json.dumps(self._error_body(401)), 401, media_type="application/json")
        scripted = self._next() or Scripted()
        if await self._wait(request, self.latency + scripted.delay):
            return Response(status_code=499)
        headers = {"request-id": f"req_fake{next(_ids):08d}", **scripted.headers}
        if scripted.status == 200 and scripted.body is None:
            text = scripted.text if scripted.text is not None else self.reply(body or {})
            content: Any = self._success(body or {}, text, scripted.usage)
        else:
            content = scripted.body
        payload = content if isinstance(content, str | bytes) else json.dumps(content)
        return Response(payload, scripted.status, headers, media_type="application/json")

    def _build_app(self) -> FastAPI:
        app = FastAPI()
        path = "/v1/messages" if self.kind == "anthropic" else "/v1/chat/completions"
        app.add_api_route(path, self._answer, methods=["POST"])
        app.add_api_route("/healthz", lambda: {"ok": True}, methods=["GET"])
        return app

    # ------------------------------------------------------------------ lifecycle

    @contextmanager
    def serving(self) -> Iterator[FakeModelServer]:
        """Serve on a free port of 127.0.0.1 until the block ends."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", loop="asyncio")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        self.base_url = f"http://127.0.0.1:{port}"
        try:
            self._wait_until_up(thread)
            yield self
        finally:
            self._closing = True
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()

    def _wait_until_up(self, thread: threading.Thread) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the fake {self.kind} server did not answer /healthz")
            time.sleep(0.02)
