"""Audit answers read from the interval views by indexed lookups; they must equal replay's."""

# How. An answer at `t` rebuilds the few parts of a `ResolutionState` that `resolve` reads —
# the prompt (archived at t or not, with the versions it may serve), the workspace's
# environments at t, the pin valid at t and the deployment interval in force at t — then
# asks `resolve` itself, so the rule lives in one place. One statement (`_MomentQuery`)
# reads all of it: each part is one indexed lookup of at most a row, joined onto one
# result row, with the versions those rows name and the audit-log rows of the events an
# answer cites. Causing events are cited from their audit-log rows; the log itself is read
# only for a workspace's environments (the audit log does not hold them), once per
# environments event, which is immutable, and then kept per view store.
# Intervals ask the same question at every time in the window at which a view row opens or
# closes, and merge neighbours with one answer, as replay does.
#
# Times are the events' own timestamps, as the views store them. Replay agrees whenever no
# aggregate's clock went back; `promptrecord verify` reports any place where they differ.

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.deployment import Deployment
from promptrecord.domain.errors import Conflict, DomainError, NotFound
from promptrecord.domain.pin import TenantPin
from promptrecord.domain.prompt import Prompt
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
from promptrecord.projections.folding import Row, Table
from promptrecord.projections.folding_history import AUDIT_LOG, DEPLOYMENT_INTERVALS, PIN_INTERVALS
from promptrecord.projections.folding_state import CATALOG, VERSIONS
from promptrecord.projections.replay import SETS_SERVING
from promptrecord.projections.view_queries import ViewQueries
from promptrecord.projections.views import ViewStore

ARCHIVAL = ("Prompt.Archived", "Prompt.Unarchived")
ENVIRONMENTS = ("Workspace.Created", "Workspace.EnvironmentsSet")
STARTED = "Deployment.RolloutStarted"
PROMOTED = "Deployment.Promoted"


def _types_with_reason() -> frozenset[str]:
    """The event types that carry a `reason`: the audit log stores an empty one as NULL."""
    found = set()
    for aggregate in (Workspace, Prompt, Deployment, TenantPin):
        for name in dir(aggregate):
            kind = getattr(aggregate, name)
            if (
                isinstance(kind, type)
                and issubclass(kind, aggregate.Event)
                and dataclasses.is_dataclass(kind)
                and "reason" in {f.name for f in dataclasses.fields(kind)}
            ):
                found.add(kind.__qualname__)
    return frozenset(found)


HAS_REASON = _types_with_reason()

# What an audit-log row needs to cite its event as replay cites it from the log.
_CITED = (
    "position",
    "event_id",
    "type",
    "actor_key_id",
    "actor_key_name",
    "on_behalf_of",
    "reason",
    "timestamp",
)
_PIN = ("version", "expires_at", "cause_event_id")
_DEPLOYMENT = (
    "serving_version",
    "rollout_id",
    "baseline",
    "candidate",
    "share",
    "key_by",
    "cause_event_id",
)
# Not content or variables: `resolve` does not read them, and no answer shows them.
_VERSION = ("content_hash", "event_id", "committed_at")
_NEWEST_INTERVAL = ' ORDER BY "valid_from" DESC, "position" DESC LIMIT 1'
_NEWEST_EVENT = ' ORDER BY "timestamp" DESC, "position" DESC LIMIT 1'
# The events an answer may cite: the pin's, the deployment interval's, the one that set the
# serving version, the start of the rollout in force. Their audit-log rows are joined as `k`,
# a result row each.
_CAUSES = tuple(f'"{alias}"."cause_event_id"' for alias in ("p", "d", "s", "r"))
# Joined versions, and the number each is joined on: pinned, serving, rollout candidate.
_VERSIONS = {"pv": '"p"."version"', "sv": '"d"."serving_version"', "cv": '"d"."candidate"'}


