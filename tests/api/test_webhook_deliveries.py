"""`/v1/webhooks/.../deliveries` over real HTTP: list per endpoint and per event, read one
with its attempts, resend; and the problems a caller can cause."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from support.eval_runs import TESTER, chat, wait_until
from support.webhooks import WebhookReceiver

from promptrecord.sealing import Sealer, new_webhook_secret

if TYPE_CHECKING:
    from tests.api.conftest import Api

WS = "acme"


@pytest.fixture
def receiver(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    # The `api` fixture allow-lists loopback and keeps the sealing key in the test's folder.
    monkeypatch.setattr(api.services.settings, "webhook_retry_schedule", [0.1])
    with WebhookReceiver(secret=new_webhook_secret()) as running:
        yield running


def _register(api: Api, receiver: WebhookReceiver) -> str:
    sealed = Sealer.from_settings(api.services.settings).seal(receiver.secret)
    result = api.services.app.register_webhook(
        WS, receiver.url, ["Prompt.VersionCommitted"], None, sealed, TESTER
    )
    endpoint_id: str = result.value
    return endpoint_id


def _commit(api: Api, count: int) -> None:
    app = api.services.app
    app.create_prompt(WS, TESTER, name="support")
    for n in range(count):
        app.commit_version(WS, "support", chat("openai", "gpt-4o-mini", f"Answer {n}."), TESTER)
    if api.services.workers is not None:
        api.services.workers.nudge()


def _listed(api: Api, endpoint_id: str, **params: str) -> dict[str, object]:
    response = api.admin.get(f"/v1/webhooks/{endpoint_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_deliveries_are_listed_read_and_resent(api: Api, receiver: WebhookReceiver) -> None:
    receiver.refuse_first = 1  # the first delivery's first attempt fails, then all succeed
    endpoint_id = _register(api, receiver)
    _commit(api, 3)
    receiver.wait_for(3)

    def all_delivered() -> bool:
        items = _listed(api, endpoint_id)["items"]
        assert isinstance(items, list)
        return len(items) == 3 and all(i["status"] == "delivered" for i in items)

    wait_until(all_delivered, 20, "three deliveries delivered")
    first = _listed(api, endpoint_id, limit="2")
    items = first["items"]
    assert isinstance(items, list) and len(items) == 2 and first["next_cursor"]
    rest = _listed(api, endpoint_id, limit="2", cursor=str(first["next_cursor"]))
    assert isinstance(rest["items"], list) and len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    positions = [i["position"] for i in items] + [i["position"] for i in rest["items"]]
    assert positions == sorted(positions, reverse=True)
    assert _listed(api, endpoint_id, status="failed")["items"] == []

    oldest = rest["items"][0]
    details = [api.admin.get(f"/v1/webhooks/deliveries/{i['id']}").json() for i in items]
    details.append(api.admin.get(f"/v1/webhooks/deliveries/{oldest['id']}").json())
    assert details[-1]["body"]["id"] == oldest["event_id"]
    assert details[-1]["body"]["type"] == "Prompt.VersionCommitted"
    # Deliveries go out side by side: whichever came first was refused once.
    codes = sorted([a["status_code"] for a in d["attempts"]] for d in details)
    assert codes == [[200], [200], [500, 200]]
    refused = next(d for d in details if len(d["attempts"]) == 2)
    assert refused["attempts"][0]["error"] == "receiver answered 500"
    assert refused["attempts"][1]["latency_ms"] > 0

    by_event = api.admin.get("/v1/webhooks/deliveries", params={"event_id": oldest["event_id"]})
    assert [d["id"] for d in by_event.json()["items"]] == [oldest["id"]]

    resent = api.admin.post(f"/v1/webhooks/deliveries/{oldest['id']}/resend")
    assert resent.status_code == 202, resent.text
    assert resent.json()["series"] == 2
    again = receiver.wait_for(4)
    assert again[-1].webhook_id == oldest["id"] and again[-1].standard_ok and again[-1].hmac_ok


def test_problems(api: Api, receiver: WebhookReceiver) -> None:
    endpoint_id = _register(api, receiver)
    _commit(api, 1)
    [request] = receiver.wait_for(1)
    api.assert_problem(
        api.admin.get("/v1/webhooks/deliveries/msg_" + "0" * 32),
        404,
        "webhook_delivery_not_found",
        "delivery_id",
    )
    api.assert_problem(
        api.admin.get("/v1/webhooks/deliveries/nope"), 404, "webhook_delivery_not_found"
    )
    api.assert_problem(
        api.admin.get("/v1/webhooks/deliveries", params={"event_id": "x"}),
        422,
        "invalid_input",
        "query.event_id",
    )
    api.assert_problem(
        api.admin.get("/v1/webhooks/we_0000000000000000/deliveries"), 404, "webhook_not_found"
    )
    bad_status = api.admin.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"status": "x"})
    assert bad_status.status_code == 422 and bad_status.headers["content-type"] == api.PROBLEM
    editor = api.as_role("editor", "ed")
    forbidden = editor.post(f"/v1/webhooks/deliveries/{request.webhook_id}/resend")
    assert forbidden.status_code == 403
    assert editor.get(f"/v1/webhooks/deliveries/{request.webhook_id}").status_code == 200
