"""Production calls as the application logs them, in batches, and thumbs up or down on them.

The batch path is a throughput path: items are checked by hand against plain dicts (no model
per item), prompts and versions against the live state (no database read per item), and the
batch is stored in one transaction with its rollups.
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from promptrecord.api.deps import Caller, Runtime, ServicesDep
from promptrecord.api.problems import Problem, problem, problem_responses
from promptrecord.api.schemas import RequestBody
from promptrecord.api.services import Services
from promptrecord.domain.errors import Forbidden, InvalidInput, NotFound
from promptrecord.projections.executions import Execution
from promptrecord.workers.providers import PriceTable

router = APIRouter(
    prefix="/v1/executions", tags=["executions"], responses=problem_responses(401, 403, 422)
)

MAX_ITEMS = 1000
MAX_BODY_BYTES = 16 * 1024 * 1024
# Started-at times outside this range are refused: each day is a table partition.
MAX_AGE = timedelta(days=30)
MAX_AHEAD = timedelta(hours=1)
RESOLVE_REASONS = frozenset({"pinned", "rollout", "promoted", "explicit", "fallback"})
STATUSES = frozenset({"ok", "error", "timeout", "refusal"})
FIELDS = frozenset(
    {
        "id",
        "prompt",
        "version",
        "environment",
        "tenant",
        "request_id",
        "resolve_reason",
        "model",
        "provider",
        "latency_ms",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "status",
        "error",
        "score",
        "started_at",
        "input",
        "output",
        "metadata",
    }
)
# (field, longest) of the optional strings an item may carry
OPTIONAL_TEXT = (
    ("tenant", 256),
    ("request_id", 256),
    ("model", 200),
    ("provider", 64),
    ("error", 10_000),
    ("output", 100_000),
)
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
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


class FeedbackOut(BaseModel):
    execution_id: str
    rating: str
    prompt: str
    version: int
    environment: str


class _Rejected(Exception):
    def __init__(self, name: str, code: str, detail: str) -> None:
        self.name, self.code, self.detail = name, code, detail


@functools.cache
def price_table(path: Path | None) -> PriceTable:
    """The eval executor's model prices (`model_price_file`, else list prices)."""
    return PriceTable.from_file(path) if path is not None else PriceTable.default()


def _text(item: dict[str, Any], name: str, longest: int, default: str | None = None) -> Any:
    value = item.get(name, default)
    if value is None or (type(value) is str and len(value) <= longest):
        return value
    raise _Rejected(name, f"invalid_{name}", f"{name} must be text of at most {longest} characters")


def _number(item: dict[str, Any], name: str, low: float, high: float = math.inf) -> float | None:
    value = item.get(name)
    if value is None:
        return None
    # `type(...) in` rather than isinstance: bool is an int, and this runs 1,000 times a batch.
    if type(value) in (float, int) and low <= value <= high:
        return float(value)
    span = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
    raise _Rejected(name, f"invalid_{name}", f"{name} must be a number {span}")


def _count(item: dict[str, Any], name: str) -> int:
    value = item.get(name, 0)
    if type(value) is int and value >= 0:
        return value
    raise _Rejected(name, f"invalid_{name}", f"{name} must be a whole number, 0 or more")


