"""Production calls as the application logs them, in batches, and thumbs up or down on them.

The batch path is a throughput path: the body is read on the event loop, then parsed, checked
(`execution_batch`) and stored with its rollups in one transaction, all in one worker thread,
so the loop stays free for other requests while a batch takes its tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from promptrecord.api.deps import Caller, Runtime, ServicesDep
from promptrecord.api.execution_batch import SUSPECT_ESCAPE, Batch
from promptrecord.api.problems import Problem, problem, problem_responses
from promptrecord.api.schemas import RequestBody
from promptrecord.api.services import Services
from promptrecord.domain.errors import Forbidden, InvalidInput, NotFound

router = APIRouter(
    prefix="/v1/executions", tags=["executions"], responses=problem_responses(401, 403, 422)
)

MAX_ITEMS = 1000
MAX_BODY_BYTES = 16 * 1024 * 1024
EXAMPLE: dict[str, Any] = {
    "id": "3b241101-e2bb-4255-8caf-4136c566a962",
    "prompt": "support-bot",
    "version": 4,
    "environment": "production",
    "tenant": "acme",
    "request_id": "req-81f2",
    "resolve_reason": "rollout",
    "model": "claude-sonnet-4-5",
    "provider": "anthropic",
    "latency_ms": 812.5,
    "tokens_in": 412,
    "tokens_out": 96,
    "cost_usd": None,
    "status": "ok",
    "error": None,
    "score": None,
    "started_at": "2026-03-14T09:00:00Z",
    "input": {"question": "Where is my order?"},
    "output": "It left our warehouse this morning.",
    "metadata": {"region": "eu"},
}


class ItemError(BaseModel):
    index: int = Field(examples=[3])
    field: str = Field(examples=["items[3].latency_ms"])
    code: str = Field(examples=["invalid_latency_ms"])
    detail: str


class ExecutionsIn(BaseModel):
    """For the documentation only: the route reads its body itself."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE]}]})

    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ITEMS)


class ExecutionsAccepted(BaseModel):
    accepted: int = Field(description="Items stored now or by an earlier try of the same id")
    rejected: int
    ids: list[str | None] = Field(description="Per index: the execution's id, null if rejected")
    errors: list[ItemError]


class FeedbackIn(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"rating": "down", "comment": "invented a refund policy"}]}
    )

    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


class FeedbackOut(BaseModel):
    execution_id: str
    rating: str
    prompt: str
    version: int
    environment: str


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(
                413, f"the body is larger than {MAX_BODY_BYTES // 2**20} MiB; send smaller batches"
            )
    return bytes(body)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


# Digits to "0", so that one `in` finds a run of 19: an integer orjson would turn into a float.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def _parse(body: bytes) -> tuple[Any, bool]:
    """The body parsed, and whether the standard library parsed it.

    orjson takes a 1,000-item body in a third of the time, but makes an integer beyond 64 bits
    a float and refuses outright what the standard library lets reach the item checks (a lone
    surrogate, a number too large for a double). Those bodies are parsed again by the standard
    library, whose answer — or refusal — stands.
    """
    if _LONG_DIGITS not in body.translate(_DIGITS_TO_ZERO):
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(body), False
    try:
        return json.loads(body, parse_constant=_not_json), True
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInput(
            f'the request body is not valid JSON ({error}); send {{"items": [...]}}',
            field="body",
            code="malformed_json",
        ) from None


def _items(parsed: Any) -> list[Any]:
    items = parsed.get("items") if isinstance(parsed, dict) else None
    if not isinstance(items, list) or not items:
        raise InvalidInput(
            'send {"items": [execution, …]} with 1 to 1,000 executions',
            field="items",
            code="no_items",
        )
    if len(items) > MAX_ITEMS:
        raise InvalidInput(
            f"{len(items)} items is more than {MAX_ITEMS}; split the batch",
            field="items",
            code="too_many_items",
        )
    return items


def _log(body: bytes, caller: Caller, services: Services) -> dict[str, Any]:
    """Parse, check and store a batch (in a worker thread): the answer's body."""
    parsed, by_stdlib = _parse(body)
    items = _items(parsed)
    # A NUL reaches the items only escaped; a lone surrogate or an infinity only through the
    # standard library. Only then is every string and number searched.
    suspect = by_stdlib or SUSPECT_ESCAPE.search(body) is not None
    batch = Batch(caller, services, suspect=suspect)
    # Checked as stored: the store COPYs each good item while the next one is checked.
    accepted = len(services.executions.ingest(batch.each(items)))
    errors = batch.errors
    return {"accepted": accepted, "rejected": len(errors), "ids": batch.ids, "errors": errors}


@router.post(
    "",
    summary="Log a batch of production calls (up to 1,000)",
    description=(
        "Each item is checked on its own: bad items are reported by index with the field at "
        "fault, good ones are kept. Send an `id` (a UUID) and `started_at` with every item "
        "so that a retried batch is counted once. When `cost_usd` is null and the model is "
        "in the price table, the cost is priced from it; otherwise it stays null and is "
        "counted as unpriced. 422 `invalid_executions` when no item is acceptable."
    ),
    responses={
        200: {"model": ExecutionsAccepted},
        413: {"model": Problem, "description": "The body is larger than 16 MiB"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ExecutionsIn.model_json_schema()}},
        }
    },
)
async def log_executions(request: Request, caller: Runtime, services: ServicesDep) -> Response:
    body = await _read_body(request)
    answer = await anyio.to_thread.run_sync(_log, body, caller, services)
    if not answer["accepted"]:
        errors = answer["errors"]
        return problem(
            422,
            "invalid_executions",
            f"none of the {len(errors)} items is acceptable; `errors` says why for each",
            request.url.path,
            field=errors[0]["field"],
            errors=cast(list[dict[str, str]], errors),
        )
    # A thousand ids: orjson writes them in a tenth of JSONResponse's time, the same JSON.
    return Response(orjson.dumps(answer), media_type="application/json")


ExecutionId = Annotated[str, PathParam(description="The execution's id (a UUID)")]


@router.post(
    "/{execution_id}/feedback",
    response_model=FeedbackOut,
    status_code=201,
    summary="Record a thumbs up or down on an execution",
    responses=problem_responses(404),
)
def add_feedback(
    execution_id: ExecutionId, body: FeedbackIn, caller: Runtime, services: ServicesDep
) -> FeedbackOut:
    store = services.executions
    try:
        canonical = str(uuid.UUID(execution_id))
    except ValueError:
        canonical = None
    found = store.find(caller.workspace, canonical) if canonical else None
    if found is None or canonical is None:
        raise NotFound(
            f"no execution {execution_id!r} in this workspace; log it first",
            field="path.execution_id",
            code="execution_not_found",
        )
    if not (caller.may_see_prompt(found.prompt) and caller.may_see_environment(found.environment)):
        raise Forbidden(
            f"key {caller.key.name!r} may not touch executions of {found.prompt!r} in "
            f"{found.environment!r}",
            field="path.execution_id",
            code="execution_not_allowed",
        )
    stored = store.add_feedback(
        caller.workspace, canonical, body.rating, body.comment, datetime.now(UTC)
    )
    assert stored is not None  # executions are never deleted
    return FeedbackOut(
        execution_id=canonical,
        rating=body.rating,
        prompt=stored.prompt,
        version=stored.version,
        environment=stored.environment,
    )
