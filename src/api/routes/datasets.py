"""Datasets: append-only example sets, versioned per append, uploaded as JSON or JSONL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

from promptrecord.api.commands import etag, settle
from promptrecord.api.deps import Editor, ExpectedRevision, ServicesDep, Viewer, Views
from promptrecord.api.pagination import Page, Paging
from promptrecord.api.problems import Problem, problem_responses
from promptrecord.api.reads import require_dataset
from promptrecord.api.schemas import ActorOut, CommandResponse, JsonObject, RequestBody, Text
from promptrecord.domain.app_base import CommandResult
from promptrecord.domain.errors import DomainError, InvalidInput, NotFound
from promptrecord.domain.evals import MAX_APPEND, normalise_example
from promptrecord.projections.views import DatasetEntry

router = APIRouter(
    prefix="/v1/datasets", tags=["datasets"], responses=problem_responses(401, 403, 404, 422)
)

# An upload is read whole before anything is written (an append is one event); this keeps
# one request from holding the process's memory. Split bigger sets into several appends.
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")
DOWNLOAD_PAGE = 500

DatasetName = Annotated[
    str, Path(max_length=64, description="Dataset name", examples=["support-golden"])
]
DatasetVersion = Annotated[
    int, Path(ge=1, le=2**31, description="Dataset version (1 = the first append)")
]

EXAMPLE: dict[str, Any] = {
    "id": "refund-1",
    "inputs": {"company": "Acme", "question": "Can I get a refund after 30 days?"},
    "reference": "No; refunds are accepted within 30 days of purchase.",
    "tags": ["refunds"],
}
_JSON_VALUE: TypeAdapter[dict[str, Any]] = TypeAdapter(JsonObject)


class DatasetIn(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "support-golden",
                    "description": "Answers support must get right",
                    "examples": [EXAMPLE],
                }
            ]
        }
    )

    name: str = Field(max_length=64, description="^[a-z0-9][a-z0-9._-]{0,63}$")
    description: Text = Field(default="", max_length=5000)
    examples: list[JsonObject] | None = Field(
        default=None,
        max_length=MAX_APPEND,
        description="Version 1, when given: objects {id, inputs, reference, tags}",
    )
    message: Text = Field(default="", max_length=2000)


class ExamplesIn(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"examples": [EXAMPLE], "message": "refund cases"}]}
    )

    examples: list[JsonObject] = Field(max_length=MAX_APPEND)
    message: Text = Field(default="", max_length=2000)


class DatasetWritten(CommandResponse):
    name: str = Field(examples=["support-golden"])
    version: int = Field(description="The dataset version now latest (0: no examples yet)")
    count: int = Field(description="Examples in that version")
    added: int = Field(description="Examples this command appended")


class DatasetVersionOut(BaseModel):
    version: int = Field(examples=[2])
    count: int = Field(description="Examples in this version (it holds the first `count`)")
    added: int = Field(description="Examples its append added")
    digest: str = Field(description="sha256 of its examples, chained on the version before")
    message: str
    actor: ActorOut
    created_at: datetime
    event_id: str


class DatasetSummary(BaseModel):
    name: str = Field(examples=["support-golden"])
    description: str
    latest_version: int = Field(description="0 until the first examples arrive")
    example_count: int
    created_by: ActorOut
    created_at: datetime
    updated_at: datetime
    revision: int


class DatasetOut(DatasetSummary):
    versions: list[DatasetVersionOut] = Field(description="Oldest first")


class ExampleOut(BaseModel):
    ordinal: int = Field(description="Position in the dataset, from 1; the paging key")
    id: str = Field(examples=["refund-1"])
    inputs: dict[str, Any]
    reference: str | None
    tags: list[str]
    version: int = Field(description="The dataset version that added it")


def _summary(entry: DatasetEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "description": entry.description,
        "latest_version": entry.latest_version,
        "example_count": entry.example_count,
        "created_by": ActorOut(**entry.created_by),
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
        "revision": entry.revision,
    }


def _require_version(entry: DatasetEntry, version: int) -> None:
    if not 1 <= version <= entry.latest_version:
        known = f"versions 1 to {entry.latest_version}" if entry.latest_version else "no versions"
        raise NotFound(
            f"dataset {entry.name!r} has {known}, not {version}",
            field="version",
            code="dataset_version_not_found",
        )


def _written(result: CommandResult, added: int) -> DatasetWritten:
    value = result.value
    return DatasetWritten(
        position=result.position,
        revision=result.revision,
        name=value["name"],
        version=value["version"],
        count=value["count"],
        added=added,
    )


@router.post(
    "",
    response_model=DatasetWritten,
    status_code=201,
    summary="Create a dataset, optionally with its first examples (version 1)",
    responses=problem_responses(409),
)
def create_dataset(
    body: DatasetIn, caller: Editor, services: ServicesDep, response: Response
) -> DatasetWritten:
    examples = list(body.examples or [])
    result = services.app.create_dataset(
        caller.workspace,
        body.name,
        caller.actor,
        description=body.description,
        examples=examples,
        message=body.message,
    )
    settle(services, response, result)
    response.headers["Location"] = f"/v1/datasets/{body.name}"
    return _written(result, len(examples))


@router.get("", response_model=Page[DatasetSummary], summary="Datasets of the workspace, by name")
def list_datasets(caller: Viewer, views: Views, paging: Paging) -> Page[DatasetSummary]:
    fetched = views.datasets(caller.workspace, paging.limit + 1, paging.after_name())
    chosen, cursor = paging.page(fetched, lambda entry: entry.name)
    return Page[DatasetSummary](
        items=[DatasetSummary(**_summary(entry)) for entry in chosen], next_cursor=cursor
    )


@router.get("/{name}", response_model=DatasetOut, summary="A dataset and its versions")
def get_dataset(caller: Viewer, name: DatasetName, views: Views, response: Response) -> DatasetOut:
    entry = require_dataset(views, caller.workspace, name)
    response.headers["ETag"] = etag(entry.revision)
    versions = [
        DatasetVersionOut(
            version=v.version,
            count=v.count,
            added=v.added,
            digest=v.digest,
            message=v.message,
            actor=ActorOut(**v.actor),
            created_at=v.created_at,
            event_id=v.event_id,
        )
        for v in views.dataset_versions(caller.workspace, name)
    ]
    return DatasetOut(**_summary(entry), versions=versions)


JSONL_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            # Inline: the route reads its body itself, so FastAPI lists no model for it.
            "application/json": {"schema": ExamplesIn.model_json_schema()},
            "application/x-ndjson": {
                "schema": {"type": "string"},
                "example": json.dumps(EXAMPLE) + "\n",
            },
        },
        "description": (
            "JSON `{examples, message}`, or JSONL (`application/x-ndjson` or "
            "`application/jsonl`): one example object per line, blank lines ignored; the "
            "message then comes from `?message=`. At most 32 MiB."
        ),
    }
}


@router.post(
    "/{name}/examples",
    response_model=DatasetWritten,
    status_code=201,
    summary="Append examples as a new dataset version (JSON or JSONL)",
    responses={
        **problem_responses(409),
        413: {"model": Problem, "description": "The upload is larger than 32 MiB"},
    },
    openapi_extra=JSONL_BODY,
)
async def append_examples(
    name: DatasetName,
    request: Request,
    caller: Editor,
    services: ServicesDep,
    expected: ExpectedRevision,
    response: Response,
    message: Annotated[
        str, Query(max_length=2000, description="For a JSONL upload: what this append adds")
    ] = "",
) -> DatasetWritten:
    raw = await _read_upload(request)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    lines: list[int] | None = None
    if media_type in JSONL_TYPES:
        examples, lines = parse_jsonl(raw)
    elif media_type in ("", "application/json") or media_type.endswith("+json"):
        try:
            body = ExamplesIn.model_validate_json(raw or b"{}")
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors()]
            ) from None
        examples, message = list(body.examples), body.message or message
    else:
        raise HTTPException(
            415,
            f"send examples as application/json ({{examples: [...]}}) or as JSONL "
            f"(application/x-ndjson), not {media_type!r}",
        )

    def append() -> DatasetWritten:  # commands block: off the event loop
        try:
            result = services.app.append_examples(
                caller.workspace, name, examples, caller.actor, message, expected
            )
        except DomainError as error:
            if lines is not None:
                _name_lines(error, lines)
            raise
        settle(services, response, result)
        return _written(result, len(examples))

    return await anyio.to_thread.run_sync(append)


async def _read_upload(request: Request) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            raise HTTPException(
                413,
                f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; split it "
                "into several appends",
            )
        parts.append(chunk)
    return b"".join(parts)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number")


def parse_jsonl(raw: bytes) -> tuple[list[dict[str, Any]], list[int]]:
    """Examples from JSONL, and the line each came from; a bad line is a 422 naming it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        at = raw[: error.start].count(b"\n") + 1
        raise InvalidInput(
            f"line {at}: not UTF-8 (byte {error.start}); save the file as UTF-8",
            field=f"line {at}",
            code="invalid_jsonl",
        ) from None
    examples: list[dict[str, Any]] = []
    lines: list[int] = []
    # Only "\n" ends a line: JSON strings may hold U+2028 and the like, which splitlines()
    # would also split on.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            parsed = json.loads(line, parse_constant=_reject_constant)
        except ValueError as error:
            reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
            column = f" (column {error.colno})" if isinstance(error, json.JSONDecodeError) else ""
            raise InvalidInput(
                f"{where}: not valid JSON: {reason}{column}; each line holds one example object",
                field=where,
                code="invalid_jsonl",
            ) from None
        if isinstance(parsed, dict):
            try:
                _JSON_VALUE.validate_python(parsed)
            except ValidationError as error:
                raise InvalidInput(
                    f"{where}: {error.errors()[0]['msg']}", field=where, code="invalid_jsonl"
                ) from None
        examples.append(normalise_example(parsed, where))
        lines.append(number)
        if len(examples) > MAX_APPEND:
            raise InvalidInput(
                f"more than {MAX_APPEND} examples in one upload; split it", field="body"
            )
    if not examples:
        raise InvalidInput("the upload holds no examples (only blank lines)", field="body")
    return examples, lines


