"""A real promptrecord server per test (uvicorn on 127.0.0.1), on SQLite and on PostgreSQL.

``api``    an `Api`: workspace ``acme`` and its bootstrap admin key, served over real HTTP on
           the ``backend`` fixture's database; ``api.admin`` is an httpx client with that key,
           ``api.as_role(role, name, **limits)`` one with a new key, ``api.services`` the
           server's services, ``api.content(...)`` a chat content and
           ``api.assert_problem(response, status, code, field)`` checks an RFC 9457 problem.
``serve``  `serving`: run any app under uvicorn for the length of a ``with`` block.

Test modules cannot import this file at run time (pytest runs with
``--import-mode=importlib``), so what they share is reached through these fixtures; they
import `Api` only for type checking.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from promptrecord.api.app import create_app
from promptrecord.api.services import Services
from promptrecord.settings import Settings

PROBLEM = "application/problem+json"
STARTUP_TIMEOUT = 15.0


def content(text: str = "You help {{ company }} customers.", **model: Any) -> dict[str, Any]:
    """A chat content whose system message is `text`."""
    return {
        "type": "chat",
        "messages": [
            {"role": "system", "content": text},
            {"role": "user", "content": "{{ question }}"},
        ],
        "model": {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929", **model},
    }


def assert_problem(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status, code and (if given) field."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["type"] == f"urn:promptrecord:problem:{code}"
    assert body["status"] == status
    assert body["instance"] == response.request.url.path
    assert body["title"] and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


class Api:
    """A running server over its own database, and clients for the keys a test issues."""

    PROBLEM = PROBLEM
    content = staticmethod(content)
    assert_problem = staticmethod(assert_problem)

    def __init__(self, services: Services, base_url: str, admin_token: str) -> None:
        self.services = services
        self.base_url = base_url
        self.admin_token = admin_token
        self._clients: list[httpx.Client] = []
        self.admin = self.client(admin_token)

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
        self._clients.append(client)
        return client

    def issue(self, role: str, name: str | None = None, **limits: Any) -> str:
        """Issue a key through the API; returns its token."""
        body = {"name": name or f"{role} key", "role": role, **limits}
        response = self.admin.post("/v1/keys", json=body)
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    def as_role(self, role: str, name: str | None = None, **limits: Any) -> httpx.Client:
        return self.client(self.issue(role, name, **limits))

    def close(self) -> None:
        for client in self._clients:
            client.close()


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run `app` under uvicorn on a free port of 127.0.0.1 until the block ends; yields its URL."""
    server, thread, base_url = _start(app)
    try:
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _start(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, str]:
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only then,
    # and without it every response waits out a 40 ms delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return server, thread, base_url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("the test server did not answer /healthz")
        time.sleep(0.02)


@pytest.fixture
def serve() -> Callable[[FastAPI], AbstractContextManager[str]]:
    return serving


@pytest.fixture
def api(backend: Settings) -> Iterator[Api]:
    """Workspace `acme` with its bootstrap admin key, served over real HTTP."""
    # The views kept in the server process, as `serve` does on SQLite, on both backends.
    # Loopback allowed for webhook receivers in the tests; the sealing key file in tmp.
    settings = backend.model_copy(
        update={
            "embedded_projector": True,
            "webhook_allow_hosts": "127.0.0.1,::1,localhost",
            "secret_key_file": backend.admin_key_file.with_name("secret.key"),
        }
    )
    services = Services.open(settings)
    try:
        created, admin_token = services.app.create_workspace("acme")
        services.read_own_write(created.position)  # start every test from settled state
        with serving(create_app(services=services)) as base_url:
            api = Api(services, base_url, admin_token)
            try:
                yield api
            finally:
                api.close()
    finally:
        services.close()