def _literal(*kinds: str) -> str:
    """Event type names (constants of the code) as SQL string literals."""
    return ", ".join("'" + kind.replace("'", "''") + "'" for kind in kinds)


class _MomentQuery:
    """One statement that reads, for one subject at one time, everything an answer needs.

    Each CTE is one indexed lookup of the newest row at or before the time: the pin interval
    valid then (`p`), the deployment interval in force (`d`), the last interval that set the
    serving version (`s`), the start of the rollout in force (`r`), the last archive (`a`)
    and unarchive (`u`) — apart, so each is an index descent on (workspace, prompt, type,
    timestamp) — and the last event that set the workspace's environments (`e`). They are
    joined onto one row with the catalog entry (`c`), the versions the pin and deployment
    name, and the audit-log rows of the events an answer may cite (`k`, by unique event id:
    one result row per cited event, the rest repeated; one row when there is none).

    The text is kept short — short aliases, result columns named `x<n>`, event types as
    literals — since psycopg parses a statement longer than 4 KiB afresh on every execution
    (about 70 µs for this one, which stays a little over).
    """

    def __init__(self, store: ViewQueries) -> None:
        self.params: list[str] = []  # the name of each `?`, in text order
        self.types: dict[str, str] = {}  # result column -> logical type, for decoding
        self.columns: list[tuple[str, str, str]] = []  # (result column, alias, column)
        pin, deployments = store.table_name(PIN_INTERVALS), store.table_name(DEPLOYMENT_INTERVALS)
        audit, versions = store.table_name(AUDIT_LOG), store.table_name(VERSIONS)
        catalog = store.table_name(CATALOG)
        ws_prompt_env = '"workspace" = ? AND "prompt" = ? AND "environment" = ?'
        at = '"valid_from" <= ?'
        ctes = [  # (name, text, params): in text order
            (
                "p",
                f"SELECT {_names(_PIN)} FROM {pin} WHERE "
                f'"workspace" = ? AND "tenant" = ? AND "prompt" = ? AND "environment" = ? '
                f'AND {at} AND "valid_to" > ?' + _NEWEST_INTERVAL,
                ("workspace", "tenant", "prompt", "environment", "at", "at"),
            ),
            (
                "d",
                f"SELECT {_names(_DEPLOYMENT)} FROM {deployments} WHERE {ws_prompt_env} "
                f'AND {at} AND ("valid_to" IS NULL OR "valid_to" > ?)' + _NEWEST_INTERVAL,
                ("workspace", "prompt", "environment", "at", "at"),
            ),
            (
                "s",
                f'SELECT "cause_event_id" FROM {deployments} WHERE {ws_prompt_env} AND {at} '
                f'AND "cause_type" IN ({_literal(*sorted(SETS_SERVING))})' + _NEWEST_INTERVAL,
                ("workspace", "prompt", "environment", "at"),
            ),
            (
                "r",
                f'SELECT "cause_event_id" FROM {deployments} WHERE {ws_prompt_env} AND {at} '
                f'AND "cause_type" = {_literal(STARTED)} '
                'AND "rollout_id" = (SELECT "rollout_id" FROM "d")' + _NEWEST_INTERVAL,
                ("workspace", "prompt", "environment", "at"),
            ),
            (
                "a",
                f"SELECT {_names(_CITED)} FROM {audit} WHERE "
                f'"workspace" = ? AND "prompt" = ? AND "type" = {_literal(ARCHIVAL[0])} '
                'AND "timestamp" <= ?' + _NEWEST_EVENT,
                ("workspace", "prompt", "at"),
            ),
            (
                "u",
                f'SELECT "timestamp", "position" FROM {audit} WHERE '
                f'"workspace" = ? AND "prompt" = ? AND "type" = {_literal(ARCHIVAL[1])} '
                'AND "timestamp" <= ?' + _NEWEST_EVENT,
                ("workspace", "prompt", "at"),
            ),
            (
                "e",
                f'SELECT "position", "event_id" FROM {audit} WHERE "workspace" = ? '
                f'AND "prompt" IS NULL AND "type" IN ({_literal(*ENVIRONMENTS)}) '
                'AND "timestamp" <= ?' + _NEWEST_EVENT,
                ("workspace", "at"),
            ),
        ]
        for _, _, names in ctes:
            self.params += names
        known = (
            f'(SELECT "position" FROM {audit} WHERE "workspace" = ? ORDER BY "position" LIMIT 1)'
        )
        promoted = (
            f'(SELECT "valid_from" FROM {deployments} WHERE {ws_prompt_env} '
            f'AND "cause_type" = {_literal(PROMOTED)} ORDER BY "valid_from", "position" LIMIT 1)'
        )
        # The newer of the last archive and unarchive, in the order of the log's times.
        archived = (
            'CASE WHEN "u"."position" IS NULL OR "a"."timestamp" > "u"."timestamp" OR '
            '("a"."timestamp" = "u"."timestamp" AND "a"."position" > "u"."position") THEN 1 END'
        )
        selected = [
            self._expression("workspace_known", known, "int", ("workspace",)),
            self._expression("first_promoted", promoted, "time", ("workspace", "prompt", "env")),
            self._expression("archived", archived, "int", ()),
            *self._select("c", CATALOG, ("created_at",)),
            *self._select("p", PIN_INTERVALS, _PIN),
            *self._select("d", DEPLOYMENT_INTERVALS, _DEPLOYMENT),
            *self._select("a", AUDIT_LOG, _CITED),
            *self._select("e", AUDIT_LOG, ("position", "event_id")),
            *self._select("s", DEPLOYMENT_INTERVALS, ("cause_event_id",)),
            *self._select("r", DEPLOYMENT_INTERVALS, ("cause_event_id",)),
        ]
        for alias in _VERSIONS:
            selected += self._select(alias, VERSIONS, _VERSION)
        selected += self._select("k", AUDIT_LOG, _CITED)
        joins = [f'LEFT JOIN {catalog} AS "c" ON "c"."workspace" = ? AND "c"."prompt" = ?']
        self.params += ["workspace", "prompt"]
        joins += [f'LEFT JOIN "{name}" ON TRUE' for name, _, _ in ctes]
        joins += [
            f'LEFT JOIN {versions} AS "{alias}" ON "{alias}"."workspace" = "c"."workspace" '
            f'AND "{alias}"."prompt" = "c"."prompt" AND "{alias}"."number" = {number}'
            for alias, number in _VERSIONS.items()
        ]
        joins.append(f'LEFT JOIN {audit} AS "k" ON "k"."event_id" IN ({", ".join(_CAUSES)})')
        self.text = (
            "WITH "
            + ", ".join(f'"{name}" AS ({text})' for name, text, _ in ctes)
            + f' SELECT {", ".join(selected)} FROM (SELECT 1 AS "one") AS "b" '
            + " ".join(joins)
        )

    def _expression(
        self, name: str, expression: str, type_name: str, params: tuple[str, ...]
    ) -> str:
        """A computed column of the select list; it comes before the joins in the text."""
        self.params += params
        return self._column("", name, type_name, expression)

    def _select(self, alias: str, table: Table, names: tuple[str, ...]) -> list[str]:
        types = {column.name: column.type for column in table.columns}
        return [self._column(alias, name, types[name], f'"{alias}"."{name}"') for name in names]

    def _column(self, alias: str, name: str, type_name: str, expression: str) -> str:
        result = f"x{len(self.columns)}"
        self.columns.append((result, alias, name))
        self.types[result] = type_name
        return f"{expression} {result}"

    def values(self, subject: tuple[str, str, str, str], at: datetime) -> list[Any]:
        workspace, tenant, prompt, environment = subject
        named = {
            "workspace": workspace,
            "tenant": tenant,
            "prompt": prompt,
            "environment": environment,
            "env": environment,
            "at": at,
        }
        return [named[name] for name in self.params]

    def parts(self, rows: list[Row]) -> tuple[dict[str, Row], list[Row]]:
        """The result as {alias: {column: value}} (computed columns under alias ""), and the
        cited audit-log rows."""
        parts: dict[str, Row] = {}
        for result, alias, name in self.columns:
            parts.setdefault(alias, {})[name] = rows[0][result]
        cited = [
            {name: row[result] for result, alias, name in self.columns if alias == "k"}
            for row in rows
        ]
        return parts, cited


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _cited(row: Row) -> CausingEvent | None:
    """The event of a joined audit-log row, as replay cites it from the log."""
    if row["event_id"] is None:
        return None
    kind, reason = row["type"], row["reason"]
    if reason is None and kind in HAS_REASON:
        reason = ""  # the audit log keeps an empty reason as NULL; the event holds ""
    timestamp: datetime = row["timestamp"]
    return CausingEvent(
        id=row["event_id"],
        type=kind,
        actor={
            "key_id": row["actor_key_id"],
            "key_name": row["actor_key_name"],
            "on_behalf_of": row["on_behalf_of"],
        },
        timestamp=timestamp.astimezone(UTC),
        position=row["position"],
        reason=reason,
    )


