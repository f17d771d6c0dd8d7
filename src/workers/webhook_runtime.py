"""What a process holds to deliver webhooks of one database, and how deliveries are enqueued.

`WebhookQueue` sends `deliver_webhook` messages (the delivery id and the database key),
marking each delivery queued first as `EvalQueue` does for runs, so the reconciler leaves a
waiting one alone. `WebhookRuntime` is the application, the delivery store, the queue and
an HTTP client of one database, registered by database key so the actor finds it (see
`promptrecord.workers.runtime` for why messages name their database).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from promptrecord.workers.broker import DELIVER_WEBHOOK, WEBHOOK_QUEUE
from promptrecord.workers.runtime import MarkedQueue, RuntimeRegistry

if TYPE_CHECKING:
    from promptrecord.domain.application import PromptRecord
    from promptrecord.settings import Settings
    from promptrecord.workers.webhook_store import Delivery, WebhookStore

# Retries further off than this wait in the store, not in the broker: Dramatiq keeps a
# delayed message unacknowledged in a worker's memory until it is due.
MAX_BROKER_DELAY = 600.0


def delivery_key(delivery_id: str) -> str:
    """A delivery's lease and queued-mark key."""
    return f"webhook:{delivery_id}"


class WebhookQueue(MarkedQueue):
    """Enqueues `deliver_webhook` messages for one database."""

    queue_name = WEBHOOK_QUEUE
    actor_name = DELIVER_WEBHOOK

    def job_key(self, job_id: str) -> str:
        return delivery_key(job_id)

    def enqueue(self, delivery_id: str, delay: float = 0.0) -> bool:
        """Send the delivery, due in `delay` seconds; False (nothing sent) when that is too
        far off for the broker and the reconciler is to send it when due."""
        if delay > MAX_BROKER_DELAY:
            return False
        self._send(delivery_id, (delivery_id,), delay)
        return True


@dataclass
class WebhookRuntime:
    """One database's application, delivery store and queue, as the actor uses them."""

    database: str
    app: PromptRecord
    settings: Settings
    store: WebhookStore
    queue: WebhookQueue
    _client: httpx.Client | None = None
    _sealer: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                # Redirects are not followed: the next hop's address was never checked.
                self._client = httpx.Client(
                    timeout=self.settings.webhook_timeout, follow_redirects=False
                )
            return self._client

    @property
    def sealer(self) -> Any:
        with self._lock:
            if self._sealer is None:
                from promptrecord.sealing import Sealer

                self._sealer = Sealer.from_settings(self.settings)
            return self._sealer

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


_runtimes: RuntimeRegistry[WebhookRuntime] = RuntimeRegistry()


# A `sole` runtime (a `promptrecord worker` process's) serves every database key.
register = _runtimes.register
webhook_runtime_for = _runtimes.find


def unregister(runtime: WebhookRuntime) -> None:
    _runtimes.unregister(runtime)
    runtime.close()


def resend(store: WebhookStore, queue: WebhookQueue, delivery_id: str) -> Delivery | None:
    """Start a new series of attempts of a delivery, under the same `webhook-id`; None when
    there is no such delivery."""
    delivery = store.resend(delivery_id, time.time())
    if delivery is not None:
        queue.enqueue(delivery_id)
    return delivery


__all__ = [
    "MAX_BROKER_DELAY",
    "WebhookQueue",
    "WebhookRuntime",
    "delivery_key",
    "register",
    "resend",
    "unregister",
    "webhook_runtime_for",
]