_EXAMPLE_INDEX = re.compile(r"examples\[(\d+)\]")


def _name_lines(error: DomainError, lines: list[int]) -> None:
    """Say `line 7` rather than `examples[3]` to someone who uploaded a file."""

    def line_of(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return f"line {lines[index]}" if index < len(lines) else match.group(0)

    if error.field is not None:
        error.field = _EXAMPLE_INDEX.sub(line_of, error.field, count=1)
    error.detail = _EXAMPLE_INDEX.sub(line_of, error.detail)
    error.args = (error.detail,)


@router.get(
    "/{name}/versions/{version}/examples",
    response_model=Page[ExampleOut],
    summary="The examples of one dataset version, in order",
)
def list_examples(
    caller: Viewer, name: DatasetName, version: DatasetVersion, views: Views, paging: Paging
) -> Page[ExampleOut]:
    _require_version(require_dataset(views, caller.workspace, name), version)
    fetched = views.dataset_examples(
        caller.workspace, name, version, after=paging.after_number(), limit=paging.limit + 1
    )
    chosen, cursor = paging.page(fetched, lambda example: example.ordinal)
    return Page[ExampleOut](
        items=[
            ExampleOut(
                ordinal=e.ordinal,
                id=e.example_id,
                inputs=e.inputs,
                reference=e.reference,
                tags=list(e.tags),
                version=e.version,
            )
            for e in chosen
        ],
        next_cursor=cursor,
    )


@router.get(
    "/{name}/versions/{version}/download",
    summary="One dataset version as JSONL, as it would be uploaded",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSONL"}},
)
def download(
    caller: Viewer, name: DatasetName, version: DatasetVersion, views: Views
) -> StreamingResponse:
    _require_version(require_dataset(views, caller.workspace, name), version)
    workspace = caller.workspace

    def lines() -> Iterator[bytes]:
        after = 0
        while True:
            page = views.dataset_examples(
                workspace, name, version, after=after, limit=DOWNLOAD_PAGE
            )
            for e in page:
                example = {
                    "id": e.example_id,
                    "inputs": e.inputs,
                    "reference": e.reference,
                    "tags": list(e.tags),
                }
                yield (json.dumps(example, ensure_ascii=False) + "\n").encode()
            if len(page) < DOWNLOAD_PAGE:
                return
            after = page[-1].ordinal

    filename = f"{name}-v{version}.jsonl"
    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
