"""The Dramatiq broker: Redis when PROMPTRECORD_REDIS_URL is set, in-process otherwise.

Dramatiq binds an actor to the global broker when the actor is declared, so
`configure_broker` sets the broker first and only then imports the actor module
(`promptrecord.workers.actors`, `promptrecord.workers.webhook_actors`). Import the actors
through it, never directly.

Middleware: `TimeLimit` and `Retries` only, because the eval actor declares `time_limit`,
`max_retries` and `throws` and nothing else. Left out on purpose: `AgeLimit` (a queued run
stays worth running however long it waited), `Callbacks`, `Pipelines` and `GroupCallbacks`
(no composition), and `ShutdownNotifications` (it raises inside the actor's thread, which
could land mid-commit; the actor stops cooperatively between batches instead — see
`promptrecord.workers.runtime.WorkerRuntime.stopping`).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries, TimeLimit

from promptrecord.settings import Settings

ACTORS_MODULE = "promptrecord.workers.actors"
WEBHOOK_ACTORS_MODULE = "promptrecord.workers.webhook_actors"
EVAL_QUEUE = "evals"
RUN_EVAL = "run_eval"  # the eval actor's name: what messages carry
WEBHOOK_QUEUE = "webhooks"
DELIVER_WEBHOOK = "deliver_webhook"


class BrokerMismatch(RuntimeError):
    """This process already set a different broker; Dramatiq holds one per process."""


@dataclass(frozen=True)
class BrokerIdentity:
    """What makes two configurations the same broker: its kind, URL and key namespace."""

    kind: str  # "redis" | "stub"
    url: str | None
    namespace: str

    def describe(self) -> str:
        if self.kind == "stub":
            return "the in-process broker"
        return f"Redis {_redact(self.url or '')} (namespace {self.namespace})"


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def identity_of(settings: Settings) -> BrokerIdentity:
    if settings.redis_url:
        return BrokerIdentity("redis", settings.redis_url, settings.redis_namespace)
    return BrokerIdentity("stub", None, settings.redis_namespace)


def build_broker(settings: Settings) -> dramatiq.Broker:
    """A broker for these settings, not yet made the process's global one."""
    middleware = [TimeLimit(), Retries()]
    if settings.redis_url:
        return RedisBroker(  # type: ignore[no-untyped-call]
            url=settings.redis_url,
            namespace=settings.redis_namespace,
            middleware=middleware,
            heartbeat_timeout=int(settings.redis_heartbeat_timeout * 1000),
        )
    return StubBroker(middleware=middleware)


_lock = threading.Lock()
_configured: tuple[BrokerIdentity, dramatiq.Broker] | None = None


def configure_broker(settings: Settings) -> dramatiq.Broker:
    """Set this process's broker for `settings` and import the actors bound to it.

    Calling it again with the same broker settings returns the same broker (the API test
    suite opens many in-process services); with different ones it raises `BrokerMismatch`,
    since the actors are already bound to the first.
    """
    global _configured
    wanted = identity_of(settings)
    with _lock:
        if _configured is not None:
            identity, broker = _configured
            if identity != wanted:
                raise BrokerMismatch(
                    f"this process already uses {identity.describe()} for its workers; it "
                    f"cannot switch to {wanted.describe()} (start another process)"
                )
            return broker
        broker = build_broker(settings)
        dramatiq.set_broker(broker)
        importlib.import_module(ACTORS_MODULE)
        importlib.import_module(WEBHOOK_ACTORS_MODULE)
        broker.declare_queue(EVAL_QUEUE)
        broker.declare_queue(WEBHOOK_QUEUE)
        _configured = (wanted, broker)
        return broker


def configured_broker() -> dramatiq.Broker | None:
    """The broker `configure_broker` set in this process, if any."""
    with _lock:
        return _configured[1] if _configured is not None else None


__all__ = [
    "ACTORS_MODULE",
    "DELIVER_WEBHOOK",
    "EVAL_QUEUE",
    "RUN_EVAL",
    "WEBHOOK_ACTORS_MODULE",
    "WEBHOOK_QUEUE",
    "BrokerIdentity",
    "BrokerMismatch",
    "build_broker",
    "configure_broker",
    "configured_broker",
    "identity_of",
]