def _object(item: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = item.get(name)
    if value is not None and not isinstance(value, dict):
        raise _Rejected(name, f"invalid_{name}", f"{name} must be a JSON object or null")
    return value


def _started_at(item: dict[str, Any], now: datetime) -> datetime:
    value = item.get("started_at")
    if value is None:
        return now
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _Rejected(
            "started_at",
            "invalid_started_at",
            "started_at must be an ISO 8601 time with a timezone, e.g. 2026-03-14T09:00:00Z",
        )
    if not now - MAX_AGE <= moment <= now + MAX_AHEAD:
        raise _Rejected(
            "started_at",
            "started_at_out_of_range",
            f"started_at must be within the last {MAX_AGE.days} days and not ahead of the "
            "server's clock; check the client's clock",
        )
    return moment.astimezone(UTC)


def _identity(item: dict[str, Any]) -> str:
    value = item.get("id")
    if value is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else _bad_id()
    except ValueError:
        return _bad_id()


def _bad_id() -> str:
    raise _Rejected("id", "invalid_id", "id must be a UUID (send one so a retry counts once)")


class Batch:
    """Checks items of one request against the caller's limits and the live state."""

    def __init__(self, caller: Caller, services: Services) -> None:
        self.caller = caller
        self.workspace: str = caller.workspace
        self.state = services.live.state
        self.prices = price_table(services.settings.model_price_file)
        self.now = datetime.now(UTC)
        workspace = self.state.workspaces.get(self.workspace)
        self.environments = frozenset(workspace.environments if workspace else ())

    def item(self, raw: Any) -> Execution:
        if not isinstance(raw, dict):
            raise _Rejected("", "invalid_item", "each item must be a JSON object")
        if not FIELDS.issuperset(raw):
            name = sorted(raw.keys() - FIELDS)[0]
            raise _Rejected(name, "unknown_field", f"{name} is not a field of an execution")
        prompt, version, environment = self._subject(raw)
        status = raw.get("status")
        if status not in STATUSES:
            raise _Rejected("status", "invalid_status", f"status must be one of {sorted(STATUSES)}")
        reason = raw.get("resolve_reason")
        if reason is not None and reason not in RESOLVE_REASONS:
            choices = ", ".join(sorted(RESOLVE_REASONS))
            raise _Rejected("resolve_reason", "invalid_resolve_reason", f"use one of {choices}")
        latency = _number(raw, "latency_ms", 0.0)
        if latency is None:
            raise _Rejected("latency_ms", "invalid_latency_ms", "latency_ms is required (≥ 0)")
        texts = {name: _text(raw, name, longest) for name, longest in OPTIONAL_TEXT}
        tokens_in, tokens_out = _count(raw, "tokens_in"), _count(raw, "tokens_out")
        cost = _number(raw, "cost_usd", 0.0)
        if cost is None and texts["model"] is not None:
            price = self.prices.price(texts["model"])
            if price is not None:
                cost = (tokens_in * price.input + tokens_out * price.output) / 1e6
        return Execution(
            id=_identity(raw),
            workspace=self.workspace,
            prompt=prompt,
            version=version,
            environment=environment,
            started_at=_started_at(raw, self.now),
            status=status,
            latency_ms=latency,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost,
            resolve_reason=reason,
            score=_number(raw, "score", 0.0, 1.0),
            input=_object(raw, "input"),
            metadata=_object(raw, "metadata"),
            **texts,
        )

    def _subject(self, raw: dict[str, Any]) -> tuple[str, int, str]:
        prompt = raw.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _Rejected("prompt", "invalid_prompt", "prompt must be the prompt's name")
        version = raw.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _Rejected("version", "invalid_version", "version must be a whole number ≥ 1")
        environment = _text(raw, "environment", 32, "production")
        if not self.caller.may_see_prompt(prompt):
            raise _Rejected("prompt", "prompt_not_allowed", f"this key may not log {prompt!r}")
        if not self.caller.may_see_environment(environment):
            raise _Rejected(
                "environment", "environment_not_allowed", f"this key may not log {environment!r}"
            )
        known = self.state.prompts.get((self.workspace, prompt))
        if known is None:
            raise _Rejected("prompt", "prompt_not_found", f"no prompt {prompt!r} here")
        if version not in known.versions:
            raise _Rejected(
                "version", "version_not_found", f"prompt {prompt!r} has no version {version}"
            )
        if environment not in self.environments:
            raise _Rejected(
                "environment",
                "environment_not_found",
                f"no environment {environment!r}; use one of {sorted(self.environments)}",
            )
        return prompt, version, environment


async def _read_json(request: Request) -> Any:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(
                413, f"the body is larger than {MAX_BODY_BYTES // 2**20} MiB; send smaller batches"
            )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInput(
            f'the request body is not valid JSON ({error}); send {{"items": [...]}}',
            field="body",
            code="malformed_json",
        ) from None


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
async def log_executions(request: Request, caller: Runtime, services: ServicesDep) -> JSONResponse:
    body = await _read_json(request)
    items = body.get("items") if isinstance(body, dict) else None
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
    batch = Batch(caller, services)
    good: list[Execution] = []
    ids: list[str | None] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        try:
            execution = batch.item(raw)
        except _Rejected as rejected:
            where = f"items[{index}]" + (f".{rejected.name}" if rejected.name else "")
            errors.append(
                {"index": index, "field": where, "code": rejected.code, "detail": rejected.detail}
            )
            ids.append(None)
            continue
        good.append(execution)
        ids.append(execution.id)
    if not good:
        return problem(
            422,
            "invalid_executions",
            f"none of the {len(items)} items is acceptable; `errors` says why for each",
            request.url.path,
            field=errors[0]["field"],
            errors=cast(list[dict[str, str]], errors),
        )
    await anyio.to_thread.run_sync(services.executions.ingest, good)
    body = {"accepted": len(good), "rejected": len(errors), "ids": ids, "errors": errors}
    return JSONResponse(body)


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