class _Moment:
    """What the views say held at one time: the state `resolve` reads, and its causes."""

    def __init__(self, audit: ViewAudit, subject: tuple[str, str, str, str], at: datetime):
        self.audit, self.at = audit, at
        self.workspace, self.tenant, self.prompt, self.environment = subject
        found, cited = audit.moment(subject, at)
        self.found, computed = found, found[""]
        self.state = ResolutionState()
        self.archived: CausingEvent | None = None
        self.cited = {
            event.id: event for event in (_cited(row) for row in cited) if event is not None
        }
        self.created_at: datetime | None = found["c"]["created_at"]
        if self.created_at is not None and self.created_at <= at:
            if computed["archived"] is not None:
                self.archived = _cited(found["a"])
            self.state.prompts[(self.workspace, self.prompt)] = PromptView(
                self.workspace, self.prompt, self.archived is not None
            )
        environments = audit.environments_of(found["e"]["position"], found["e"]["event_id"])
        if environments is not None:
            self.state.workspaces[self.workspace] = WorkspaceView(self.workspace, environments)
        pin = found["p"]
        if pin["version"] is not None:
            key = (self.workspace, self.tenant, self.prompt, self.environment)
            self.state.pins[key] = PinView(pin["version"], pin["expires_at"], pin["cause_event_id"])
            self._add_version(pin["version"], found["pv"])
        deployment = found["d"]
        if deployment["serving_version"] is not None:
            cause = deployment["cause_event_id"]
            rollout = None
            if deployment["rollout_id"] is not None:
                rollout = RolloutView(
                    deployment["rollout_id"],
                    deployment["baseline"],
                    deployment["candidate"],
                    deployment["share"],
                    deployment["key_by"],
                    cause,
                )
                self._add_version(deployment["candidate"], found["cv"])
            self.state.deployments[(self.workspace, self.prompt, self.environment)] = (
                DeploymentView(deployment["serving_version"], rollout, cause)
            )
            self._add_version(deployment["serving_version"], found["sv"])

    def _add_version(self, number: int, version: Row) -> None:
        prompt = self.state.prompts.get((self.workspace, self.prompt))
        # A version committed after `at` is left out, as replay's fold leaves it out: then
        # `resolve` fails to find it and the answer is the clock-skew refusal replay gives.
        committed = version["committed_at"]  # None: no such version
        if prompt is not None and committed is not None and committed <= self.at:
            prompt.versions[number] = VersionView(
                number,
                {},  # content and variables: see _VERSION
                version["content_hash"],
                [],
                version["event_id"],
            )

    def _resolve(self, key: str | None) -> Resolution:
        """`resolve` at this time; its refusals as `resolve` words them."""
        if self.found[""]["workspace_known"] is None:
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
        except KeyError:
            raise Conflict(
                f"at {show_time(self.at)} the log serves a version of {self.prompt!r} whose "
                "commit is timed later (the writers' clocks disagree); ask about a time a few "
                "seconds later",
                code="clock_skew",
            ) from None

    def resolve(self, key: str | None) -> Resolution:
        """`resolve` at this time, its refusals reworded as replay words them."""
        try:
            return self._resolve(key)
        except DomainError as refusal:
            if refusal.code in ("workspace_not_found", "clock_skew"):
                raise
            raise self._reworded(refusal) from None

    def served(self, key: str | None) -> Served:
        try:
            return Served.of(self._resolve(key), key)
        except DomainError as refusal:  # only its code counts: no need to reword it
            archived = self.archived if refusal.code == "prompt_archived" else None
            return Served.refused(refusal.code, archived.id if archived is not None else None)

    def _reworded(self, refusal: DomainError) -> DomainError:
        ws = self.state.workspaces.get(self.workspace)
        return refusal_at(
            refusal,
            self.at,
            self.prompt,
            self.environment,
            created_at=self.created_at,
            first_promoted_at=self.found[""]["first_promoted"],
            environments=ws.environments if ws is not None else (),
            archived=self.archived,
        )

    def causing_events(self, resolution: Resolution) -> list[CausingEvent]:
        # As replay cites: a pin alone; else what put the serving version in place, and for
        # a rollout its start (the adjustment in force is the interval's own cause).
        ids = {resolution.cause}
        if resolution.reason != "pinned":
            ids.add(self.found["s"]["cause_event_id"])
        if resolution.reason == "rollout":
            ids.add(self.found["r"]["cause_event_id"])
        cited = [self.cited.get(ident) for ident in ids if ident is not None]
        return sorted((c for c in cited if c is not None), key=lambda c: c.position)


