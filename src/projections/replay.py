"""Audit answers by replaying the raw event log up to a time: the ground truth views must equal."""

# Times. Every event carries the application clock's `timestamp`. Within one aggregate the
# timestamps do not go back, but the log interleaves aggregates written by processes whose
# clocks differ slightly, so a later log position may carry an earlier time. Replay therefore
# never stops at the first event later than `at`: it reads the whole log and keeps each event
# whose time is at or before `at`. Should one aggregate's own times ever go back (a writer's
# clock stepped back), an event counts from the latest time its aggregate has reached, so
# what is folded is always a prefix of each aggregate's history: never a RolloutAdjusted
# without its RolloutStarted.

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import event_id
from promptrecord.domain.deployment import Deployment
from promptrecord.domain.errors import Conflict, DomainError, NotFound
from promptrecord.domain.pin import TenantPin
from promptrecord.domain.prompt import Prompt
from promptrecord.domain.resolution import Resolution, ResolutionState, resolve
from promptrecord.domain.workspace import Workspace
from promptrecord.projections.audit import (
    AuditAnswer,
    CausingEvent,
    Interval,
    Served,
    as_utc,
    refusal_at,
    show_time,
)

LOG_PAGE = 1000

# Deployment events after which a new version serves (and any rollout is over).
SETS_SERVING = frozenset(
    {"Deployment.Promoted", "Deployment.RolloutCompleted", "Deployment.RolledBack"}
)


def replay_state(app: PromptRecord, at: datetime, workspace: str | None = None) -> ResolutionState:
    """The state `resolve` would have read at `at`: every event up to then, folded.

    With `workspace`, only that workspace's workspace, prompt, deployment and pin events.
    """
    at = as_utc(at, "at")
    state = ResolutionState()
    members: set[UUID] = set()
    beyond: set[UUID] = set()  # aggregates with an event after `at`: the rest is later too
    for position, event in _whole_log(app):
        origin = event.originator_id
        if workspace is not None:
            if _workspace_of(event) == workspace:
                members.add(origin)
            if origin not in members:
                continue
        if origin in beyond or event.timestamp > at:
            beyond.add(origin)
            continue
        _fold_in(state, event, position)
    return state


def answer_at(
    app: PromptRecord,
    workspace: str,
    tenant: str,
    prompt: str,
    environment: str,
    at: datetime,
    key: str | None = None,
) -> AuditAnswer:
    """What `tenant` (or routing `key`) got at `at`, from one pass over the log."""
    return TenantHistory.read(app, workspace, tenant, prompt, environment).answer_at(at, key)


def intervals(
    app: PromptRecord,
    workspace: str,
    tenant: str,
    prompt: str,
    environment: str,
    start: datetime,
    end: datetime,
    key: str | None = None,
) -> list[Interval]:
    """Every maximal interval of [start, end) with one answer, from one pass over the log."""
    history = TenantHistory.read(app, workspace, tenant, prompt, environment)
    return history.intervals(start, end, key)


class ReplayAudit:
    """The `AuditSource` that answers from the raw log (`?method=replay`)."""

    method = "replay"

    def __init__(self, app: PromptRecord) -> None:
        self.app = app

    def answer_at(
        self,
        workspace: str,
        tenant: str,
        prompt: str,
        environment: str,
        at: datetime,
        key: str | None = None,
    ) -> AuditAnswer:
        return answer_at(self.app, workspace, tenant, prompt, environment, at, key)

    def intervals(
        self,
        workspace: str,
        tenant: str,
        prompt: str,
        environment: str,
        start: datetime,
        end: datetime,
        key: str | None = None,
    ) -> list[Interval]:
        return intervals(self.app, workspace, tenant, prompt, environment, start, end, key)


@dataclass(frozen=True)
class _Entry:
    position: int
    effective: datetime  # the event's time, or its aggregate's latest earlier time if later
    event: Any

    @property
    def type(self) -> str:
        return type(self.event).__qualname__


class _Fold:
    """A ResolutionState over one tenant's events, plus which events made the situation."""

    def __init__(self) -> None:
        self.state = ResolutionState()
        self.serving_event: str | None = None  # what put the serving version in place
        self.rollout_events: list[str] = []  # RolloutStarted, then the latest RolloutAdjusted
        self.archived_event: str | None = None

    def apply(self, entry: _Entry) -> None:
        _fold_in(self.state, entry.event, entry.position)
        kind, ident = entry.type, event_id(entry.event)
        if kind in SETS_SERVING:
            self.serving_event, self.rollout_events = ident, []
        elif kind == "Deployment.RolloutStarted":
            self.rollout_events = [ident]
        elif kind == "Deployment.RolloutAdjusted":
            self.rollout_events = [*self.rollout_events[:1], ident]
        elif kind == "Deployment.RolloutAborted":
            self.rollout_events = []
        elif kind == "Prompt.Archived":
            self.archived_event = ident
        elif kind == "Prompt.Unarchived":
            self.archived_event = None


