"""`/v1/webhooks` over real HTTP on both backends: the secret is shown once, lists never show
it, roles, every bad input a problem naming its field, If-Match, and the event-type catalogue."""

from __future__ import annotations

from typing import Any

from promptrecord.api.event_catalog import DESCRIPTIONS, catalogue
from promptrecord.api.routes.events import event_types
from promptrecord.sealing import Sealer

HOOK = {"url": "https://93.184.215.14/hooks", "event_types": ["Deployment.*"]}


def register(api: Any, **body: Any) -> dict[str, Any]:
    response = api.admin.post("/v1/webhooks", json={**HOOK, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_the_secret_is_shown_once_and_sealed_in_the_log(api: Any) -> None:
    created = register(api, description="deploys")
    endpoint_id, secret = created["endpoint_id"], created["secret"]
    assert secret.startswith("whsec_") and created["revision"] == 1
    assert created["position"] is not None
    got = api.admin.get(f"/v1/webhooks/{endpoint_id}")
    assert got.status_code == 200 and got.headers["ETag"] == '"1"'
    assert "secret" not in got.text.lower().replace("previous_secret_valid_until", "")
    listed = api.admin.get("/v1/webhooks", params={"after": created["position"]})
    assert [i["endpoint_id"] for i in listed.json()["items"]] == [endpoint_id]
    assert secret not in listed.text and "whsec_" not in listed.text
    feed = api.admin.get("/v1/events", params={"types": "WebhookEndpoint.Registered"})
    assert secret not in feed.text and "sealed" not in feed.text
    endpoint = api.services.app.webhook_endpoint("acme", endpoint_id)
    assert Sealer.from_settings(api.services.settings).unseal(endpoint.sealed_secret) == secret


def test_rotate_update_disable_enable_delete(api: Any) -> None:
    created = register(api)
    path = f"/v1/webhooks/{created['endpoint_id']}"
    rotated = api.admin.post(path + "/rotate-secret", json={"overlap_hours": 2})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] not in (created["secret"], None)
    assert api.admin.get(path).json()["previous_secret_valid_until"] is not None
    stale = api.admin.patch(path, json={"event_types": ["*"]}, headers={"If-Match": '"1"'})
    api.assert_problem(stale, 409, "stale_revision")
    patched = api.admin.patch(path, json={"event_types": ["*"]}, headers={"If-Match": '"2"'})
    assert patched.status_code == 200 and patched.json()["event_types"] == ["*"]
    disabled = api.admin.post(path + "/disable", json={"reason": "maintenance"})
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "maintenance"
    assert api.admin.post(path + "/enable").json()["enabled"] is True
    assert api.admin.delete(path).status_code == 200
    api.assert_problem(api.admin.get(path), 404, "webhook_not_found")
    api.assert_problem(api.admin.delete(path), 404, "webhook_not_found")
    listed = api.admin.get("/v1/webhooks", params={"after": api.services.app.written})
    assert listed.json()["items"] == []


def test_roles(api: Any) -> None:
    created = register(api)
    path = f"/v1/webhooks/{created['endpoint_id']}"
    viewer, deployer = api.as_role("viewer"), api.as_role("deployer")
    assert viewer.get(path).status_code == 200
    assert viewer.get("/v1/webhooks").status_code == 200
    assert viewer.get("/v1/webhooks/event-types").status_code == 200
    api.assert_problem(deployer.post("/v1/webhooks", json=HOOK), 403, "role_required")
    api.assert_problem(deployer.post(path + "/rotate-secret"), 403, "role_required")
    api.assert_problem(deployer.delete(path), 403, "role_required")


def test_bad_input_is_a_problem_naming_the_field(api: Any) -> None:
    post = api.admin.post
    for url in (
        "http://10.0.0.5/",
        "http://169.254.169.254/",
        "ftp://x.example/",
        "http://a.invalid/",
    ):
        api.assert_problem(
            post("/v1/webhooks", json={**HOOK, "url": url}), 422, "webhook_url_refused", "body.url"
        )
    bad_type = post("/v1/webhooks", json={**HOOK, "event_types": ["Nope.Never"]})
    api.assert_problem(bad_type, 422, "unknown_event_type", "event_types[0]")
    api.assert_problem(
        post("/v1/webhooks", json={**HOOK, "event_types": []}), 422, "validation_failed",
        "body.event_types",
    )  # fmt: skip
    api.assert_problem(
        post("/v1/webhooks", json={**HOOK, "colour": 1}), 422, "validation_failed", "body.colour"
    )
    path = f"/v1/webhooks/{register(api)['endpoint_id']}"
    api.assert_problem(
        post(path + "/rotate-secret", json={"overlap_hours": 200}), 422, "validation_failed",
        "body.overlap_hours",
    )  # fmt: skip
    api.assert_problem(post(path + "/disable", json={}), 422, "validation_failed", "body.reason")
    api.assert_problem(
        api.admin.patch(path, json={"url": "http://[::ffff:10.0.0.1]/"}), 422,
        "webhook_url_refused", "body.url",
    )  # fmt: skip
    api.assert_problem(api.admin.get("/v1/webhooks/we_0000000000000000"), 404, "webhook_not_found")
    api.assert_problem(api.admin.get("/v1/webhooks/not-an-id"), 404, "route_not_found")


def test_loopback_is_allow_listed_in_the_tests(api: Any) -> None:
    created = register(api, url="http://127.0.0.1:9/hook")
    assert created["url"] == "http://127.0.0.1:9/hook"


def test_event_types_list_every_type_with_a_description(api: Any) -> None:
    assert set(DESCRIPTIONS) >= set(event_types()), "describe every event type"
    response = api.admin.get("/v1/webhooks/event-types")
    items = {i["type"]: i for i in response.json()["items"]}
    assert set(items) == set(event_types())
    assert items["Deployment.Promoted"]["fields"][:2] == ["version", "previous"]
    assert "sealed_secret" not in items["WebhookEndpoint.Registered"]["fields"]
    assert "actor" not in items["WebhookEndpoint.Registered"]["fields"]
    assert len(catalogue()) == len(items)
