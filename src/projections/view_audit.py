"""Audit answers read from the interval views by indexed lookups; they must equal replay's."""

# How. An answer at `t` rebuilds the few parts of a `ResolutionState` that `resolve` reads —
# the prompt (archived at t or not, with the versions it may serve), the workspace's
# environments at t, the pin valid at t and the deployment interval in force at t — from
# one indexed lookup each, then asks `resolve` itself, so the rule lives in one place.
# Causing events are read from the log by position (the primary key), never by a scan.
# Intervals ask the same question at every time in the window at which a view row opens or
# closes, and merge neighbours with one answer, as replay does.
#
# Times are the events' own timestamps, as the views store them. Replay agrees whenever no
# aggregate's clock went back; `promptrecord verify` reports any place where they differ.

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import event_id
from promptrecord.domain.errors import Conflict, DomainError, NotFound
from promptrecord.domain.resolution import (
    DeploymentView,
    PinView,
    PromptView,
    Resolution,
    ResolutionState,
    RolloutView,
    VersionView,
    WorkspaceView,
    resolve,
)
from promptrecord.projections.audit import (
    AuditAnswer,
    CausingEvent,
    Interval,
    Served,
    as_utc,
    refusal_at,
    show_time,
)
from promptrecord.projections.folding_history import AUDIT_LOG, DEPLOYMENT_INTERVALS
from promptrecord.projections.replay import SETS_SERVING
from promptrecord.projections.view_queries import ViewQueries
from promptrecord.projections.views import DeploymentInterval, ViewStore

ARCHIVAL = ("Prompt.Archived", "Prompt.Unarchived")
ENVIRONMENTS = ("Workspace.Created", "Workspace.EnvironmentsSet")
_NEWEST = ' ORDER BY "timestamp" DESC, "position" DESC LIMIT 1'
_NEWEST_INTERVAL = ' ORDER BY "valid_from" DESC, "position" DESC LIMIT 1'


class _Moment:
    """What the views say held at one time: the state `resolve` reads, and its causes."""

    def __init__(self, audit: ViewAudit, subject: tuple[str, str, str, str], at: datetime):
        self.audit, self.at = audit, at
        self.workspace, self.tenant, self.prompt, self.environment = subject
        store = audit.store
        self.state = ResolutionState()
        self.archived_event: str | None = None
        self.deployment: DeploymentInterval | None = None
        entry = store.catalog_entry(self.workspace, self.prompt)
        if entry is not None and entry.created_at <= at:
            archival = audit.latest_event(self.workspace, self.prompt, ARCHIVAL, at)
            archived = archival is not None and archival["type"] == "Prompt.Archived"
            if archived and archival is not None:
                self.archived_event = archival["event_id"]
            self.state.prompts[(self.workspace, self.prompt)] = PromptView(
                self.workspace, self.prompt, archived
            )
        environments = audit.environments_at(self.workspace, at)
        if environments is not None:
            self.state.workspaces[self.workspace] = WorkspaceView(self.workspace, environments)
        pin = store.pin_at(self.workspace, self.tenant, self.prompt, self.environment, at)
        if pin is not None:
            key = (self.workspace, self.tenant, self.prompt, self.environment)
            self.state.pins[key] = PinView(pin.version, pin.expires_at, pin.cause_event_id)
            self._add_version(pin.version)
        deployment = store.deployment_at(self.workspace, self.prompt, self.environment, at)
        if deployment is not None:
            self.deployment = deployment
            split = deployment.rollout
            rollout = None
            if split is not None:
                rollout = RolloutView(
                    split.rollout_id,
                    split.baseline,
                    split.candidate,
                    split.share,
                    split.key_by,
                    deployment.cause_event_id,
                )
                self._add_version(split.candidate)
            self.state.deployments[(self.workspace, self.prompt, self.environment)] = (
                DeploymentView(deployment.version, rollout, deployment.cause_event_id)
            )
            self._add_version(deployment.version)

    def _add_version(self, number: int) -> None:
        prompt = self.state.prompts.get((self.workspace, self.prompt))
        found = self.audit.store.version(self.workspace, self.prompt, number)
        # A version committed after `at` is left out, as replay's fold leaves it out: then
        # `resolve` fails to find it and the answer is the clock-skew refusal replay gives.
        if prompt is not None and found is not None and found.committed_at <= self.at:
            prompt.versions[number] = VersionView(
                number, found.content, found.content_hash, found.variables, found.event_id
            )

    def resolve(self, key: str | None) -> Resolution:
        """`resolve` at this time, its refusals reworded as replay words them."""
        if self.audit.first_event(self.workspace) is None:
            raise NotFound(
                f"workspace {self.workspace!r} does not exist in this database; check its slug",
                field="workspace",
                code="workspace_not_found",
            )
        try:
            return resolve(
                self.state,
                self.workspace,
                self.prompt,
                self.environment,
                self.tenant,
                key,
                self.at,
            )
        except DomainError as refusal:
            raise self._reworded(refusal) from None
        except KeyError:
            raise Conflict(
                f"at {show_time(self.at)} the log serves a version of {self.prompt!r} whose "
                "commit is timed later (the writers' clocks disagree); ask about a time a few "
                "seconds later",
                code="clock_skew",
            ) from None

    def served(self, key: str | None) -> Served:
        try:
            return Served.of(self.resolve(key), key)
        except DomainError as refusal:
            cause = self.archived_event if refusal.code == "prompt_archived" else None
            return Served.refused(refusal.code, cause)

    def _reworded(self, refusal: DomainError) -> DomainError:
        store, audit = self.audit.store, self.audit
        entry = store.catalog_entry(self.workspace, self.prompt)
        first = audit.first_promotion(self.workspace, self.prompt, self.environment)
        ws = self.state.workspaces.get(self.workspace)
        return refusal_at(
            refusal,
            self.at,
            self.prompt,
            self.environment,
            created_at=entry.created_at if entry is not None else None,
            first_promoted_at=first,
            environments=ws.environments if ws is not None else (),
            archived=audit.cite(self.archived_event),
        )

    def causing_events(self, resolution: Resolution) -> list[CausingEvent]:
        # As replay cites: a pin alone; else what put the serving version in place, and for
        # a rollout its start and the adjustment in force (the interval's own cause).
        ids = {resolution.cause}
        if resolution.reason != "pinned":
            serving = self.audit.serving_event(
                self.workspace, self.prompt, self.environment, self.at
            )
            if serving is not None:
                ids.add(serving)
        if resolution.reason == "rollout" and resolution.rollout is not None:
            started = self.audit.rollout_start(
                self.workspace, self.prompt, self.environment, resolution.rollout.rollout_id
            )
            if started is not None:
                ids.add(started)
        cited = [self.audit.cite(ident) for ident in ids]
        return sorted((c for c in cited if c is not None), key=lambda c: c.position)