# The environments each workspace-environments event set, per view store: (position, event
# id) -> environments. An event never changes, so these never go stale; a store's entries
# go with it.
_ENVIRONMENTS: WeakKeyDictionary[ViewQueries, dict[tuple[int, str], tuple[str, ...]]] = (
    WeakKeyDictionary()
)
_ENVIRONMENTS_LOCK = threading.Lock()


class ViewAudit:
    """The `AuditSource` that answers from the views (`?method=views`)."""

    method = "views"

    def __init__(self, store: ViewStore, app: PromptRecord) -> None:
        if not isinstance(store, ViewQueries):
            msg = f"answering from the views needs a SQL view store, not {store!r}"
            raise TypeError(msg)
        self.store: ViewQueries = store
        self.app = app
        self._moment_query: _MomentQuery | None = None
        with _ENVIRONMENTS_LOCK:
            self._environments = _ENVIRONMENTS.setdefault(store, {})

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

    # --- reads -------------------------------------------------------------------------------

    def moment(
        self, subject: tuple[str, str, str, str], at: datetime
    ) -> tuple[dict[str, Row], list[Row]]:
        """What `_MomentQuery` reads for `subject` at `at` (see `_MomentQuery.parts`)."""
        if self._moment_query is None:
            self._moment_query = _MomentQuery(self.store)
        query = self._moment_query
        rows = self.store.select(query.text, query.values(subject, at), query.types)
        return query.parts(rows)

    def environments_of(self, position: int | None, ident: str | None) -> list[str] | None:
        """The environments the event at `position` set (None for no event), read from the
        log once and then remembered: the audit log does not hold them."""
        if position is None or ident is None:
            return None
        found = self._environments.get((position, ident))
        if found is None:
            event = self._event_at(position)
            if event is None:
                return None
            found = tuple(event.environments)
            self._environments[(position, ident)] = found
        return list(found)

    def _event_at(self, position: int) -> Any:
        found = self.app.recorder.select_notifications(start=position, limit=1)
        if not found or found[0].id != position:
            return None
        return self.app.mapper.to_domain_event(found[0])
