"""Execution records as the server takes them (`POST /v1/executions` items), and a timer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from promptrecord.sdk.prompt import Prompt

__all__ = ["TimedExecution", "execution_item"]

RESOLVE_REASONS = frozenset({"pinned", "rollout", "promoted", "explicit", "fallback"})


def execution_item(
    prompt: Prompt,
    *,
    latency_ms: float,
    tokens_in: int = 0,
    tokens_out: int = 0,
    status: str = "ok",
    cost_usd: float | None = None,
    score: float | None = None,
    tenant: str | None = None,
    request_id: str | None = None,
    input: Mapping[str, Any] | None = None,
    output: str | None = None,
    error: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    """One item of an executions batch, with a client-made `id` so a resent batch never
    counts twice. The server validates the values; a bad one is reported as rejected."""
    model = prompt.model
    if started_at is None:
        started_at = datetime.now(UTC) - timedelta(milliseconds=latency_ms)
    return {
        "id": str(uuid.uuid4()),
        "prompt": prompt.name,
        "version": prompt.version,
        "environment": prompt.environment,
        "tenant": tenant if tenant is not None else prompt.tenant,
        "request_id": request_id,
        "resolve_reason": prompt.reason if prompt.reason in RESOLVE_REASONS else None,
        "model": model.get("name"),
        "provider": model.get("provider"),
        "latency_ms": latency_ms,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": cost_usd,
        "status": status,
        "error": error,
        "score": score,
        "started_at": started_at.isoformat(),
        "input": None if input is None else dict(input),
        "output": output,
        "metadata": None if metadata is None else dict(metadata),
    }


class TimedExecution:
    """Times the block it wraps and logs it as one execution when the block ends.

    ``with client.timed(prompt, tenant="acme") as call:`` … then set ``call.tokens_in``,
    ``call.tokens_out``, ``call.output``, ``call.cost_usd``, ``call.score`` or
    ``call.status`` inside the block. An exception leaving the block is logged as status
    ``error`` (``timeout`` for a `TimeoutError`) with its message, and is not swallowed.
    Works with ``with`` and ``async with``.
    """

    def __init__(
        self, log: Callable[..., object], prompt: Prompt, fields: Mapping[str, Any]
    ) -> None:
        self._log = log
        self.prompt = prompt
        self.tokens_in: int = int(fields.get("tokens_in", 0))
        self.tokens_out: int = int(fields.get("tokens_out", 0))
        self.status: str = str(fields.get("status", "ok"))
        self.cost_usd: float | None = fields.get("cost_usd")
        self.score: float | None = fields.get("score")
        self.output: str | None = fields.get("output")
        self.error: str | None = fields.get("error")
        self.input: Mapping[str, Any] | None = fields.get("input")
        self.metadata: Mapping[str, Any] | None = fields.get("metadata")
        self.tenant: str | None = fields.get("tenant")
        self.request_id: str | None = fields.get("request_id")
        self.latency_ms: float | None = None
        self._started = 0.0
        self._started_at = datetime.now(UTC)

    def __enter__(self) -> TimedExecution:
        self._started_at = datetime.now(UTC)
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.latency_ms = (time.perf_counter() - self._started) * 1000
        if error is not None:
            self.status = "timeout" if isinstance(error, TimeoutError) else "error"
            self.error = self.error or f"{type(error).__name__}: {error}"[:2000]
        self._log(
            self.prompt,
            latency_ms=self.latency_ms,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            status=self.status,
            cost_usd=self.cost_usd,
            score=self.score,
            tenant=self.tenant,
            request_id=self.request_id,
            input=self.input,
            output=self.output,
            error=self.error,
            metadata=self.metadata,
            started_at=self._started_at,
        )

    async def __aenter__(self) -> TimedExecution:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)