class ViewAudit:
    """The `AuditSource` that answers from the views (`?method=views`)."""

    method = "views"

    def __init__(self, store: ViewStore, app: PromptRecord) -> None:
        if not isinstance(store, ViewQueries):
            msg = f"answering from the views needs a SQL view store, not {store!r}"
            raise TypeError(msg)
        self.store: ViewQueries = store
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
        at = as_utc(at, "at")
        moment = _Moment(self, (workspace, tenant, prompt, environment), at)
        resolution = moment.resolve(key)
        served = Served.of(resolution, key)
        content_hash = resolution.version.content_hash if served.version is not None else None
        return AuditAnswer(
            workspace=workspace,
            tenant=tenant,
            prompt=prompt,
            environment=environment,
            key=key,
            at=at,
            version=served.version,
            content_hash=content_hash,
            reason=resolution.reason,
            rollout=served.rollout,
            pin_expires_at=served.pin_expires_at,
            cause=resolution.cause,
            events=moment.causing_events(resolution),
        )

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
        start, end = as_utc(start, "from"), as_utc(end, "to")
        subject = (workspace, tenant, prompt, environment)
        self._require_subject_before(subject, end)
        found: list[tuple[datetime, Served]] = []
        for t in self.change_points(subject, start, end):
            served = _Moment(self, subject, t).served(key)
            if not found or found[-1][1] != served:
                found.append((t, served))
        ends: list[datetime | None] = [since for since, _ in found[1:]]
        ends.append(None)
        return [
            Interval.of(since, until, served)
            for (since, served), until in zip(found, ends, strict=True)
        ]

    def change_points(
        self, subject: tuple[str, str, str, str], start: datetime, end: datetime
    ) -> list[datetime]:
        """`start`, and every time in (start, end) at which a row the answer reads opens or
        closes: extra times only repeat an answer, which the merge drops."""
        workspace, tenant, prompt, environment = subject
        times: set[datetime | None] = set()
        entry = self.store.catalog_entry(workspace, prompt)
        if entry is not None:
            times.add(entry.created_at)
        for row in self.store.deployment_intervals(workspace, prompt, environment, start, end):
            times.update((row.valid_from, row.valid_to))
        for pin in self.store.pin_intervals(workspace, tenant, prompt, environment, start, end):
            times.update((pin.valid_from, pin.valid_to))
        where = ['"workspace" = ?', '"timestamp" > ?', '"timestamp" < ?']
        for prompt_is, types in ((prompt, ARCHIVAL), (None, ENVIRONMENTS)):
            clause = '"prompt" = ?' if prompt_is is not None else '"prompt" IS NULL'
            params = [workspace, start, end, *([prompt_is] if prompt_is is not None else [])]
            kinds = f'"type" IN ({", ".join("?" for _ in types)})'
            rows = self.store._query(AUDIT_LOG, [*where, clause, kinds], [*params, *types])
            times.update(row["timestamp"] for row in rows)
        inside = sorted(t.astimezone(UTC) for t in times if t is not None and start < t < end)
        return [start, *inside]

    def _require_subject_before(self, subject: tuple[str, str, str, str], end: datetime) -> None:
        workspace, _, prompt, environment = subject
        moment = _Moment(self, subject, end)
        if (workspace, prompt) not in moment.state.prompts:
            moment.resolve(None)  # raises prompt_not_found, worded
        ws = moment.state.workspaces.get(workspace)
        if ws is not None and environment not in ws.environments:
            raise NotFound(
                f"environment {environment!r} did not exist in this workspace before "
                f"{show_time(end)}; it has {', '.join(ws.environments)}",
                field="environment",
                code="environment_not_found",
            )

    # --- indexed lookups ---------------------------------------------------------------------

    def latest_event(
        self, workspace: str, prompt: str | None, types: tuple[str, ...], at: datetime
    ) -> dict[str, Any] | None:
        """The newest audit row of these types at or before `at` (index: workspace, prompt,
        timestamp)."""
        where = ['"workspace" = ?', '"prompt" = ?' if prompt else '"prompt" IS NULL']
        where += ['"timestamp" <= ?', f'"type" IN ({", ".join("?" for _ in types)})']
        params = [workspace, *([prompt] if prompt else []), at, *types]
        rows = self.store._query(AUDIT_LOG, where, params, _NEWEST)
        return rows[0] if rows else None

    def first_event(self, workspace: str) -> dict[str, Any] | None:
        rows = self.store._query(
            AUDIT_LOG, ['"workspace" = ?'], [workspace], ' ORDER BY "position" LIMIT 1'
        )
        return rows[0] if rows else None

    def environments_at(self, workspace: str, at: datetime) -> list[str] | None:
        """The workspace's environments at `at` (None before it existed), from the event
        that last set them, read from the log by position."""
        row = self.latest_event(workspace, None, ENVIRONMENTS, at)
        if row is None:
            return None
        event = self._event_at(row["position"])
        return list(event.environments) if event is not None else None

    def first_promotion(self, workspace: str, prompt: str, environment: str) -> datetime | None:
        rows = self._deployment_rows(
            workspace, prompt, environment, ['"cause_type" = ?'], ["Deployment.Promoted"]
        )
        return rows[0]["valid_from"] if rows else None

    def serving_event(
        self, workspace: str, prompt: str, environment: str, at: datetime
    ) -> str | None:
        kinds = sorted(SETS_SERVING)
        where = ['"valid_from" <= ?', f'"cause_type" IN ({", ".join("?" for _ in kinds)})']
        rows = self._deployment_rows(
            workspace, prompt, environment, where, [at, *kinds], _NEWEST_INTERVAL
        )
        return str(rows[0]["cause_event_id"]) if rows else None

    def rollout_start(
        self, workspace: str, prompt: str, environment: str, rollout_id: str
    ) -> str | None:
        where = ['"rollout_id" = ?', '"cause_type" = ?']
        params = [rollout_id, "Deployment.RolloutStarted"]
        rows = self._deployment_rows(workspace, prompt, environment, where, params)
        return str(rows[0]["cause_event_id"]) if rows else None

    def _deployment_rows(
        self,
        workspace: str,
        prompt: str,
        environment: str,
        where: list[str],
        params: list[Any],
        tail: str = ' ORDER BY "valid_from", "position" LIMIT 1',
    ) -> list[dict[str, Any]]:
        base = ['"workspace" = ?', '"prompt" = ?', '"environment" = ?']
        return self.store._query(
            DEPLOYMENT_INTERVALS, [*base, *where], [workspace, prompt, environment, *params], tail
        )

    def cite(self, ident: str | None) -> CausingEvent | None:
        """The event as replay cites it: found in the audit log, read from the log."""
        entry = self.store.audit_event(ident) if ident is not None else None
        event = self._event_at(entry.position) if entry is not None else None
        if entry is None or event is None:
            return None
        reason = getattr(event, "reason", None)
        return CausingEvent(
            id=event_id(event),
            type=type(event).__qualname__,
            actor=dict(event.actor),
            timestamp=event.timestamp.astimezone(UTC),
            position=entry.position,
            reason=reason if isinstance(reason, str) else None,
        )

    def _event_at(self, position: int) -> Any:
        found = self.app.recorder.select_notifications(start=position, limit=1)
        if not found or found[0].id != position:
            return None
        return self.app.mapper.to_domain_event(found[0])
