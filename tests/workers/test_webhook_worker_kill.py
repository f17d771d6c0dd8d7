"""`promptrecord worker` against PostgreSQL and Redis, SIGKILLed while a receiver holds its
webhook POST open: a new worker delivers every event at least once, each under one
`webhook-id` however many times it was posted."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from support.eval_runs import TESTER, WS, chat, wait_until
from support.processes import Processes, cli_env
from support.webhooks import WebhookReceiver

from promptrecord.domain.application import PromptRecord
from promptrecord.sealing import Sealer, new_webhook_secret
from promptrecord.settings import Settings
from promptrecord.workers.webhook_store import open_webhook_store

EVENTS = 6


def test_deliveries_survive_their_worker_being_killed(
    postgres_settings: Settings, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    key = Fernet.generate_key().decode()
    env = cli_env(
        postgres_settings,
        redis_url,
        namespace,
        PROMPTRECORD_SECRET_KEY=key,
        PROMPTRECORD_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
        PROMPTRECORD_WEBHOOK_POLL_INTERVAL="0.05",
        PROMPTRECORD_WEBHOOK_RETRY_SCHEDULE="[0.2, 0.2, 0.2, 0.2, 0.2]",
        PROMPTRECORD_WEBHOOK_REQUEUE_AFTER="3",
        PROMPTRECORD_EVAL_LEASE_SECONDS="2",
        PROMPTRECORD_RECONCILE_INTERVAL="0.3",
    )
    settings = postgres_settings.model_copy(update={"secret_key": SecretStr(key)})
    app = PromptRecord(env=settings.eventsourcing_env())
    store = open_webhook_store(settings)
    processes = Processes(env, tmp_path)
    hold = threading.Event()
    receiver = WebhookReceiver(secret=new_webhook_secret(), hold=hold).start()
    try:
        app.create_workspace(WS, "Acme")
        app.create_prompt(WS, TESTER, name="support")
        sealed = Sealer.from_settings(settings).seal(receiver.secret)
        endpoint_id = app.register_webhook(
            WS, receiver.url, ["Prompt.VersionCommitted"], None, sealed, TESTER
        ).value
        processes.start("projector", "projector", "--poll-interval", "0.2")
        first = processes.start("worker", "worker", "--threads", "2")
        for n in range(EVENTS):
            app.commit_version(WS, "support", chat("openai", "m", f"Answer {n}."), TESTER)
        try:
            wait_until(lambda: len(receiver.requests) >= 1, 60, "a POST held by the receiver")
        except AssertionError:
            pytest.fail(f"nothing posted\n{processes.output()}")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        held = {r.webhook_id for r in receiver.requests}
        hold.set()  # the killed worker's POSTs are answered to no one
        assert store.for_endpoint(WS, endpoint_id, status="delivered") == []

        processes.start("worker", "worker", "--threads", "2")

        def all_delivered() -> bool:
            found = store.for_endpoint(WS, endpoint_id)
            return len(found) == EVENTS and all(d.status == "delivered" for d in found)

        try:
            wait_until(all_delivered, 60, "every delivery delivered")
        except AssertionError:
            pytest.fail(f"not all delivered\n{processes.output()}")
        deliveries = store.for_endpoint(WS, endpoint_id)
        ids = {d.delivery_id for d in deliveries}
        assert len(ids) == EVENTS == len({d.event_id for d in deliveries})
        # Every request carried one of the deliveries' ids and verified both ways.
        assert {r.webhook_id for r in receiver.requests} == ids
        assert all(r.standard_ok and r.hmac_ok for r in receiver.requests)
        # What the killed worker was posting was posted again under the same id.
        for webhook_id in held:
            posts = [r for r in receiver.requests if r.webhook_id == webhook_id]
            assert len(posts) >= 2
            assert len({r.body for r in posts}) == 1
    finally:
        hold.set()
        processes.stop_all()
        receiver.stop()
        store.close()
        app.close()
    assert processes.exit_codes(but=first) == [("projector", 0), ("worker", 0)], processes.output()
