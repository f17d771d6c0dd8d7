"""A real promptrecord server for SDK tests, counting the requests it receives, and stoppable.

``server``  an `SdkServer`: workspace ``acme`` served by uvicorn over the ``backend``
            fixture's database, behind an ASGI wrapper that records every request (method,
            path, status, and the body of ``POST /v1/executions``). ``server.api`` is the
            `Api` of tests/api/conftest.py (admin client, ``content(...)``, ``as_role``);
            ``server.runtime_token`` a runtime key for SDK clients; ``server.stop()`` kills
            the HTTP server (the database stays); ``server.snapshots`` a fresh snapshot dir.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptrecord.api.app import create_app
from promptrecord.api.services import Services
from promptrecord.settings import Settings


def _api_conftest() -> Any:
    # tests/api/conftest.py is not importable as a module under --import-mode=importlib;
    # its `Api` and server start-up are reused from the file rather than copied.
    path = Path(__file__).parent.parent / "api" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_sdk_tests_api_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_API = _api_conftest()


@dataclass
class Seen:
    method: str
    path: str
    query: str
    status: int = 0
    body: bytes = b""


@dataclass
class RequestLog:
    """An ASGI wrapper recording the HTTP requests that reach the real app."""

    app: ASGIApp
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = Seen(scope["method"], scope["path"], scope["query_string"].decode())
        with self.lock:
            self.seen.append(record)

        async def receive_recorded() -> Message:
            message = await receive()
            if record.path == "/v1/executions" and message["type"] == "http.request":
                record.body += message.get("body", b"")
            return message

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        await self.app(scope, receive_recorded, send_recorded)

    def count(self, path: str, method: str = "GET") -> int:
        with self.lock:
            return sum(1 for r in self.seen if r.path == path and r.method == method)

    def requests(self, path: str, method: str = "GET") -> list[Seen]:
        with self.lock:
            return [r for r in self.seen if r.path == path and r.method == method]


class SdkServer:
    def __init__(
        self,
        api: Any,
        log: RequestLog,
        uv: uvicorn.Server,
        thread: threading.Thread,
        snapshots: Path,
    ) -> None:
        self.api = api
        self.log = log
        self.base_url: str = api.base_url
        self.snapshots = snapshots
        self.runtime_token: str = api.issue("runtime", "sdk")
        self._uv = uv
        self._thread = thread

    def stop(self) -> None:
        """Kill the HTTP server: connections are refused from now on."""
        self._uv.should_exit = True
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the test server did not stop"

    def deploy(self, name: str = "bot", versions: int = 2, serving: int = 1) -> None:
        """`name` with `versions` versions ("v1 {{ company }}", …), `serving` promoted."""
        admin = self.api.admin
        created = admin.post(
            "/v1/prompts", json={"name": name, "content": self.api.content("v1 {{ company }}")}
        )
        assert created.status_code == 201, created.text
        for number in range(2, versions + 1):
            committed = admin.post(
                f"/v1/prompts/{name}/versions",
                json={"content": self.api.content(f"v{number} {{{{ company }}}}")},
            )
            assert committed.status_code == 201, committed.text
        self.promote(name, serving)

    def promote(self, name: str, version: int) -> None:
        """Promote and wait until the server's live state serves it."""
        promoted = self.api.admin.post(
            f"/v1/prompts/{name}/environments/production/promote", json={"version": version}
        )
        assert promoted.status_code == 200, promoted.text
        self.settle(promoted.json()["position"])

    def settle(self, position: int) -> None:
        wait_until(lambda: self.api.services.live.position >= position)


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll `condition` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def server(backend: Settings, tmp_path: Path) -> Iterator[SdkServer]:
    services = Services.open(backend.model_copy(update={"embedded_projector": True}))
    try:
        created, admin_token = services.app.create_workspace("acme")
        services.read_own_write(created.position)
        log = RequestLog(create_app(services=services))
        uv, thread, base_url = _API._start(log)
        api = _API.Api(services, base_url, admin_token)
        sdk_server = SdkServer(api, log, uv, thread, tmp_path / "snapshots")
        try:
            yield sdk_server
        finally:
            uv.should_exit = True
            thread.join(timeout=10)
            api.close()
    finally:
        services.close()
