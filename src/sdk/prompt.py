"""A resolved prompt as the application holds it: content, model config, why it was chosen."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from promptrecord.sdk.rendering import Rendered, render, template_variables

__all__ = ["Prompt", "Source"]

Source = Literal["server", "snapshot", "fallback"]
SNAPSHOT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Prompt:
    """One version of a prompt, as served to one caller (treat `content` as read-only).

    `reason` is why the server chose the version (`pinned`, `rollout`, `promoted`; `explicit`
    for `get(version=n)`, `fallback` for a `fallback=` prompt); `rollout` has the arm and
    bucket when a rollout chose it. `source` says where this object came from: the server,
    the disk snapshot of the last good answer, or the caller's fallback.
    """

    name: str
    version: int | None
    content_hash: str | None
    content: dict[str, Any]
    variables: list[str]
    environment: str
    reason: str
    tenant: str | None = None
    key: str | None = None
    rollout: dict[str, Any] | None = None
    pin_expires_at: datetime | None = None
    cause_event_id: str | None = None
    position: int | None = None
    source: Source = "server"
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def type(self) -> str:
        """`chat` or `text`."""
        return str(self.content.get("type"))

    @property
    def messages(self) -> list[dict[str, str]] | None:
        """The chat messages' templates (unrendered), or None for a text prompt."""
        messages = self.content.get("messages")
        return None if self.type != "chat" else list(messages or [])

    @property
    def text(self) -> str | None:
        """The text template (unrendered), or None for a chat prompt."""
        return str(self.content.get("text")) if self.type == "text" else None

    @property
    def model(self) -> dict[str, Any]:
        """The model config: provider, name, and parameters such as temperature."""
        model: dict[str, Any] = self.content.get("model") or {}
        return model

    @property
    def rollout_arm(self) -> str | None:
        """`candidate` or `baseline` when a rollout chose this version."""
        return None if self.rollout is None else str(self.rollout.get("arm"))

    def compile(self, **variables: Any) -> list[dict[str, str]] | str:
        """The rendered messages (chat) or text (text), exactly as the server's /compile.

        A variable the templates use but that is not passed raises `MissingVariable`.
        """
        rendered = render(self.content, variables)
        return rendered.text if rendered.messages is None else rendered.messages  # type: ignore[return-value]

    def render(self, variables: Mapping[str, Any]) -> Rendered:
        """Like `compile`, with the variables passed that no template uses (`unused`)."""
        return render(self.content, variables)

    @classmethod
    def from_resolved(cls, answer: Mapping[str, Any], source: Source = "server") -> Prompt:
        """From the body of `GET /v1/prompts/{name}/resolve`."""
        expires = answer.get("pin_expires_at")
        return cls(
            name=str(answer["prompt"]),
            version=int(answer["version"]),
            content_hash=str(answer["content_hash"]),
            content=dict(answer["content"]),
            variables=list(answer.get("variables") or []),
            environment=str(answer["environment"]),
            reason=str(answer["reason"]),
            tenant=answer.get("tenant"),
            key=answer.get("key"),
            rollout=answer.get("rollout"),
            pin_expires_at=None if expires is None else _aware(expires),
            cause_event_id=answer.get("cause_event_id"),
            position=answer.get("position"),
            source=source,
        )

    @classmethod
    def from_version(
        cls, name: str, environment: str, detail: Mapping[str, Any], source: Source = "server"
    ) -> Prompt:
        """From the body of `GET /v1/prompts/{name}/versions/{n}` (reason `explicit`)."""
        return cls(
            name=name,
            version=int(detail["number"]),
            content_hash=str(detail["content_hash"]),
            content=dict(detail["content"]),
            variables=list(detail.get("variables") or []),
            environment=environment,
            reason="explicit",
            source=source,
        )

    @classmethod
    def from_content(
        cls, name: str, environment: str, content: Mapping[str, Any], version: int | None = None
    ) -> Prompt:
        """A caller's own content as a prompt (for `fallback=`): `chat` or `text` as the server
        infers it, hashed the server's way over the content as given."""
        kind = content.get("type") or ("chat" if "messages" in content else "text")
        normalised = {"type": kind, **{k: v for k, v in content.items() if k != "type"}}
        encoded = json.dumps(normalised, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return cls(
            name=name,
            version=version,
            content_hash="sha256:" + hashlib.sha256(encoded.encode()).hexdigest(),
            content=normalised,
            variables=template_variables(normalised),
            environment=environment,
            reason="fallback",
            source="fallback",
        )

    def to_snapshot(self) -> dict[str, Any]:
        """A JSON-ready form that `from_snapshot` reads back (the disk snapshot's body)."""
        expires = self.pin_expires_at
        return {
            "format": SNAPSHOT_FORMAT,
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "content": self.content,
            "variables": self.variables,
            "environment": self.environment,
            "reason": self.reason,
            "tenant": self.tenant,
            "key": self.key,
            "rollout": self.rollout,
            "pin_expires_at": None if expires is None else expires.isoformat(),
            "cause_event_id": self.cause_event_id,
            "position": self.position,
            "fetched_at": self.fetched_at.isoformat(),
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> Prompt:
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {data.get('format')!r} is not {SNAPSHOT_FORMAT}")
        expires = data.get("pin_expires_at")
        return cls(
            name=str(data["name"]),
            version=data["version"],
            content_hash=data["content_hash"],
            content=dict(data["content"]),
            variables=list(data["variables"]),
            environment=str(data["environment"]),
            reason=str(data["reason"]),
            tenant=data.get("tenant"),
            key=data.get("key"),
            rollout=data.get("rollout"),
            pin_expires_at=None if expires is None else _aware(expires),
            cause_event_id=data.get("cause_event_id"),
            position=data.get("position"),
            source="snapshot",
            fetched_at=_aware(data["fetched_at"]),
        )

    def __repr__(self) -> str:
        return (
            f"Prompt(name={self.name!r}, version={self.version!r}, reason={self.reason!r}, "
            f"environment={self.environment!r}, tenant={self.tenant!r}, source={self.source!r})"
        )


def _aware(text: str) -> datetime:
    parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
