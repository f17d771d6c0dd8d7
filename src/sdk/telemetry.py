"""OpenTelemetry: put the prompt's identity and model on a span (GenAI semantic conventions).

Does nothing when `opentelemetry` is not installed, so applications need not depend on it.
"""

from __future__ import annotations

import functools
from typing import Any

from promptrecord.sdk.prompt import Prompt

__all__ = ["annotate_span", "span_attributes"]


@functools.cache
def _trace_api() -> Any:
    """`opentelemetry.trace`, imported on first use (not with the SDK), or None."""
    try:
        from opentelemetry import trace
    except ImportError:  # optional: without it, annotate_span is a no-op
        return None
    return trace


# model config key -> GenAI attribute
_REQUEST_PARAMETERS = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
}


def span_attributes(prompt: Prompt) -> dict[str, Any]:
    """The attributes `annotate_span` sets, for callers that build spans themselves."""
    attributes: dict[str, Any] = {
        "prompt.name": prompt.name,
        "prompt.environment": prompt.environment,
        "prompt.resolve_reason": prompt.reason,
    }
    if prompt.version is not None:
        attributes["prompt.version"] = prompt.version
    if prompt.content_hash is not None:
        attributes["prompt.content_hash"] = prompt.content_hash
    if prompt.rollout_arm is not None:
        attributes["prompt.rollout_arm"] = prompt.rollout_arm
    model = prompt.model
    if model.get("name"):
        attributes["gen_ai.request.model"] = str(model["name"])
    if model.get("provider"):
        # gen_ai.system is the older name of gen_ai.provider.name; backends read one or the other
        attributes["gen_ai.system"] = str(model["provider"])
        attributes["gen_ai.provider.name"] = str(model["provider"])
    for key, attribute in _REQUEST_PARAMETERS.items():
        value = model.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[attribute] = value
    return attributes


def annotate_span(prompt: Prompt, span: Any = None) -> None:
    """Set `span_attributes(prompt)` on `span`, else on the current span, if it records."""
    trace = _trace_api()
    if trace is None:
        return
    target = span if span is not None else trace.get_current_span()
    if not target.is_recording():
        return
    target.set_attributes(span_attributes(prompt))