class TenantHistory:
    """The events that decide what one tenant gets of one prompt in one environment: those
    of the workspace, the prompt, the (prompt, environment) deployment and the tenant's pin,
    in time order. Every answer comes from `resolve` over a fold of them, so the rule lives
    in one place."""

    def __init__(
        self,
        workspace: str,
        tenant: str,
        prompt: str,
        environment: str,
        events: Iterable[tuple[int, Any]],
    ) -> None:
        self.workspace, self.tenant = workspace, tenant
        self.prompt, self.environment = prompt, environment
        self.entries = _in_time_order(events)
        self._times = [entry.effective for entry in self.entries]
        self._by_id = {event_id(entry.event): entry for entry in self.entries}

    @staticmethod
    def aggregate_ids(workspace: str, tenant: str, prompt: str, environment: str) -> set[UUID]:
        return {
            Workspace.create_id(workspace),
            Prompt.create_id(workspace, prompt),
            Deployment.create_id(workspace, prompt, environment),
            TenantPin.create_id(workspace, tenant, prompt, environment),
        }

    @classmethod
    def read(
        cls, app: PromptRecord, workspace: str, tenant: str, prompt: str, environment: str
    ) -> TenantHistory:
        """One pass over the whole log, decoding only the events of these four aggregates."""
        wanted = cls.aggregate_ids(workspace, tenant, prompt, environment)
        events = _log_of(app, wanted)
        return cls(workspace, tenant, prompt, environment, events)

    # --- the questions -----------------------------------------------------------------------

    def answer_at(self, at: datetime, key: str | None = None) -> AuditAnswer:
        at = as_utc(at, "at")
        fold = self._fold_until(at)
        resolution = self._resolve(fold, at, key)
        served = Served.of(resolution, key)
        content_hash = resolution.version.content_hash if served.version is not None else None
        return AuditAnswer(
            workspace=self.workspace,
            tenant=self.tenant,
            prompt=self.prompt,
            environment=self.environment,
            key=key,
            at=at,
            version=served.version,
            content_hash=content_hash,
            reason=resolution.reason,
            rollout=served.rollout,
            pin_expires_at=served.pin_expires_at,
            cause=resolution.cause,
            events=self._causing_events(fold, resolution),
        )

    def intervals(self, start: datetime, end: datetime, key: str | None = None) -> list[Interval]:
        """Walk the events of [start, end) in time order, and the pin expiries between them
        (an expiry has no event), asking `resolve` at each change point."""
        start, end = as_utc(start, "from"), as_utc(end, "to")
        self._require_subject_before(end)
        fold, applied = _Fold(), 0
        t = start
        found: list[tuple[datetime, Served]] = []
        while True:
            while applied < len(self.entries) and self.entries[applied].effective <= t:
                fold.apply(self.entries[applied])
                applied += 1
            served = self._served_at(fold, t, key)
            if not found or found[-1][1] != served:
                found.append((t, served))
            t_next = self._next_change(fold, applied, t)
            if t_next is None or t_next >= end:
                break
            t = t_next.astimezone(UTC)
        ends = [since for since, _ in found[1:]] + [None]
        return [
            Interval.of(since, until, served)
            for (since, served), until in zip(found, ends, strict=True)
        ]

    # --- folding and resolving ---------------------------------------------------------------

    def _fold_until(self, at: datetime) -> _Fold:
        fold = _Fold()
        for entry in self.entries[: bisect_right(self._times, at)]:
            fold.apply(entry)
        return fold

    def _next_change(self, fold: _Fold, applied: int, t: datetime) -> datetime | None:
        candidates = []
        if applied < len(self.entries):
            candidates.append(self.entries[applied].effective)
        pin = fold.state.pins.get((self.workspace, self.tenant, self.prompt, self.environment))
        if pin is not None and pin.expires_at > t:
            candidates.append(pin.expires_at)
        return min(candidates, default=None)

    def _served_at(self, fold: _Fold, at: datetime, key: str | None) -> Served:
        try:
            return Served.of(self._resolve(fold, at, key), key)
        except DomainError as refusal:
            cause = fold.archived_event if refusal.code == "prompt_archived" else None
            return Served.refused(refusal.code, cause)

    def _resolve(self, fold: _Fold, at: datetime, key: str | None) -> Resolution:
        """`resolve` at `at`, its refusals reworded for a question about the past."""
        if self._first("Workspace.Created") is None:
            raise NotFound(
                f"workspace {self.workspace!r} does not exist in this database; check its slug",
                field="workspace",
                code="workspace_not_found",
            )
        try:
            return resolve(
                fold.state,
                self.workspace,
                self.prompt,
                self.environment,
                self.tenant,
                key,
                at,
            )
        except DomainError as refusal:
            raise self._reworded(refusal, fold, at) from None
        except KeyError:
            # A deployment or pin names a version whose commit is timed later: the writers'
            # clocks disagreed by more than the gap between the two commands.
            raise Conflict(
                f"at {show_time(at)} the log serves a version of {self.prompt!r} whose commit is "
                "timed later (the writers' clocks disagree); ask about a time a few seconds "
                "later",
                code="clock_skew",
            ) from None

    def _reworded(self, refusal: DomainError, fold: _Fold, at: datetime) -> DomainError:
        ws = fold.state.workspaces.get(self.workspace)
        created, promoted = self._first("Prompt.Created"), self._first("Deployment.Promoted")
        return refusal_at(
            refusal,
            at,
            self.prompt,
            self.environment,
            created_at=created.effective if created is not None else None,
            first_promoted_at=promoted.effective if promoted is not None else None,
            environments=ws.environments if ws is not None else (),
            archived=self._cite(fold.archived_event),
        )

    # --- citing events -----------------------------------------------------------------------

    def _causing_events(self, fold: _Fold, resolution: Resolution) -> list[CausingEvent]:
        # A pin stands alone; otherwise what put the serving version in place, and for a
        # rollout its start and the adjustment that set the share in force.
        ids = {resolution.cause}
        if resolution.reason != "pinned" and fold.serving_event is not None:
            ids.add(fold.serving_event)
        if resolution.reason == "rollout":
            ids.update(fold.rollout_events)
        cited = [self._cite(ident) for ident in ids]
        return sorted((c for c in cited if c is not None), key=lambda c: c.position)

    def _cite(self, ident: str | None) -> CausingEvent | None:
        entry = self._by_id.get(ident) if ident is not None else None
        if entry is None:
            return None
        event = entry.event
        reason = getattr(event, "reason", None)
        return CausingEvent(
            id=event_id(event),
            type=entry.type,
            actor=dict(event.actor),
            timestamp=event.timestamp.astimezone(UTC),
            position=entry.position,
            reason=reason if isinstance(reason, str) else None,
        )

    def _first(self, kind: str) -> _Entry | None:
        return next((entry for entry in self.entries if entry.type == kind), None)

    def _require_subject_before(self, end: datetime) -> None:
        """An interval question about a prompt or environment that never existed before the
        window's end has no intervals to give, only a refusal."""
        fold = self._fold_until(end)
        state = fold.state
        if (self.workspace, self.prompt) not in state.prompts:
            self._resolve(fold, end, None)  # raises prompt_not_found, worded
        ws = state.workspaces.get(self.workspace)
        if ws is not None and self.environment not in ws.environments:
            raise NotFound(
                f"environment {self.environment!r} did not exist in this workspace before "
                f"{show_time(end)}; it has {', '.join(ws.environments)}",
                field="environment",
                code="environment_not_found",
            )


