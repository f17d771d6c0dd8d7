"""The promptrecord client library; imports nothing of the server.

from promptrecord.sdk import PromptClient

client = PromptClient("https://prompts.example.com", api_key="pr_…")
prompt = client.get("support-bot", tenant="acme")
messages = prompt.compile(company="Acme", question="Where is my order?")
with client.timed(prompt, tenant="acme") as call:
    answer = call_the_model(messages, **prompt.model)
    call.tokens_in, call.tokens_out = answer.usage
"""

from promptrecord.sdk.async_client import AsyncPromptClient
from promptrecord.sdk.client import PromptClient
from promptrecord.sdk.errors import (
    AuthError,
    MissingVariable,
    PromptArchived,
    PromptNotFound,
    PromptRecordError,
    PromptUnavailable,
    RenderError,
    RequestRefused,
    ServerProblem,
)
from promptrecord.sdk.executions import TimedExecution
from promptrecord.sdk.prompt import Prompt
from promptrecord.sdk.rendering import Rendered
from promptrecord.sdk.stats import ClientStats
from promptrecord.sdk.telemetry import annotate_span

__all__ = [
    "AsyncPromptClient",
    "AuthError",
    "ClientStats",
    "MissingVariable",
    "Prompt",
    "PromptArchived",
    "PromptClient",
    "PromptNotFound",
    "PromptRecordError",
    "PromptUnavailable",
    "RenderError",
    "Rendered",
    "RequestRefused",
    "ServerProblem",
    "TimedExecution",
    "annotate_span",
]
