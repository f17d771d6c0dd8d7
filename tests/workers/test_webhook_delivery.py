"""Webhook delivery end to end on each backend: commands write events, the follower creates
deliveries, the in-process worker posts them to a real receiver that verifies every request
with the `standardwebhooks` package and with a plain HMAC."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from support.eval_runs import TESTER, WS, chat, wait_until
from support.webhooks import WebhookReceiver, verifies_hmac, verifies_standard

from promptrecord.api.services import Services
from promptrecord.domain.base import event_id_at
from promptrecord.domain.prompt import Prompt
from promptrecord.sealing import Sealer, new_webhook_secret
from promptrecord.settings import Settings
from promptrecord.workers.webhook_store import Delivery, WebhookStore

RETRIES = [0.1, 0.1, 0.1, 0.1]


@dataclass
class Hooks:
    """A service with its embedded workers, and ways to register endpoints and write events."""

    services: Services
    settings: Settings

    @property
    def store(self) -> WebhookStore:
        return self.services.webhook_deliveries

    def register(self, receiver: WebhookReceiver, event_types: list[str] | None = None) -> str:
        receiver.secret = receiver.secret or new_webhook_secret()
        sealed = Sealer.from_settings(self.settings).seal(receiver.secret)
        result = self.services.app.register_webhook(
            WS, receiver.url, event_types or ["*"], None, sealed, TESTER
        )
        endpoint_id: str = result.value
        return endpoint_id

    def commit(self, text: str = "Answer briefly.") -> str:
        """Commit a version of `support`; the id of its `Prompt.VersionCommitted` event."""
        result = self.services.app.commit_version(
            WS, "support", chat("openai", "gpt-4o-mini", text), TESTER
        )
        if self.services.workers is not None:
            self.services.workers.nudge()
        prompt = self.services.app.prompt(WS, "support")
        return event_id_at(Prompt.create_id(WS, "support"), prompt.version) if result else ""

    def deliveries(self, endpoint_id: str) -> list[Delivery]:
        return self.store.for_endpoint(WS, endpoint_id)

    def settled(self, endpoint_id: str, count: int, status: str = "delivered") -> list[Delivery]:
        def done() -> bool:
            found = self.deliveries(endpoint_id)
            return len(found) >= count and all(d.status == status for d in found)

        wait_until(done, 20, f"{count} deliveries {status}")
        return self.deliveries(endpoint_id)


@pytest.fixture
def hooks(backend: Settings, tmp_path: Path) -> Iterator[Hooks]:
    settings = backend.model_copy(
        update={
            "webhook_allow_hosts": "127.0.0.1",
            "webhook_retry_schedule": RETRIES,
            "webhook_poll_interval": 0.05,
            "reconcile_interval": 0.2,
            "secret_key_file": tmp_path / "secret.key",
        }
    )
    services = Services.open(settings)
    try:
        services.app.create_workspace(WS, "Acme")
        services.app.create_prompt(WS, TESTER, name="support")
        yield Hooks(services, settings)
    finally:
        services.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def test_a_command_is_delivered_signed_both_ways(hooks: Hooks, receiver: WebhookReceiver) -> None:
    endpoint_id = hooks.register(receiver, ["Prompt.VersionCommitted"])
    event = hooks.commit()

    [request] = receiver.wait_for(1)
    assert request.standard_ok and request.hmac_ok
    body = json.loads(request.body)
    assert set(body) == {"id", "type", "created_at", "workspace", "data"}
    assert body["id"] == event and body["type"] == "Prompt.VersionCommitted"
    assert body["workspace"] == WS and body["data"]["number"] == 1
    assert "actor" not in body["data"] and "prev_hash" not in body["data"]
    assert len(request.signatures) == 1 and request.signatures[0].startswith("v1,")

    [delivery] = hooks.settled(endpoint_id, 1)
    assert request.webhook_id == delivery.delivery_id
    assert delivery.event_id == event and delivery.attempts == 1
    [attempt] = hooks.store.attempts(delivery.delivery_id)
    assert attempt.status_code == 200 and attempt.latency_ms > 0 and attempt.error is None
    # The command did not wait for the webhook: the event is in the log either way.
    assert hooks.store.for_event(WS, event) == [delivery]


def test_a_wrong_secret_fails_both_checks(hooks: Hooks, receiver: WebhookReceiver) -> None:
    hooks.register(receiver, ["Prompt.*"])
    hooks.commit()
    [request] = receiver.wait_for(1)
    wrong = new_webhook_secret()
    assert request.standard_ok and request.hmac_ok
    assert not verifies_standard(wrong, request.body, request.headers)
    assert not verifies_hmac(wrong, request.body, request.headers)
    tampered = request.body.replace(b'"number":1', b'"number":2')
    assert tampered != request.body
    assert not verifies_standard(receiver.secret, tampered, request.headers)
    assert not verifies_hmac(receiver.secret, tampered, request.headers)


def test_refused_then_accepted_keeps_one_webhook_id(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    receiver.refuse_first = 3
    endpoint_id = hooks.register(receiver, ["Prompt.VersionCommitted"])
    hooks.commit()

    [delivery] = hooks.settled(endpoint_id, 1)
    assert [r.answered for r in receiver.requests] == [500, 500, 500, 200]
    assert {r.webhook_id for r in receiver.requests} == {delivery.delivery_id}
    assert all(r.standard_ok and r.hmac_ok for r in receiver.requests)
    attempts = hooks.store.attempts(delivery.delivery_id)
    assert [a.status_code for a in attempts] == [500, 500, 500, 200]
    assert [a.number for a in attempts] == [1, 2, 3, 4]
    assert all(a.latency_ms > 0 for a in attempts)
    assert [a.error for a in attempts] == ["receiver answered 500"] * 3 + [None]


def test_a_delivery_fails_after_its_last_retry(hooks: Hooks, receiver: WebhookReceiver) -> None:
    receiver.refuse_first = 100
    endpoint_id = hooks.register(receiver, ["Prompt.VersionCommitted"])
    hooks.commit()
    [delivery] = hooks.settled(endpoint_id, 1, status="failed")
    assert len(hooks.store.attempts(delivery.delivery_id)) == 1 + len(RETRIES)
    assert delivery.next_attempt_at is None and delivery.last_status_code == 500


def test_410_fails_the_delivery_and_disables_the_endpoint(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    receiver.gone = True
    endpoint_id = hooks.register(receiver, ["Prompt.VersionCommitted"])
    hooks.commit()
    [delivery] = hooks.settled(endpoint_id, 1, status="failed")
    assert delivery.last_status_code == 410
    endpoint = hooks.services.app.webhook_endpoint(WS, endpoint_id)
    assert not endpoint.enabled and endpoint.disabled_reason == "receiver answered 410 Gone"
    last = hooks.services.app.recorder.select_events(endpoint.id, desc=True, limit=1)[0]
    assert last.topic.endswith("WebhookEndpoint.Disabled")
    # A disabled endpoint gets nothing more.
    hooks.commit("Answer kindly.")
    time.sleep(0.5)
    assert len(receiver.requests) == 1
    assert len(hooks.deliveries(endpoint_id)) == 1


def test_resend_starts_a_new_series_under_the_same_id(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    endpoint_id = hooks.register(receiver, ["Prompt.VersionCommitted"])
    hooks.commit()
    [delivery] = hooks.settled(endpoint_id, 1)
    workers = hooks.services.workers
    assert workers is not None
    from promptrecord.workers.webhook_runtime import resend

    again = resend(hooks.store, workers.webhook_queue, delivery.delivery_id)
    assert again is not None and again.series == 2 and again.status == "pending"
    second = receiver.wait_for(2)
    assert [r.webhook_id for r in second] == [delivery.delivery_id] * 2
    [done] = hooks.settled(endpoint_id, 1)
    assert done.series == 2
    assert [(a.number, a.series) for a in hooks.store.attempts(done.delivery_id)] == [
        (1, 1),
        (2, 2),
    ]


def test_rotation_overlap_signs_with_both_secrets(hooks: Hooks, receiver: WebhookReceiver) -> None:
    endpoint_id = hooks.register(receiver, ["Prompt.VersionCommitted"])
    old = receiver.secret
    new = new_webhook_secret()
    sealed = Sealer.from_settings(hooks.settings).seal(new)
    hooks.services.app.rotate_webhook_secret(WS, endpoint_id, sealed, timedelta(hours=1), TESTER)
    receiver.secret = new
    hooks.commit()
    [request] = receiver.wait_for(1)
    assert len(request.signatures) == 2
    assert request.standard_ok and request.hmac_ok  # the new secret: the current one
    assert verifies_standard(old, request.body, request.headers)
    # Each signature alone verifies with its own secret.
    for secret, signature in zip((new, old), request.signatures, strict=True):
        alone = {**request.headers, "webhook-signature": signature}
        assert verifies_standard(secret, request.body, alone)
        assert not verifies_standard(new if secret == old else old, request.body, alone)


def test_filters_choose_the_events(hooks: Hooks) -> None:
    with WebhookReceiver() as prompts, WebhookReceiver() as deployments:
        wanted = hooks.register(prompts, ["Prompt.VersionCommitted"])
        unwanted = hooks.register(deployments, ["Deployment.*"])
        hooks.commit()
        hooks.settled(wanted, 1)
        time.sleep(0.3)
        assert deployments.requests == [] and hooks.deliveries(unwanted) == []


@pytest.mark.parametrize("how", ["disable", "remove"])
def test_a_disabled_or_removed_endpoint_gets_nothing(
    hooks: Hooks, receiver: WebhookReceiver, how: str
) -> None:
    endpoint_id = hooks.register(receiver, ["Prompt.VersionCommitted"])
    app = hooks.services.app
    if how == "disable":
        app.disable_webhook(WS, endpoint_id, "maintenance", TESTER)
    else:
        app.remove_webhook(WS, endpoint_id, TESTER)
    with WebhookReceiver() as witness:
        other = hooks.register(witness, ["Prompt.VersionCommitted"])
        hooks.commit()
        hooks.settled(other, 1)  # the follower has passed the commit
    assert receiver.requests == [] and hooks.deliveries(endpoint_id) == []


def test_a_url_refused_at_delivery_is_not_posted(
    hooks: Hooks, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint_id = hooks.register(receiver, ["Prompt.VersionCommitted"])
    # The allow-list no longer covers the receiver, as when its name now resolves inside.
    monkeypatch.setattr(hooks.settings, "webhook_allow_hosts", "")
    hooks.commit()
    [delivery] = hooks.settled(endpoint_id, 1, status="failed")
    attempts = hooks.store.attempts(delivery.delivery_id)
    assert len(attempts) == 1 + len(RETRIES)
    assert all(a.status_code is None for a in attempts)
    assert all(a.error and a.error.startswith("not posted:") for a in attempts)
    assert "127.0.0.1" in (attempts[0].error or "")
    assert receiver.requests == []


def test_an_endpoint_gets_the_events_after_its_registration(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    before = hooks.commit("Before.")
    endpoint_id = hooks.register(receiver, ["*"])
    after = hooks.commit("After.")
    [delivery] = hooks.settled(endpoint_id, 1)
    assert delivery.event_id == after != before
    assert hooks.store.for_event(WS, before) == []
