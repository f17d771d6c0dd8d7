"""The webhook actor: post one delivery, signed, record the attempt, and settle what next.

Import this module only through `promptrecord.workers.broker.configure_broker`: Dramatiq
binds the actor to the broker set when the module is imported.

The message carries the delivery id and the database key. Delivery is at least once, so
the actor is idempotent: a delivery no longer pending is left alone, and a lease per
delivery keeps two workers from posting it at the same moment. Every attempt is recorded
(status code, latency, error). 2xx delivers; 410 fails the delivery and disables the
endpoint; anything else — another status, a timeout, a refused connection, a URL refused
by the SSRF check — schedules the next attempt by `webhook_retry_schedule`, or fails the
delivery past its end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
import httpx

from promptrecord.domain.base import SYSTEM
from promptrecord.domain.errors import DomainError, InvalidInput, NotFound
from promptrecord.workers.broker import DELIVER_WEBHOOK, WEBHOOK_QUEUE
from promptrecord.workers.webhook_runtime import (
    WebhookRuntime,
    delivery_key,
    webhook_runtime_for,
)
from promptrecord.workers.webhook_signing import signature_headers
from promptrecord.workers.webhook_store import Attempt, Delivery

log = logging.getLogger(__name__)

GONE_REASON = "receiver answered 410 Gone"
# A backstop past the POST's own timeout (`webhook_timeout`, 15 s by default).
WEBHOOK_TIME_LIMIT_MS = 120_000
# A message this much ahead of its delivery's next attempt is a duplicate: the reconciler
# (or the message that is due) sends it when due.
EARLY = 0.5
MAX_ERROR = 500


@dramatiq.actor(
    actor_name=DELIVER_WEBHOOK,
    queue_name=WEBHOOK_QUEUE,
    # Dramatiq's retries cover our side failing (the database away); the receiver's
    # failures are retried by the delivery's own schedule, recorded attempt by attempt.
    max_retries=5,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=WEBHOOK_TIME_LIMIT_MS,
    throws=(DomainError,),
)
def deliver_webhook(delivery_id: str, database: str | None = None) -> None:
    runtime = webhook_runtime_for(database)
    if runtime is None:
        log.info(
            "webhook delivery %s: no worker here serves database %s; dropped (its "
            "reconciler re-enqueues it)",
            delivery_id,
            database,
        )
        return
    deliver(runtime, delivery_id)


@dataclass(frozen=True)
class _Posted:
    status_code: int | None
    latency_ms: float
    error: str | None


def deliver(runtime: WebhookRuntime, delivery_id: str) -> str:
    """Make the delivery's next attempt unless it is settled, held elsewhere or not due.

    Returns what happened: the delivery's new status (`delivered`, `pending` for a retry
    scheduled, `failed`, `cancelled`), or `leased`, `early`, `unknown`.
    """
    store, leases = runtime.store, runtime.queue.leases
    found = store.delivery(delivery_id)
    if found is None:
        return "unknown"
    if found.status != "pending":
        return found.status
    key = delivery_key(delivery_id)
    lease = leases.acquire(key)
    if lease is None:
        return "leased"  # its holder settles it; if the holder dies, the reconciler resends
    retry_in: float | None = None
    try:
        leases.clear_queued(key)
        delivery = store.delivery(delivery_id)  # again, under the lease
        if delivery is None or delivery.status != "pending":
            return "unknown" if delivery is None else delivery.status
        now = time.time()
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now + EARLY:
            return "early"
        endpoint = _endpoint(runtime, delivery)
        if endpoint is None:
            return "cancelled"
        number = store.next_attempt_number(delivery_id)
        attempted_at = time.time()
        posted = _post(runtime, endpoint, delivery)
        status, retry_in = _next_step(runtime, delivery, endpoint, posted)
        store.record_attempt(
            Attempt(
                delivery_id, number, delivery.series, attempted_at,
                posted.status_code, posted.latency_ms, posted.error,
            ),
            status,
            None if retry_in is None else time.time() + retry_in,
        )  # fmt: skip
    finally:
        lease.release()
    # Sent once the lease is free, or a worker taking it at once would find it held.
    if retry_in is not None:
        runtime.queue.enqueue(delivery_id, retry_in)
    return status


def _endpoint(runtime: WebhookRuntime, delivery: Delivery) -> Any:
    """The endpoint if it still takes deliveries; else the delivery is cancelled."""
    try:
        endpoint = runtime.app.webhook_endpoint(delivery.workspace, delivery.endpoint_id)
    except NotFound:
        endpoint = None
    if endpoint is None or endpoint.removed:
        runtime.store.cancel(delivery.delivery_id, "the endpoint was deleted")
        return None
    if not endpoint.enabled:
        reason = endpoint.disabled_reason or "no reason given"
        runtime.store.cancel(delivery.delivery_id, f"the endpoint is disabled ({reason})")
        return None
    return endpoint


def _post(runtime: WebhookRuntime, endpoint: Any, delivery: Delivery) -> _Posted:
    from promptrecord.workers.webhook_urls import check_url

    try:
        # Again before every POST: the name may resolve elsewhere now (DNS rebinding).
        check_url(endpoint.url, runtime.settings)
    except InvalidInput as refused:
        return _Posted(None, 0.0, f"not posted: {refused}"[:MAX_ERROR])
    sealed = endpoint.signing_secrets(datetime.now(UTC))
    try:
        secrets = [runtime.sealer.unseal(secret) for secret in sealed]
    except Exception as error:  # a sealing key lost or changed: say so on the attempt
        return _Posted(None, 0.0, f"not posted: cannot unseal the secret ({error})"[:MAX_ERROR])
    body = delivery.body.encode()
    headers = {
        "content-type": "application/json",
        "user-agent": "promptrecord-webhooks/1",
        **signature_headers(secrets, delivery.delivery_id, int(time.time()), body),
    }
    started = time.perf_counter()
    try:
        response = runtime.client.post(endpoint.url, content=body, headers=headers)
    except httpx.TimeoutException:
        elapsed = (time.perf_counter() - started) * 1000
        timeout = runtime.settings.webhook_timeout
        return _Posted(None, elapsed, f"no answer within {timeout:g} s")
    except httpx.HTTPError as error:
        elapsed = (time.perf_counter() - started) * 1000
        return _Posted(None, elapsed, f"{type(error).__name__}: {error}"[:MAX_ERROR])
    elapsed = (time.perf_counter() - started) * 1000
    code = response.status_code
    return _Posted(code, elapsed, None if 200 <= code < 300 else f"receiver answered {code}")


def _next_step(
    runtime: WebhookRuntime, delivery: Delivery, endpoint: Any, posted: _Posted
) -> tuple[str, float | None]:
    """The delivery's status after this attempt, and seconds until the next one."""
    code = posted.status_code
    if code is not None and 200 <= code < 300:
        return "delivered", None
    if code == 410:
        # Before the attempt is recorded: should disabling fail, the message is retried and
        # the receiver asked again.
        try:
            runtime.app.disable_webhook(
                delivery.workspace, delivery.endpoint_id, reason=GONE_REASON, actor=SYSTEM
            )
        except DomainError as refused:
            log.info("endpoint %s not disabled: %s", endpoint.endpoint_id, refused)
        return "failed", None
    schedule = runtime.settings.webhook_retry_schedule
    made = delivery.attempts + 1  # in this series, this one included
    if made > len(schedule):
        log.warning(
            "webhook delivery %s to %s failed after %d attempts: %s",
            delivery.delivery_id,
            endpoint.endpoint_id,
            made,
            posted.error,
        )
        return "failed", None
    return "pending", float(schedule[made - 1])


__all__ = ["GONE_REASON", "WEBHOOK_TIME_LIMIT_MS", "deliver", "deliver_webhook"]
