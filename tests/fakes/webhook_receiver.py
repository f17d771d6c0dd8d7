"""A webhook receiver for the tests: a real HTTP server on a thread that records every POST
and verifies each one two ways, as a user's receiver would.

`standardwebhooks.Webhook(secret).verify(body, headers)` checks `webhook-id`,
`webhook-timestamp` and `webhook-signature`; a plain HMAC-SHA256 of the body keyed by the
secret string checks `X-Signature-256`. Written without promptrecord's signing code, so a
fault there cannot hide itself. It can refuse (500) the first N requests, answer 410, or
hold requests open until released.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    """One request as it arrived, with both verdicts."""

    path: str
    headers: dict[str, str]
    body: bytes
    standard_ok: bool
    hmac_ok: bool
    answered: int | None = None  # None while held or when the answer could not be sent
    at: float = field(default_factory=time.time)  # when it arrived (epoch seconds)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def signatures(self) -> list[str]:
        return self.headers.get("webhook-signature", "").split()


def verifies_standard(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def verifies_hmac(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("x-signature-256", ""))


@dataclass
class WebhookReceiver:
    """Start with `start()` (or use as a context manager); `url` is where to register."""

    secret: str = ""
    refuse_first: int = 0  # answer 500 to this many requests first
    gone: bool = False  # answer 410 Gone
    hold: threading.Event | None = None  # when set: requests wait for it before answering
    requests: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the receiver first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.time()
        body = handler.rfile.read(int(handler.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in handler.headers.items()}
        received = Received(
            handler.path,
            headers,
            body,
            standard_ok=verifies_standard(self.secret, body, headers),
            hmac_ok=verifies_hmac(self.secret, body, headers),
            at=arrived,
        )
        with self._lock:
            self.requests.append(received)
            refused = len(self.requests) <= self.refuse_first
        if self.hold is not None:
            self.hold.wait()
        status = 410 if self.gone else 500 if refused else 200
        try:
            handler.send_response(status)
            handler.send_header("content-length", "0")
            handler.end_headers()
            received.answered = status
        except OSError:  # the sender went away while the request was held
            pass

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.answered is not None and r.answered < 300]

    def wait_for(self, count: int, timeout: float = 20.0, accepted: bool = True) -> list[Received]:
        """The requests once there are `count` (accepted ones, by default)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = list(self.requests)
            if accepted:
                found = self.accepted()
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the receiver got {len(found)} of {count} expected requests "
                    f"({len(self.requests)} in all)"
                )
            time.sleep(0.02)


__all__ = ["Received", "WebhookReceiver", "verifies_hmac", "verifies_standard"]
