"""HTTP behaviour shared by every route: idempotency, problems, OpenAPI, health."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI

from promptrecord.api.app import create_app
from promptrecord.settings import Settings

if TYPE_CHECKING:
    from tests.api.conftest import Api


def test_idempotency_key_replays_and_refuses_reuse(api: Api) -> None:
    headers = {"Idempotency-Key": "create-bot-1"}
    body = {"name": "bot", "content": api.content()}
    first = api.admin.post("/v1/prompts", json=body, headers=headers)
    assert first.status_code == 201 and "idempotency-replayed" not in first.headers
    again = api.admin.post("/v1/prompts", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotency-replayed"] == "true"
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert len(api.admin.get("/v1/prompts").json()["items"]) == 1

    other = api.admin.post(
        "/v1/prompts", json={"name": "other", "content": api.content()}, headers=headers
    )
    api.assert_problem(other, 422, "idempotency_key_reused", "Idempotency-Key")
    elsewhere = api.admin.post(
        "/v1/prompts/bot/versions", json={"content": api.content("v2")}, headers=headers
    )
    api.assert_problem(elsewhere, 422, "idempotency_key_reused", "Idempotency-Key")

    # Refusals are replayed too: the retry of a failed command fails the same way.
    conflict = api.admin.post("/v1/prompts", json=body, headers={"Idempotency-Key": "create-bot-2"})
    api.assert_problem(conflict, 409, "prompt_exists")
    replayed = api.admin.post("/v1/prompts", json=body, headers={"Idempotency-Key": "create-bot-2"})
    assert replayed.content == conflict.content
    assert replayed.headers["idempotency-replayed"] == "true"
    assert replayed.headers["content-type"] == api.PROBLEM

    # Keys are scoped to the API key: another caller's same key is another request.
    editor = api.as_role("editor")
    mine = editor.post(
        "/v1/prompts", json={"name": "mine", "content": api.content()}, headers=headers
    )
    assert mine.status_code == 201 and "idempotency-replayed" not in mine.headers

    too_long = api.admin.post("/v1/prompts", json=body, headers={"Idempotency-Key": "k" * 256})
    api.assert_problem(too_long, 400, "invalid_idempotency_key", "Idempotency-Key")


def test_idempotency_key_while_the_first_request_runs(api: Api) -> None:
    raw = json.dumps({"name": "bot", "content": api.content()}).encode()
    scope = hashlib.sha256(f"Bearer {api.admin_token}".encode()).hexdigest()
    fingerprint = hashlib.sha256(b"\n".join([b"POST", b"/v1/prompts", b"", raw])).hexdigest()
    claim = api.services.idempotency.reserve(scope, "busy", fingerprint, time.time())
    assert claim.outcome == "reserved"
    response = api.admin.post(
        "/v1/prompts",
        content=raw,
        headers={"Idempotency-Key": "busy", "Content-Type": "application/json"},
    )
    api.assert_problem(response, 409, "idempotency_in_progress", "Idempotency-Key")
    assert response.headers["retry-after"] == "1"


def test_malformed_requests_get_problems(api: Api) -> None:
    malformed = api.admin.post(
        "/v1/prompts", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    api.assert_problem(malformed, 400, "malformed_json", "body")
    not_object = api.admin.post("/v1/prompts", json=["bot"])
    api.assert_problem(not_object, 422, "validation_failed", "body")
    api.assert_problem(api.admin.get("/v1/nothing-here"), 404, "route_not_found")
    wrong_method = api.admin.delete("/v1/prompts")
    api.assert_problem(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["allow"]
    bad_env = api.admin.post(
        "/v1/workspace/environments",
        json={"environments": ["development", "staging", "production", "a b"]},
    )
    api.assert_problem(bad_env, 422, "invalid_input", "environments")


def test_workspace_environments(api: Api) -> None:
    workspace = api.admin.get("/v1/workspace")
    assert workspace.status_code == 200
    data = workspace.json()
    assert data["slug"] == "acme" and data["environments"] == [
        "development",
        "staging",
        "production",
    ]
    assert workspace.headers["etag"] == f'"{data["revision"]}"'
    wider = ["development", "staging", "canary", "production"]
    changed = api.admin.post(
        "/v1/workspace/environments",
        json={"environments": wider},
        headers={"If-Match": workspace.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["environments"] == wider
    assert api.admin.get("/v1/workspace").json()["environments"] == wider
    stale = api.admin.post(
        "/v1/workspace/environments",
        json={"environments": wider},
        headers={"If-Match": workspace.headers["etag"]},
    )
    api.assert_problem(stale, 409, "stale_revision")
    api.assert_problem(
        api.admin.post("/v1/workspace/environments", json={"environments": ["production"]}),
        409,
        "environment_removed",
        "environments",
    )
    api.assert_problem(
        api.as_role("deployer").post("/v1/workspace/environments", json={"environments": wider}),
        403,
        "role_required",
    )
    stale_policy = api.admin.post(
        "/v1/workspace/policies/canary",
        json={"four_eyes": True},
        headers={"If-Match": workspace.headers["etag"]},
    )
    api.assert_problem(stale_policy, 409, "stale_revision")
    policy = api.admin.post("/v1/workspace/policies/canary", json={"pin_default_ttl_seconds": 120})
    assert policy.status_code == 200, policy.text
    assert policy.json()["policy"]["pin_default_ttl_seconds"] == 120
    assert policy.json()["policy"]["pin_max_ttl_seconds"] == 90 * 24 * 3600


def test_openapi_documents_every_route_with_examples(api: Api) -> None:
    document = api.client().get("/openapi.json").json()
    paths = document["paths"]
    expected = {
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/v1/workspace"),
        ("post", "/v1/workspace/environments"),
        ("post", "/v1/workspace/policies/{environment}"),
        ("post", "/v1/keys"),
        ("get", "/v1/keys"),
        ("post", "/v1/keys/{key_id}/revoke"),
        ("post", "/v1/prompts"),
        ("get", "/v1/prompts"),
        ("get", "/v1/prompts/{name}"),
        ("post", "/v1/prompts/{name}/archive"),
        ("post", "/v1/prompts/{name}/unarchive"),
        ("get", "/v1/prompts/{name}/diff"),
        ("post", "/v1/prompts/{name}/versions"),
        ("get", "/v1/prompts/{name}/versions"),
        ("get", "/v1/prompts/{name}/versions/{number}"),
        ("post", "/v1/prompts/{name}/versions/{number}/restore"),
        ("get", "/v1/prompts/{name}/environments"),
        ("get", "/v1/prompts/{name}/environments/{environment}"),
        ("post", "/v1/prompts/{name}/environments/{environment}/promote"),
        ("post", "/v1/prompts/{name}/environments/{environment}/rollout"),
        ("post", "/v1/prompts/{name}/environments/{environment}/rollout/adjust"),
        ("post", "/v1/prompts/{name}/environments/{environment}/rollout/complete"),
        ("post", "/v1/prompts/{name}/environments/{environment}/rollout/abort"),
        ("post", "/v1/prompts/{name}/environments/{environment}/rollback"),
        ("get", "/v1/prompts/{name}/environments/{environment}/requests"),
        ("post", "/v1/prompts/{name}/environments/{environment}/requests/{request_id}/approve"),
        ("post", "/v1/prompts/{name}/environments/{environment}/requests/{request_id}/reject"),
        ("post", "/v1/tenants/{tenant}/pins"),
        ("get", "/v1/tenants/{tenant}/pins"),
        ("delete", "/v1/tenants/{tenant}/pins/{prompt}/{environment}"),
        ("get", "/v1/prompts/{name}/resolve"),
        ("post", "/v1/prompts/{name}/compile"),
        ("get", "/v1/audit/tenants/{tenant}/prompts/{name}"),
        ("get", "/v1/audit/tenants/{tenant}/prompts/{name}/intervals"),
        ("get", "/v1/events"),
        ("post", "/v1/datasets"),
        ("get", "/v1/datasets"),
        ("get", "/v1/datasets/{name}"),
        ("post", "/v1/datasets/{name}/examples"),
        ("get", "/v1/datasets/{name}/versions/{version}/examples"),
        ("get", "/v1/datasets/{name}/versions/{version}/download"),
        ("post", "/v1/evals"),
        ("get", "/v1/evals"),
        ("get", "/v1/evals/{run_id}"),
        ("get", "/v1/evals/{run_id}/results"),
        ("get", "/v1/evals/{run_id}/verdict"),
        ("get", "/v1/webhooks/deliveries"),
        ("get", "/v1/webhooks/deliveries/{delivery_id}"),
        ("post", "/v1/webhooks/deliveries/{delivery_id}/resend"),
        ("get", "/v1/webhooks/{endpoint_id}/deliveries"),
        ("get", "/v1/webhooks/event-types"),
        ("post", "/v1/webhooks"),
        ("get", "/v1/webhooks"),
        ("get", "/v1/webhooks/{endpoint_id}"),
        ("patch", "/v1/webhooks/{endpoint_id}"),
        ("delete", "/v1/webhooks/{endpoint_id}"),
        ("post", "/v1/webhooks/{endpoint_id}/rotate-secret"),
        ("post", "/v1/webhooks/{endpoint_id}/disable"),
        ("post", "/v1/webhooks/{endpoint_id}/enable"),
        ("post", "/v1/executions"),
        ("post", "/v1/executions/{execution_id}/feedback"),
        ("get", "/v1/prompts/{name}/metrics"),
        ("get", "/v1/prompts/{name}/metrics/compare"),
        ("put", "/v1/prompts/{name}/monitoring"),
        ("get", "/v1/prompts/{name}/monitoring"),
        ("get", "/v1/prompts/{name}/monitoring/checks"),
    }
    documented = {(method, path) for path, ops in paths.items() for method in ops}
    assert documented == expected
    schemas = document["components"]["schemas"]
    for path, ops in paths.items():
        for method, operation in ops.items():
            assert operation.get("summary") and operation.get("tags"), (method, path)
            if path.startswith("/v1/"):
                assert operation["security"] == [{"ApiKey": []}]
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == [api.PROBLEM], (method, path, status)
            if method == "post":
                names = {parameter["name"] for parameter in operation["parameters"]}
                assert "Idempotency-Key" in names
                if "requestBody" not in operation:  # e.g. enable, resend: nothing to send
                    continue
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                # an optional body is anyOf [model, null]
                body = next((b for b in body.get("anyOf", []) if "$ref" in b), body)
                if "$ref" in body:  # inline where a route reads its body itself (JSONL too)
                    body = schemas[body["$ref"].rsplit("/", 1)[1]]
                assert body.get("examples"), path
    for name in ("Problem", "PromptIn", "VersionIn", "RolloutIn", "PinIn", "Resolved", "Compiled"):
        assert schemas[name].get("examples"), name
    assert "HTTPValidationError" not in schemas
    assert document["info"]["title"] == "promptrecord"
    assert {tag["name"] for tag in document["tags"]} >= {"prompts", "resolution", "pins"}


def test_health_and_readiness(api: Api) -> None:
    anonymous = api.client()
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["position"] >= 2
    assert body["database"] == ("postgresql" if api.services.settings.is_postgres else "sqlite")


def test_unexpected_errors_are_problems_without_internals(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.services.app, "create_prompt", explode)
    body = {"name": "bot", "content": api.content()}
    headers = {"Idempotency-Key": "retry-me"}
    failed = api.admin.post("/v1/prompts", json=body, headers=headers)
    problem = api.assert_problem(failed, 500, "internal_error")
    assert "secret" not in failed.text and "Traceback" not in problem["detail"]
    monkeypatch.undo()
    # A 5xx is not kept: the retry with the same key runs the command.
    retried = api.admin.post("/v1/prompts", json=body, headers=headers)
    assert retried.status_code == 201 and "idempotency-replayed" not in retried.headers


def test_the_app_opens_and_closes_its_own_services(
    backend: Settings, serve: Callable[[FastAPI], AbstractContextManager[str]]
) -> None:
    with serve(create_app(settings=backend)) as base_url:
        ready = httpx.get(f"{base_url}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        anonymous = httpx.get(f"{base_url}/v1/prompts")
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"] == "application/problem+json"
