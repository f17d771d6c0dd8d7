"""Webhook endpoints on both backends: what each command writes, every refusal (writing
nothing), the rotation overlap, and sealing of secrets."""

from __future__ import annotations

import base64
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from support.refusals import log_end, refused

from promptrecord.domain.errors import Conflict, InvalidInput, NotFound
from promptrecord.domain.webhooks import (
    ENDPOINT_ID,
    WebhookEndpoint,
    filter_matches,
    known_event_types,
)
from promptrecord.sealing import Sealer, SealingError, new_webhook_secret, secret_bytes
from promptrecord.settings import Settings

WS = "acme"
URL = "https://hooks.example.com/promptrecord"


def register(record: Any, event_types: list[str] | None = None, sealed: str = "sealed-1") -> str:
    result = record.app.register_webhook(
        WS, URL, event_types or ["Deployment.*"], "deploys to slack", sealed, record.alice
    )
    endpoint_id: str = result.value
    return endpoint_id


def test_register_writes_one_event_with_every_field(record: Any) -> None:
    result = record.app.register_webhook(
        WS,
        URL,
        ["Deployment.Promoted", "TenantPin.*", "Deployment.Promoted"],
        "  ",
        "sealed-1",
        record.alice,
    )
    assert ENDPOINT_ID.match(result.value)
    assert result.position == log_end(record) and result.revision == 1
    _, event = record.events()[-1]
    assert type(event).__qualname__ == "WebhookEndpoint.Registered"
    assert (event.workspace, event.endpoint_id, event.url) == (WS, result.value, URL)
    assert event.event_types == ["Deployment.Promoted", "TenantPin.*"]  # once each, in order
    assert event.description is None  # blank means none
    assert event.sealed_secret == "sealed-1"
    assert event.actor == record.alice.as_dict()
    assert event.timestamp == record.clock.now
    endpoint = record.app.webhook_endpoint(WS, result.value)
    assert endpoint.id == WebhookEndpoint.create_id(WS, result.value)
    assert (endpoint.enabled, endpoint.removed, endpoint.disabled_reason) == (True, False, None)
    assert endpoint.signing_secrets(record.clock.now) == ["sealed-1"]


def test_register_refusals_name_the_field_and_write_nothing(record: Any) -> None:
    app, alice = record.app, record.alice
    error = refused(
        record,
        InvalidInput,
        "unknown_event_type",
        app.register_webhook,
        WS,
        URL,
        ["Deployment.Promoted", "Deployment.Promotd"],
        None,
        "s",
        alice,
    )
    assert error.field == "event_types[1]"
    for bad in (["Nothing.*"], ["deployment.promoted"], ["Deployment"], ["**"]):
        error = refused(
            record, InvalidInput, "unknown_event_type", app.register_webhook, WS, URL, bad, None,
            "s", alice,
        )  # fmt: skip
        assert error.field == "event_types[0]"
    error = refused(
        record, InvalidInput, "invalid_input", app.register_webhook, WS, URL, [], None, "s", alice
    )
    assert error.field == "event_types"
    for url in ("ftp://example.com/", "example.com/hook", "javascript:alert(1)"):
        error = refused(
            record, InvalidInput, "webhook_url_refused", app.register_webhook, WS, url, ["*"],
            None, "s", alice,
        )  # fmt: skip
        assert error.field == "url"
    error = refused(
        record, InvalidInput, "invalid_input", app.register_webhook, WS, "https://x/" + "a" * 2048,
        ["*"], None, "s", alice,
    )  # fmt: skip
    assert error.field == "url"
    error = refused(
        record, InvalidInput, "invalid_input", app.register_webhook, WS, URL, ["*"], "d" * 501,
        "s", alice,
    )  # fmt: skip
    assert error.field == "description"
    refused(
        record, NotFound, "workspace_not_found", app.register_webhook, "nope", URL, ["*"], None,
        "s", alice,
    )  # fmt: skip


def test_known_event_types_and_filters() -> None:
    known = known_event_types()
    assert "Deployment.Promoted" in known and "WebhookEndpoint.Registered" in known
    assert "ChainedAggregate.Created" not in known and "Prompt.Event" not in known
    assert filter_matches(["*"], "Prompt.Created")
    assert filter_matches(["Deployment.*"], "Deployment.RolledBack")
    assert filter_matches(["Deployment.Promoted"], "Deployment.Promoted")
    assert not filter_matches(["Deployment.Promoted"], "Deployment.RolledBack")
    assert not filter_matches(["Deployment.*"], "TenantPin.Pinned")


