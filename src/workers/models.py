"""What a model call takes and gives back, whichever provider serves it.

Providers (`promptrecord.workers.providers`) turn a `ModelCall` into a `ModelReply`; graders
(`promptrecord.workers.graders`) ask a judge through the same interface. Nothing here does
I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelCall:
    """One request: the version's model settings and the rendered messages."""

    provider: str  # "anthropic" | "openai" | "offline"
    model: str
    messages: list[dict[str, str]]  # {"role": "user"|"assistant", "content": ...}
    system: str | None = None
    temperature: float | None = None
    max_tokens: int = 1024
    params: dict[str, Any] = field(default_factory=dict)  # other model parameters, passed on


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ModelReply:
    text: str
    model: str  # as the provider reports it
    usage: Usage
    latency_ms: float
    cost_usd: float | None  # None when the price table has no entry for the model
    attempts: int = 1  # 1 + the retries it took


class ProviderError(Exception):
    """A call failed for good: retries exhausted, or an error retrying cannot cure."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        attempts: int = 1,
    ):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.attempts = attempts  # requests made before giving up


class ProviderTimeout(ProviderError):
    """The call did not answer within its timeout (after retries)."""


class Provider(Protocol):
    """Something that answers model calls."""

    name: str

    async def complete(self, call: ModelCall) -> ModelReply: ...
