"""The OpenAPI document, finished: errors as problem+json, and `Idempotency-Key` on POSTs."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from promptrecord.api.deps import MAX_ON_BEHALF_OF, ON_BEHALF_OF_HEADER
from promptrecord.api.idempotency import HEADER, MAX_KEY_LENGTH

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: the same key with the same request replays the first response "
        "(header `Idempotency-Replayed: true`); with a different request it is a 422. "
        "Kept 24 hours, scoped to the API key."
    ),
    "schema": {"type": "string", "maxLength": MAX_KEY_LENGTH},
    "example": "5f1c2a7e-8a8b-4a55-9d0e-6c1f0b6f2a10",
}


ON_BEHALF_OF_PARAMETER: dict[str, Any] = {
    "name": ON_BEHALF_OF_HEADER,
    "in": "header",
    "required": False,
    "description": "The person a CI key acts for; recorded on every event it causes",
    "schema": {"type": "string", "maxLength": MAX_ON_BEHALF_OF},
    "example": "alice@example.com",
}
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key `pr_<id>_<secret>`; only its hash is stored",
}


def _finish(schema: dict[str, Any]) -> None:
    # Authentication reads its headers directly (see deps.authenticate), so the scheme and
    # the X-On-Behalf-Of header are declared here for every /v1 operation.
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["ApiKey"] = SECURITY_SCHEME
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                operation["security"] = [{"ApiKey": []}]
                operation.setdefault("parameters", []).append(dict(ON_BEHALF_OF_PARAMETER))
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    # FastAPI documents extra responses as application/json; ours are problems.
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
                    if status == "422":
                        response["description"] = (
                            "The input is not acceptable; `field` and `errors` say which"
                        )
            if method == "post":
                operation.setdefault("parameters", []).append(dict(IDEMPOTENCY_PARAMETER))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(unused, None)


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _finish(FastAPI.openapi(app))
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