def test_rotation_keeps_the_previous_secret_for_the_overlap(record: Any) -> None:
    endpoint_id = register(record)
    start = record.clock.now
    result = record.app.rotate_webhook_secret(
        WS, endpoint_id, "sealed-2", timedelta(hours=24), record.bob
    )
    assert result.revision == 2 and result.value == endpoint_id
    _, event = record.events()[-1]
    assert type(event).__qualname__ == "WebhookEndpoint.SecretRotated"
    assert event.sealed_secret == "sealed-2"
    assert event.previous_valid_until == start + timedelta(hours=24)
    endpoint = record.app.webhook_endpoint(WS, endpoint_id)
    assert endpoint.signing_secrets(start) == ["sealed-2", "sealed-1"]
    almost = start + timedelta(hours=24) - timedelta(microseconds=1)
    assert endpoint.signing_secrets(almost) == ["sealed-2", "sealed-1"]
    assert endpoint.signing_secrets(start + timedelta(hours=24)) == ["sealed-2"]

    # A second rotation within the overlap: the first secret stops at once.
    record.clock.advance(3600)
    record.app.rotate_webhook_secret(WS, endpoint_id, "sealed-3", timedelta(hours=1), record.bob)
    endpoint = record.app.webhook_endpoint(WS, endpoint_id)
    assert endpoint.signing_secrets(record.clock.now) == ["sealed-3", "sealed-2"]

    # No overlap: only the new one signs.
    record.app.rotate_webhook_secret(WS, endpoint_id, "sealed-4", timedelta(0), record.bob)
    endpoint = record.app.webhook_endpoint(WS, endpoint_id)
    assert endpoint.signing_secrets(record.clock.now) == ["sealed-4"]


def test_rotation_refusals(record: Any) -> None:
    endpoint_id = register(record)
    rotate = record.app.rotate_webhook_secret
    for overlap in (timedelta(hours=169), timedelta(seconds=-1)):
        error = refused(
            record, InvalidInput, "invalid_input", rotate, WS, endpoint_id, "s2", overlap,
            record.bob,
        )  # fmt: skip
        assert error.field == "overlap_hours"
    error = refused(
        record, Conflict, "stale_revision", rotate, WS, endpoint_id, "s2", timedelta(hours=1),
        record.bob, expected_revision=7,
    )  # fmt: skip
    assert error.extra["current_revision"] == 1
    error = refused(
        record, InvalidInput, "invalid_input", rotate, WS, endpoint_id, "", timedelta(0),
        record.bob,
    )  # fmt: skip
    assert error.field == "sealed_secret"


def test_update_changes_only_what_is_given(record: Any) -> None:
    endpoint_id = register(record)
    result = record.app.update_webhook(
        WS, endpoint_id, record.bob, event_types=["*"], expected_revision=1
    )
    assert result.revision == 2
    _, event = record.events()[-1]
    assert type(event).__qualname__ == "WebhookEndpoint.Updated"
    assert (event.url, event.event_types, event.description) == (URL, ["*"], "deploys to slack")
    # nothing changes: nothing written
    before = log_end(record)
    same = record.app.update_webhook(WS, endpoint_id, record.bob, url=URL)
    assert (same.position, same.revision) == (None, 2) and log_end(record) == before
    # an empty description clears it
    record.app.update_webhook(WS, endpoint_id, record.bob, description="", url=URL + "/v2")
    endpoint = record.app.webhook_endpoint(WS, endpoint_id)
    assert (endpoint.url, endpoint.description) == (URL + "/v2", None)
    refused(
        record, Conflict, "stale_revision", record.app.update_webhook, WS, endpoint_id,
        record.bob, url=URL, expected_revision=2,
    )  # fmt: skip
    error = refused(
        record, InvalidInput, "unknown_event_type", record.app.update_webhook, WS, endpoint_id,
        record.bob, event_types=["Nope.Nope"],
    )  # fmt: skip
    assert error.field == "event_types[0]"


