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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dramatiq
import httpx

from promptrecord.workers.broker import DELIVER_WEBHOOK, WEBHOOK_QUEUE
from promptrecord.workers.leases import Leases

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


class WebhookQueue:
    """Enqueues `deliver_webhook` messages for one database."""

    def __init__(
        self,
        broker: dramatiq.Broker,
        leases: Leases,
        database: str,
        requeue_after: float,
        before_send: Callable[[], None] | None = None,
    ) -> None:
        self.broker = broker
        self.leases = leases
        self.database = database
        self.requeue_after = requeue_after
        self.before_send = before_send
        if WEBHOOK_QUEUE not in broker.get_declared_queues():
            broker.declare_queue(WEBHOOK_QUEUE)

    def enqueue(self, delivery_id: str, delay: float = 0.0) -> bool:
        """Send the delivery, due in `delay` seconds; False (nothing sent) when that is too
        far off for the broker and the reconciler is to send it when due."""
        if delay > MAX_BROKER_DELAY:
            return False
        if self.before_send is not None:
            self.before_send()
        # Marked before it is sent: a worker taking it clears the mark, and a mark left by a
        # send that failed only delays the reconciler.
        self.leases.mark_queued(delivery_key(delivery_id), delay + self.requeue_after)
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=WEBHOOK_QUEUE,
            actor_name=DELIVER_WEBHOOK,
            args=(delivery_id, self.database),
            kwargs={},
            options={},
        )
        self.broker.enqueue(message, delay=int(delay * 1000) if delay > 0 else None)
        return True

    def settled(self, delivery_id: str) -> bool:
        """True when a worker holds the delivery or a message for it waits in the queue."""
        key = delivery_key(delivery_id)
        return self.leases.held(key) or self.leases.queued(key)


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


_registry_lock = threading.Lock()
_registry: dict[str, list[WebhookRuntime]] = {}
_sole: list[WebhookRuntime] = []


def register(runtime: WebhookRuntime, sole: bool = False) -> None:
    """Make `runtime` serve deliveries naming its database; a `sole` one (a `promptrecord
    worker` process's) serves every database key, as in `promptrecord.workers.runtime`."""
    with _registry_lock:
        _registry.setdefault(runtime.database, []).append(runtime)
        if sole:
            _sole.append(runtime)


def unregister(runtime: WebhookRuntime) -> None:
    with _registry_lock:
        runtimes = _registry.get(runtime.database, [])
        if runtime in runtimes:
            runtimes.remove(runtime)
        if not runtimes:
            _registry.pop(runtime.database, None)
        if runtime in _sole:
            _sole.remove(runtime)
    runtime.close()


def resend(store: WebhookStore, queue: WebhookQueue, delivery_id: str) -> Delivery | None:
    """Start a new series of attempts of a delivery, under the same `webhook-id`; None when
    there is no such delivery."""
    delivery = store.resend(delivery_id, time.time())
    if delivery is not None:
        queue.enqueue(delivery_id)
    return delivery


def webhook_runtime_for(database: str | None) -> WebhookRuntime | None:
    with _registry_lock:
        runtimes = _registry.get(database) if database is not None else None
        if runtimes:
            return runtimes[-1]
        return _sole[-1] if _sole else None


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
