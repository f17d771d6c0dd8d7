"""Webhook endpoints: register (the secret is shown once), list, read, change, rotate the
secret, disable, enable, delete; and the catalogue of event types they can subscribe to."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path as FilePath
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor

from promptrecord.api.commands import etag, settle
from promptrecord.api.deps import Admin, ExpectedRevision, ServicesDep, Viewer, Views
from promptrecord.api.event_catalog import catalogue
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import problem_responses
from promptrecord.api.schemas import (
    ActorOut,
    CommandResponse,
    RequestBody,
    RequiredReasonBody,
    Text,
)
from promptrecord.api.services import Services
from promptrecord.domain.app_base import CommandResult
from promptrecord.domain.webhooks import MAX_DESCRIPTION, MAX_URL_LENGTH, WebhookEndpoint
from promptrecord.sealing import Sealer, new_webhook_secret
from promptrecord.workers.webhook_urls import check_url


class EndpointIdConvertor(Convertor[str]):
    """`we_<16 hex>` only, so `/v1/webhooks/event-types` and `/v1/webhooks/deliveries` are
    never taken for an endpoint id."""

    regex = "we_[0-9a-f]{16}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("webhook_endpoint_id", EndpointIdConvertor())
ENDPOINT = "/{endpoint_id:webhook_endpoint_id}"

router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], responses=problem_responses(401, 403, 422)
)

_EXAMPLE: dict[str, Any] = {
    "url": "https://hooks.example.com/promptrecord",
    "event_types": ["Deployment.*", "Prompt.VersionCommitted"],
    "description": "deploys to the #releases channel",
}


class WebhookIn(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    url: Text = Field(max_length=MAX_URL_LENGTH, description="http(s) URL events are posted to")
    event_types: list[Text] = Field(
        min_length=1,
        max_length=100,
        description="Event types (GET /v1/webhooks/event-types), patterns such as "
        "'Deployment.*', or '*' for every event",
    )
    description: Text | None = Field(default=None, max_length=MAX_DESCRIPTION)


class WebhookPatch(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"event_types": ["*"]}]})

    url: Text | None = Field(default=None, max_length=MAX_URL_LENGTH)
    event_types: list[Text] | None = Field(default=None, min_length=1, max_length=100)
    description: Text | None = Field(
        default=None, max_length=MAX_DESCRIPTION, description="'' clears it"
    )


class RotateIn(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"overlap_hours": 24}]})

    overlap_hours: float = Field(
        default=24,
        ge=0,
        le=168,
        description="Hours the previous secret keeps signing beside the new one (0..168)",
    )


class WebhookOut(BaseModel):
    endpoint_id: str = Field(examples=["we_3f2a9c0d1e4b5a69"])
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_by: ActorOut
    created_at: datetime
    updated_at: datetime
    previous_secret_valid_until: datetime | None = Field(
        default=None, description="While a rotation's overlap lasts: when the old secret stops"
    )
    revision: int = Field(description="The ETag; send it as If-Match to change the endpoint")


class WebhookWritten(CommandResponse, WebhookOut):
    pass


class WebhookCreated(WebhookWritten):
    secret: str = Field(
        description="The signing secret (whsec_…); shown in this response only, never again",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class SecretRotated(CommandResponse):
    endpoint_id: str
    secret: str = Field(description="The new signing secret; shown in this response only")
    previous_valid_until: datetime = Field(description="When the previous secret stops signing")


class EventTypeOut(BaseModel):
    type: str = Field(examples=["Deployment.Promoted"])
    description: str = Field(description="When it happens")
    fields: list[str] = Field(description="The fields of its `data`")


class EventTypeList(BaseModel):
    items: list[EventTypeOut]


_sealers: dict[tuple[str, FilePath], Sealer] = {}
_sealers_lock = threading.Lock()


def sealer(services: Services) -> Sealer:
    """One sealer per configured key (reading a key file on every request is wasteful)."""
    settings = services.settings
    key = settings.secret_key.get_secret_value() if settings.secret_key is not None else ""
    with _sealers_lock:
        found = _sealers.get((key, settings.secret_key_file))
        if found is None:
            found = _sealers[(key, settings.secret_key_file)] = Sealer.from_settings(settings)
        return found


def _out(endpoint: WebhookEndpoint, now: datetime) -> dict[str, Any]:
    overlapping = len(endpoint.signing_secrets(now)) > 1
    return {
        "endpoint_id": endpoint.endpoint_id,
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "created_by": ActorOut(**endpoint.created_by),
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "previous_secret_valid_until": endpoint.previous_valid_until if overlapping else None,
        "revision": endpoint.version,
    }


def _written(
    services: Services, response: Response, result: CommandResult, workspace: str
) -> WebhookWritten:
    settle(services, response, result)
    endpoint = services.app.webhook_endpoint(workspace, result.value)
    return WebhookWritten(
        position=result.position,
        revision=result.revision,
        **{k: v for k, v in _out(endpoint, services.app.clock()).items() if k != "revision"},
    )


@router.get(
    "/event-types",
    response_model=EventTypeList,
    summary="Every event type an endpoint can subscribe to, when it happens, its data fields",
)
def list_event_types(caller: Viewer) -> EventTypeList:
    return EventTypeList(
        items=[
            EventTypeOut(type=i.type, description=i.description, fields=i.fields)
            for i in catalogue()
        ]
    )


@router.post(
    "",
    response_model=WebhookCreated,
    status_code=201,
    summary="Register an endpoint (its signing secret is in this response only)",
)
def register_webhook(
    body: WebhookIn, caller: Admin, services: ServicesDep, response: Response
) -> WebhookCreated:
    check_url(body.url, services.settings, field="body.url")
    secret = new_webhook_secret()
    result = services.app.register_webhook(
        caller.workspace,
        body.url,
        list(body.event_types),
        body.description,
        sealer(services).seal(secret),
        caller.actor,
    )
    written = _written(services, response, result, caller.workspace)
    response.headers["Location"] = f"/v1/webhooks/{result.value}"
    return WebhookCreated(**written.model_dump(), secret=secret)


@router.get("", response_model=Page[WebhookOut], summary="Endpoints of the workspace (no secrets)")
def list_webhooks(caller: Viewer, views: Views, paging: Paging) -> Page[WebhookOut]:
    fetched = views.webhook_endpoints(caller.workspace, paging.limit + 1, paging.after_name())
    chosen, cursor = paging.page(fetched, lambda entry: entry.endpoint_id)
    items = [
        WebhookOut(
            endpoint_id=e.endpoint_id,
            url=e.url,
            event_types=list(e.event_types),
            description=e.description,
            enabled=e.enabled,
            disabled_reason=e.disabled_reason,
            created_by=ActorOut(**e.created_by),
            created_at=e.created_at,
            updated_at=e.updated_at,
            revision=e.revision,
        )
        for e in chosen
    ]
    return Page[WebhookOut](items=items, next_cursor=cursor)


@router.get(
    ENDPOINT,
    response_model=WebhookOut,
    summary="One endpoint (no secret)",
    responses=problem_responses(404),
)
def get_webhook(
    endpoint_id: str, caller: Viewer, services: ServicesDep, response: Response
) -> WebhookOut:
    endpoint = services.app.webhook_endpoint(caller.workspace, endpoint_id)
    endpoint.require_present()
    response.headers["ETag"] = etag(endpoint.version)
    return WebhookOut(**_out(endpoint, services.app.clock()))


@router.patch(
    ENDPOINT,
    response_model=WebhookWritten,
    summary="Change the URL, event types or description (If-Match: the revision you read)",
    responses=problem_responses(404, 409),
)
def update_webhook(
    endpoint_id: str,
    body: WebhookPatch,
    caller: Admin,
    services: ServicesDep,
    response: Response,
    expected: ExpectedRevision,
) -> WebhookWritten:
    if body.url is not None:
        check_url(body.url, services.settings, field="body.url")
    result = services.app.update_webhook(
        caller.workspace,
        endpoint_id,
        caller.actor,
        url=body.url,
        event_types=list(body.event_types) if body.event_types is not None else None,
        description=body.description,
        expected_revision=expected,
    )
    return _written(services, response, result, caller.workspace)


@router.post(
    ENDPOINT + "/rotate-secret",
    response_model=SecretRotated,
    summary="Rotate the signing secret; the old one keeps signing for overlap_hours",
    responses=problem_responses(404, 409),
)
def rotate_secret(
    endpoint_id: str,
    caller: Admin,
    services: ServicesDep,
    response: Response,
    expected: ExpectedRevision,
    body: RotateIn | None = None,
) -> SecretRotated:
    overlap = timedelta(hours=(body or RotateIn()).overlap_hours)
    secret = new_webhook_secret()
    result = services.app.rotate_webhook_secret(
        caller.workspace,
        endpoint_id,
        sealer(services).seal(secret),
        overlap,
        caller.actor,
        expected,
    )
    settle(services, response, result)
    endpoint = services.app.webhook_endpoint(caller.workspace, endpoint_id)
    assert endpoint.previous_valid_until is not None
    return SecretRotated(
        position=result.position,
        revision=result.revision,
        endpoint_id=endpoint_id,
        secret=secret,
        previous_valid_until=endpoint.previous_valid_until,
    )


@router.post(
    ENDPOINT + "/disable",
    response_model=WebhookWritten,
    summary="Stop deliveries to the endpoint (nothing is written if it is already disabled)",
    responses=problem_responses(404, 409),
)
def disable_webhook(
    endpoint_id: str,
    body: RequiredReasonBody,
    caller: Admin,
    services: ServicesDep,
    response: Response,
    expected: ExpectedRevision,
) -> WebhookWritten:
    result = services.app.disable_webhook(
        caller.workspace, endpoint_id, body.reason, caller.actor, expected
    )
    return _written(services, response, result, caller.workspace)


@router.post(
    ENDPOINT + "/enable",
    response_model=WebhookWritten,
    summary="Resume deliveries to the endpoint",
    responses=problem_responses(404, 409),
)
def enable_webhook(
    endpoint_id: str,
    caller: Admin,
    services: ServicesDep,
    response: Response,
    expected: ExpectedRevision,
) -> WebhookWritten:
    result = services.app.enable_webhook(caller.workspace, endpoint_id, caller.actor, expected)
    return _written(services, response, result, caller.workspace)


class WebhookRemoved(CommandResponse):
    endpoint_id: str
    removed: bool = True


@router.delete(
    ENDPOINT,
    response_model=WebhookRemoved,
    summary="Delete the endpoint: it receives nothing more; its history stays in the log",
    responses=problem_responses(404, 409),
)
def remove_webhook(
    endpoint_id: str,
    caller: Admin,
    services: ServicesDep,
    response: Response,
    expected: ExpectedRevision,
) -> WebhookRemoved:
    result = services.app.remove_webhook(caller.workspace, endpoint_id, caller.actor, expected)
    settle(services, response, result)
    return WebhookRemoved(
        position=result.position, revision=result.revision, endpoint_id=endpoint_id
    )