def test_disable_enable_are_idempotent_and_filter_deliveries(record: Any) -> None:
    endpoint_id = register(record, ["Deployment.*"])
    app = record.app
    refused(
        record, InvalidInput, "invalid_input", app.disable_webhook, WS, endpoint_id, " ", record.bob
    )
    first = app.disable_webhook(WS, endpoint_id, "receiver answered 410 Gone", record.bob)
    assert first.position is not None
    again = app.disable_webhook(WS, endpoint_id, "receiver answered 410 Gone", record.bob)
    assert again.position is None and again.revision == first.revision
    endpoint = app.webhook_endpoint(WS, endpoint_id)
    assert not endpoint.enabled and endpoint.disabled_reason == "receiver answered 410 Gone"
    assert not endpoint.subscribes_to("Deployment.Promoted")
    enabled = app.enable_webhook(WS, endpoint_id, record.bob)
    assert enabled.position is not None
    assert app.enable_webhook(WS, endpoint_id, record.bob).position is None
    endpoint = app.webhook_endpoint(WS, endpoint_id)
    assert endpoint.enabled and endpoint.disabled_reason is None
    assert endpoint.subscribes_to("Deployment.Promoted")
    assert not endpoint.subscribes_to("Prompt.Created")
    names = record.event_names()[-2:]
    assert names == ["WebhookEndpoint.Disabled", "WebhookEndpoint.Enabled"]


def test_removed_endpoints_stay_loadable_but_refuse_commands(record: Any) -> None:
    endpoint_id = register(record)
    app = record.app
    app.remove_webhook(WS, endpoint_id, record.bob)
    endpoint = app.webhook_endpoint(WS, endpoint_id)  # the worker still sees it, removed
    assert endpoint.removed and not endpoint.enabled
    assert not endpoint.subscribes_to("Deployment.Promoted")
    for call, args in (
        (app.remove_webhook, (WS, endpoint_id, record.bob)),
        (app.enable_webhook, (WS, endpoint_id, record.bob)),
        (app.disable_webhook, (WS, endpoint_id, "x", record.bob)),
        (app.update_webhook, (WS, endpoint_id, record.bob)),
        (app.rotate_webhook_secret, (WS, endpoint_id, "s", timedelta(0), record.bob)),
    ):
        error = refused(record, NotFound, "webhook_not_found", call, *args)
        assert error.field == "endpoint_id"


def test_unknown_endpoints_are_not_found(record: Any) -> None:
    for endpoint_id in ("we_0000000000000000", "../etc", "we_XYZ", ""):
        with pytest.raises(NotFound) as caught:
            record.app.webhook_endpoint(WS, endpoint_id)
        assert caught.value.code == "webhook_not_found"
    endpoint_id = register(record)
    with pytest.raises(NotFound):
        record.app.webhook_endpoint("other", endpoint_id)  # another workspace's id


# --- sealing -------------------------------------------------------------------------------


def test_secrets_have_the_standard_webhooks_form() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(secret_bytes(secret)) == 24
    assert base64.b64encode(secret_bytes(secret)).decode() == secret.removeprefix("whsec_")
    assert new_webhook_secret() != secret


def test_seal_round_trip_and_a_wrong_key_fails() -> None:
    key = Fernet.generate_key().decode()
    sealer = Sealer.from_settings(Settings(secret_key=key))
    secret = new_webhook_secret()
    sealed = sealer.seal(secret)
    assert secret not in sealed and secret_bytes(secret).hex() not in sealed
    assert sealer.unseal(sealed) == secret
    other = Sealer.from_settings(Settings(secret_key=Fernet.generate_key().decode()))
    with pytest.raises(SealingError, match="does not open"):
        other.unseal(sealed)
    with pytest.raises(SealingError):
        sealer.unseal("not a token")


def test_the_secret_key_can_be_rotated() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = Sealer.from_settings(Settings(secret_key=old)).seal("whsec_a")
    both = Sealer.from_settings(Settings(secret_key=f"{new}, {old}"))
    assert both.unseal(sealed) == "whsec_a"
    resealed = both.seal("whsec_b")
    assert Sealer.from_settings(Settings(secret_key=new)).unseal(resealed) == "whsec_b"


def test_a_malformed_key_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(SealingError, match=r"Fernet\.generate_key"):
        Sealer.from_settings(Settings(secret_key="hunter2"))


def test_the_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "secret.key"
    settings = Settings(secret_key_file=path)
    sealed = Sealer.from_settings(settings).seal("whsec_x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Sealer.from_settings(settings).unseal(sealed) == "whsec_x"
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # nothing left aside
    path.write_text(Fernet.generate_key().decode())
    with pytest.raises(SealingError):
        Sealer.from_settings(settings).unseal(sealed)