def _fold_in(state: ResolutionState, event: Any, position: int) -> None:
    try:
        state.apply(event, position)
    except (KeyError, AssertionError):
        # Only a log missing or reordering events gets here (e.g. an adjustment with no
        # rollout): answer with where it broke, not with a server error.
        raise Conflict(
            f"the {type(event).__qualname__} event at log position {position} does not follow "
            "from the events before it; the log may have been altered — run "
            "`promptrecord verify`",
            code="log_inconsistent",
            position=position,
        ) from None


def _in_time_order(events: Iterable[tuple[int, Any]]) -> list[_Entry]:
    latest: dict[UUID, datetime] = {}
    entries = []
    for position, event in sorted(events, key=lambda pair: pair[0]):
        origin = event.originator_id
        effective = event.timestamp.astimezone(UTC)
        if origin in latest and latest[origin] > effective:
            effective = latest[origin]
        latest[origin] = effective
        entries.append(_Entry(position, effective, event))
    # Stable by position within one time, so each aggregate keeps its own order.
    entries.sort(key=lambda entry: (entry.effective, entry.position))
    return entries


def _log_of(app: PromptRecord, wanted: set[UUID]) -> list[tuple[int, Any]]:
    # Through the recorder rather than `read_events`: decoding dominates a pass over the
    # log, and the events of every other aggregate are skipped undecoded.
    found: list[tuple[int, Any]] = []
    after = 0
    while True:
        page = app.recorder.select_notifications(
            start=after, limit=LOG_PAGE, inclusive_of_start=False
        )
        for notification in page:
            origin = notification.originator_id
            if not isinstance(origin, UUID):
                origin = UUID(str(origin))
            if origin in wanted:
                found.append((notification.id, app.mapper.to_domain_event(notification)))
        if len(page) < LOG_PAGE:
            return found
        after = page[-1].id


def _whole_log(app: PromptRecord) -> Iterator[tuple[int, Any]]:
    after = 0
    while True:
        page = list(app.read_events(after, LOG_PAGE))
        yield from page
        if len(page) < LOG_PAGE:
            return
        after = page[-1][0]


def _workspace_of(event: Any) -> str | None:
    """The workspace a creation event places its aggregate in (None for other events)."""
    kind = type(event).__qualname__
    if kind == "Workspace.Created":
        return str(event.slug)
    if kind.endswith(".Created"):
        found = getattr(event, "workspace", None)
        return found if isinstance(found, str) else None
    return None
