"""What a version holds: chat or text templates, model config, schema; normalised and hashed."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from promptrecord.domain.errors import InvalidInput

ROLES = ("system", "user", "assistant")
KNOWN_PROVIDERS = ("anthropic", "openai")
_DATE_SNAPSHOT = re.compile(r"(?:[-@]\d{8}|-\d{4}-\d{2}-\d{2}|-\d{4})$")
_MODEL_KEYS_NUMERIC = ("temperature", "top_p")
_MODEL_KEYS_INT = ("max_tokens", "top_k")


def _fail(detail: str, field: str, hint: str | None = None) -> InvalidInput:
    return InvalidInput(detail, field=field, hint=hint, code="invalid_content")


def _normalise_model(model: Any) -> dict[str, Any]:
    if not isinstance(model, dict):
        raise _fail("model must be an object with provider and name", "content.model")
    provider = model.get("provider")
    name = model.get("name")
    if not isinstance(provider, str) or not provider.strip():
        raise _fail(
            "model.provider is required (anthropic, openai, or an OpenAI-compatible name)",
            "content.model.provider",
        )
    if not isinstance(name, str) or not name.strip():
        raise _fail("model.name is required, e.g. claude-sonnet-4-6", "content.model.name")
    out: dict[str, Any] = {"provider": provider.strip(), "name": name.strip()}
    for key, value in model.items():
        if key in ("provider", "name"):
            continue
        if value is None:
            continue
        if key in _MODEL_KEYS_NUMERIC:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(f"model.{key} must be a number", f"content.model.{key}")
            if key == "temperature" and not 0 <= value <= 2:
                raise _fail(
                    "model.temperature must be between 0 and 2", "content.model.temperature"
                )
            if key == "top_p" and not 0 <= value <= 1:
                raise _fail("model.top_p must be between 0 and 1", "content.model.top_p")
            out[key] = float(value)
        elif key in _MODEL_KEYS_INT:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail(f"model.{key} must be a positive integer", f"content.model.{key}")
            out[key] = value
        else:
            out[key] = value
    return out


def normalise_content(raw: Any) -> dict[str, Any]:
    """Validate a version's content and return its canonical form (what is hashed and stored)."""
    if not isinstance(raw, dict):
        raise _fail("content must be an object", "content")
    kind = raw.get("type") or ("chat" if "messages" in raw else "text" if "text" in raw else None)
    if kind not in ("chat", "text"):
        raise _fail(
            "content.type must be 'chat' (with messages) or 'text' (with text)", "content.type"
        )
    out: dict[str, Any] = {"type": kind}
    if kind == "chat":
        messages = raw.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _fail("a chat prompt needs a non-empty messages list", "content.messages")
        normalised = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise _fail("each message must be an object", f"content.messages[{i}]")
            role = message.get("role")
            if role not in ROLES:
                raise _fail(
                    f"message role {role!r} is not one of {', '.join(ROLES)}",
                    f"content.messages[{i}].role",
                )
            text = message.get("content")
            if not isinstance(text, str):
                raise _fail("message content must be a string", f"content.messages[{i}].content")
            normalised.append({"role": role, "content": text})
        out["messages"] = normalised
    else:
        text = raw.get("text")
        if not isinstance(text, str) or not text:
            raise _fail("a text prompt needs a non-empty text", "content.text")
        out["text"] = text
    out["model"] = _normalise_model(raw.get("model"))
    schema = raw.get("output_schema")
    if schema is not None and not isinstance(schema, dict):
        raise _fail("output_schema must be a JSON Schema object", "content.output_schema")
    out["output_schema"] = schema
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _fail("metadata must be an object", "content.metadata")
    out["metadata"] = metadata
    unknown = set(raw) - {"type", "messages", "text", "model", "output_schema", "metadata"}
    if unknown:
        raise _fail(
            f"unknown content fields: {', '.join(sorted(unknown))}",
            f"content.{sorted(unknown)[0]}",
            hint="put free-form data under metadata",
        )
    return out


def content_hash(content: dict[str, Any]) -> str:
    """sha256 over canonical JSON of normalised content: equal content, equal hash."""
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(encoded.encode()).hexdigest()


def is_floating_model(provider: str, name: str) -> bool:
    """Whether a model name may silently change under the version (`*-latest`, undated aliases).

    Names of the known providers are pinned only by a date snapshot suffix
    (`-20250929`, `-2024-08-06`, `@20240620`); other providers are judged by `latest` alone.
    """
    lowered = name.lower()
    if lowered.endswith(("-latest", ":latest")) or lowered == "latest":
        return True
    if provider in KNOWN_PROVIDERS:
        return not _DATE_SNAPSHOT.search(lowered)
    return False


def content_warnings(content: dict[str, Any]) -> list[str]:
    """Warnings that do not refuse a commit but a reviewer should see."""
    model = content["model"]
    if is_floating_model(model["provider"], model["name"]):
        return [
            f"model name {model['name']!r} floats: the provider may change what it points to; "
            "pin a dated snapshot for production"
        ]
    return []
