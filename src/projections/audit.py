"""The audit's answers (what a tenant got at a time, and when it changed) and their interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from promptrecord.domain.errors import Conflict, DomainError, InvalidInput
from promptrecord.domain.resolution import Resolution

# A window longer than this is refused: a year of intervals is already a large export, and a
# bounded window keeps one question from walking an unbounded history.
MAX_WINDOW = timedelta(days=366)

TIME_EXAMPLE = "2026-03-14T09:00:00Z"


@dataclass(frozen=True)
class CausingEvent:
    """One stored event an answer rests on, as an auditor would cite it."""

    id: str
    type: str  # e.g. "Deployment.RolloutStarted"
    actor: dict[str, Any]  # key_id, key_name, on_behalf_of
    timestamp: datetime
    position: int  # in the event log
    reason: str | None = None  # what the actor wrote, where the event carries one

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "actor": dict(self.actor),
            "timestamp": _iso(self.timestamp),
            "position": self.position,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RolloutSplit:
    """A rollout as it applied to the question: the split, and where the tenant (or key) fell.

    `bucket` and `arm` are None when the rollout is keyed by user or request and no key was
    given: then each user or request got either version, and the answer is the split itself.
    """

    rollout_id: str
    baseline: int
    candidate: int
    share: float
    key_by: str  # "tenant" | "user" | "request"
    bucket: float | None
    arm: str | None  # "candidate" | "baseline"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "share": self.share,
            "key_by": self.key_by,
            "bucket": self.bucket,
            "arm": self.arm,
        }


@dataclass(frozen=True)
class Served:
    """The answer proper, without its time: what tells one interval from the next."""

    version: int | None  # None for a split, and for a refusal
    reason: str  # "pinned" | "rollout" | "promoted" | "refused"
    rollout: RolloutSplit | None
    pin_expires_at: datetime | None
    cause: str | None
    refusal: str | None = None  # the refusal's code

    @classmethod
    def of(cls, resolution: Resolution, key: str | None) -> Served:
        """What `resolve` decided, except that traffic split by user or request with no
        key asked about is the split, not the baseline `resolve` falls back to."""
        decision = resolution.rollout
        split = None
        version: int | None = resolution.version.number
        if decision is not None:
            undecided = decision.key_by != "tenant" and key is None
            split = RolloutSplit(
                decision.rollout_id,
                decision.baseline,
                decision.candidate,
                decision.share,
                decision.key_by,
                None if undecided else decision.bucket,
                None if undecided else decision.arm,
            )
            if undecided:
                version = None
        expires = resolution.pin_expires_at
        expires = expires.astimezone(UTC) if expires is not None else None
        return cls(version, resolution.reason, split, expires, resolution.cause)

    @classmethod
    def refused(cls, code: str, cause: str | None = None) -> Served:
        return cls(None, "refused", None, None, cause, code)


@dataclass(frozen=True)
class AuditAnswer:
    """Which version `tenant` got of `prompt` in `environment` at `at`, why, and the proof.

    `version` is None exactly when the answer is a split (see `RolloutSplit`); it never
    names one version for traffic that was divided between two.
    """

    workspace: str
    tenant: str
    prompt: str
    environment: str
    key: str | None
    at: datetime
    version: int | None
    content_hash: str | None
    reason: str  # "pinned" | "rollout" | "promoted"
    rollout: RolloutSplit | None
    pin_expires_at: datetime | None
    cause: str  # id of the event that made this the answer
    events: list[CausingEvent] = field(default_factory=list)  # oldest first

    @property
    def is_split(self) -> bool:
        return self.version is None

    @property
    def served(self) -> Served:
        return Served(self.version, self.reason, self.rollout, self.pin_expires_at, self.cause)

    def cause_event(self) -> CausingEvent | None:
        return next((event for event in self.events if event.id == self.cause), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "tenant": self.tenant,
            "prompt": self.prompt,
            "environment": self.environment,
            "key": self.key,
            "at": _iso(self.at),
            "version": self.version,
            "content_hash": self.content_hash,
            "reason": self.reason,
            "rollout": self.rollout.as_dict() if self.rollout is not None else None,
            "pin_expires_at": _iso(self.pin_expires_at),
            "cause_event_id": self.cause,
            "events": [event.as_dict() for event in self.events],
        }


@dataclass(frozen=True)
class Interval:
    """A maximal stretch of a window in which the answer did not change.

    End-exclusive: the answer holds from `valid_from` (inclusive) up to `valid_to`
    (exclusive), where it changed; `valid_to` is None when it still held at the window's
    end. The first interval starts at the window's start even if the answer began earlier.
    A stretch in which nothing could be served has `reason` "refused" and the refusal's
    code in `refusal` (e.g. "not_deployed", "prompt_archived").
    """

    valid_from: datetime
    valid_to: datetime | None
    version: int | None
    reason: str  # "pinned" | "rollout" | "promoted" | "refused"
    rollout: RolloutSplit | None
    pin_expires_at: datetime | None
    cause: str | None  # the event that made this the answer (None for some refusals)
    refusal: str | None = None

    @classmethod
    def of(cls, valid_from: datetime, valid_to: datetime | None, served: Served) -> Interval:
        return cls(
            valid_from,
            valid_to,
            served.version,
            served.reason,
            served.rollout,
            served.pin_expires_at,
            served.cause,
            served.refusal,
        )

    @property
    def served(self) -> Served:
        return Served(
            self.version,
            self.reason,
            self.rollout,
            self.pin_expires_at,
            self.cause,
            self.refusal,
        )

    def holds_at(self, at: datetime) -> bool:
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid_from": _iso(self.valid_from),
            "valid_to": _iso(self.valid_to),
            "version": self.version,
            "reason": self.reason,
            "rollout": self.rollout.as_dict() if self.rollout is not None else None,
            "pin_expires_at": _iso(self.pin_expires_at),
            "cause_event_id": self.cause,
            "refusal": self.refusal,
        }


class AuditSource(Protocol):
    """One way of answering the audit. Replay of the raw log is the ground truth; answers
    read from the views must equal it (`promptrecord verify` compares the two).

    Both methods raise a `DomainError` for a question that has no answer: `answer_at` when
    nothing could be served at `at` (codes prompt_not_found, environment_not_found,
    prompt_archived, not_deployed; workspace_not_found for a workspace never created),
    `intervals` when the prompt or environment never
    existed by the window's end (stretches of refusal inside a window are intervals).
    """

    method: str  # "replay" | "views"

    def answer_at(
        self,
        workspace: str,
        tenant: str,
        prompt: str,
        environment: str,
        at: datetime,
        key: str | None = None,
    ) -> AuditAnswer: ...

    def intervals(
        self,
        workspace: str,
        tenant: str,
        prompt: str,
        environment: str,
        start: datetime,
        end: datetime,
        key: str | None = None,
    ) -> list[Interval]: ...


def refusal_at(
    refusal: DomainError,
    at: datetime,
    prompt: str,
    environment: str,
    *,
    created_at: datetime | None = None,
    first_promoted_at: datetime | None = None,
    environments: Sequence[str] = (),
    archived: CausingEvent | None = None,
) -> DomainError:
    """`resolve`'s refusal reworded for a question about the past: what was missing then and
    when it came. Every `AuditSource` words its refusals through this, so they agree."""
    when, code = show_time(at), refusal.code
    if code == "prompt_not_found":
        detail = (
            f"prompt {prompt!r} did not exist yet at {when}; it was created at "
            f"{show_time(created_at)} — ask about a later time"
            if created_at is not None
            else f"prompt {prompt!r} does not exist in this workspace; check the name"
        )
    elif code == "environment_not_found":
        detail = (
            f"environment {environment!r} did not exist at {when} (the workspace had "
            f"{', '.join(environments) or 'none'}); check the name, or ask about a later time "
            "if it was added since"
        )
    elif code == "prompt_archived":
        since = f" since {show_time(archived.timestamp)}" if archived is not None else ""
        detail = f"prompt {prompt!r} was archived at {when}{since}, so no version was served"
        events = [archived.as_dict()] if archived is not None else []
        return Conflict(detail, code=code, at=_iso(at), events=events)
    elif code == "not_deployed":
        detail = f"nothing was deployed for prompt {prompt!r} in {environment} at {when}; " + (
            f"the first promotion there was at {show_time(first_promoted_at)}"
            if first_promoted_at is not None
            else "nothing has ever been promoted there"
        )
    else:
        return refusal
    return type(refusal)(detail, field=refusal.field, code=code, at=_iso(at))


def parse_instant(text: str, field: str) -> datetime:
    """An ISO 8601 time with a timezone (`Z` or an offset), as UTC; anything else is refused,
    because an audit answer for an ambiguous local time would be a guess."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"{field} {text!r} is not an ISO 8601 time; write it like {TIME_EXAMPLE}",
            field=field,
            code="invalid_time",
        ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            f"{field} {text!r} has no timezone; add Z for UTC or an offset such as +01:00, "
            f"e.g. {TIME_EXAMPLE}",
            field=field,
            code="invalid_time",
        )
    return value.astimezone(UTC)


def check_window(start: datetime, end: datetime, start_field: str, end_field: str) -> None:
    """Refuse an empty, reversed or overlong window, naming the bound to change."""
    if start >= end:
        raise InvalidInput(
            f"{end_field} ({_iso(end)}) must be after {start_field} ({_iso(start)}); "
            "the window is end-exclusive",
            field=end_field,
            code="invalid_window",
        )
    if end - start > MAX_WINDOW:
        raise InvalidInput(
            f"the window from {_iso(start)} to {_iso(end)} is longer than "
            f"{MAX_WINDOW.days} days; ask for a shorter one (several if need be)",
            field=end_field,
            code="window_too_long",
        )


def as_utc(at: datetime, field: str) -> datetime:
    """`at` in UTC; a naive time is refused, since it would be read as local time."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInput(f"{field} needs a timezone, e.g. {TIME_EXAMPLE}", field=field)
    return at.astimezone(UTC)


def show_time(at: datetime) -> str:
    """A time for people: `2026-03-14 09:00:00 UTC`."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
