"""The views' typed reads in SQL both backends speak, over each backend's types and cursors."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from promptrecord.projections.folding import TIME, Row, Table
from promptrecord.projections.folding_admin import (
    API_KEYS,
    PROMOTION_REQUESTS,
    WORKSPACES,
)
from promptrecord.projections.folding_evals import (
    DATASET_EXAMPLES,
    DATASET_VERSIONS,
    DATASETS,
    EVAL_RESULTS,
    EVAL_RUNS,
)
from promptrecord.projections.folding_history import AUDIT_LOG, DEPLOYMENT_INTERVALS, PIN_INTERVALS
from promptrecord.projections.folding_state import CATALOG, DEPLOYMENTS, PINS, VERSIONS
from promptrecord.projections.folding_webhooks import WEBHOOK_ENDPOINTS
from promptrecord.projections.views import (
    ApiKeyEntry,
    AuditEntry,
    CatalogEntry,
    CurrentDeployment,
    CurrentPin,
    DatasetEntry,
    DatasetVersionEntry,
    DeploymentInterval,
    EvalResultEntry,
    EvalRunEntry,
    ExampleEntry,
    PinInterval,
    PromotionRequestEntry,
    RolloutSplit,
    VersionEntry,
    ViewSnapshot,
    ViewStore,
    WebhookEndpointEntry,
    WorkspaceEntry,
)

if TYPE_CHECKING:
    from promptrecord.projections.view_rows import Sql

# Newest first: the interval in force at a time is the last one to open at or before it.
_NEWEST = ' ORDER BY "valid_from" DESC, "position" DESC LIMIT 1'
_OLDEST = ' ORDER BY "valid_from", "position"'
# The result flags `eval_results(only=...)` filters on (each a column of EVAL_RESULTS).
RESULT_FILTERS = ("regressed", "improved", "errored")
UNFINISHED = ("requested", "running")


class ViewQueries(ViewStore):
    """`ViewStore`'s reads as SQL; backends supply connections, names and value conversion."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Sql]:
        """A cursor for reads outside any write transaction."""

    @abstractmethod
    def _qualified(self, table_name: str) -> str:
        """The quoted table name, with its schema where the backend has one."""

    @abstractmethod
    def _encode(self, type_name: str, value: Any) -> Any: ...

    @abstractmethod
    def _decode(self, type_name: str, value: Any) -> Any: ...

    @abstractmethod
    def _select_sql(self, table: Table, where: str) -> str: ...

    def _param(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return self._encode(TIME, value)
        return value

    def _decode_row(self, table: Table, row: Row) -> Row:
        return {c.name: self._decode(c.type, row[c.name]) for c in table.columns}

    def _query(
        self, table: Table, where: list[str], params: list[Any], tail: str = ""
    ) -> list[Row]:
        if any(isinstance(p, str) and "\x00" in p for p in params):
            return []  # no stored name holds a NUL (PostgreSQL text cannot): nothing matches
        statement = self._select_sql(table, " AND ".join(where)) + tail
        with self._read() as sql:
            found = sql.rows(statement, [self._param(p) for p in params])
        return [self._decode_row(table, row) for row in found]

    def select(self, statement: str, params: Sequence[Any], types: Mapping[str, str]) -> list[Row]:
        """The rows of one read statement written with `?` placeholders and table names from
        `table_name`; each column named in `types` decoded as that logical type."""
        with self._read() as sql:
            found = sql.rows(statement, [self._param(p) for p in params])
        return [
            {
                name: self._decode(types[name], value) if name in types else value
                for name, value in row.items()
            }
            for row in found
        ]

    def table_name(self, table: Table) -> str:
        """`table`'s quoted name, as a statement for `select` writes it."""
        return self._qualified(table.full_name)

    @staticmethod
    def _match(where: list[str], params: list[Any], **columns: Any) -> None:
        """Add `column = value` for each value given (None: any)."""
        for name, value in columns.items():
            if value is not None:
                where.append(f'"{name}" = ?')
                params.append(value)

    # --- catalog and versions ----------------------------------------------------------------

    def catalog(
        self, workspace: str, limit: int = 100, after: str | None = None
    ) -> list[CatalogEntry]:
        rows = self._query(
            CATALOG,
            ['"workspace" = ?', '"prompt" > ?'],
            [workspace, after or "", limit],
            ' ORDER BY "prompt" LIMIT ?',
        )
        return [CatalogEntry(**row) for row in rows]

    def catalog_entry(self, workspace: str, prompt: str) -> CatalogEntry | None:
        rows = self._query(CATALOG, ['"workspace" = ?', '"prompt" = ?'], [workspace, prompt])
        return CatalogEntry(**rows[0]) if rows else None

    def versions(
        self, workspace: str, prompt: str, limit: int = 100, after: int = 0
    ) -> list[VersionEntry]:
        rows = self._query(
            VERSIONS,
            ['"workspace" = ?', '"prompt" = ?', '"number" > ?'],
            [workspace, prompt, after, limit],
            ' ORDER BY "number" LIMIT ?',
        )
        return [VersionEntry(**row) for row in rows]

    def version(self, workspace: str, prompt: str, number: int) -> VersionEntry | None:
        rows = self._query(
            VERSIONS,
            ['"workspace" = ?', '"prompt" = ?', '"number" = ?'],
            [workspace, prompt, number],
        )
        return VersionEntry(**rows[0]) if rows else None

    # --- current deployments and pins ----------------------------------------------------------

    def deployments(
        self, workspace: str, prompt: str | None = None, environment: str | None = None
    ) -> list[CurrentDeployment]:
        where, params = ['"workspace" = ?'], [workspace]
        self._match(where, params, prompt=prompt, environment=environment)
        rows = self._query(DEPLOYMENTS, where, params, ' ORDER BY "prompt", "environment"')
        return [CurrentDeployment(**{**row, "rollout": _split(row["rollout"])}) for row in rows]

    def pins(
        self,
        workspace: str,
        tenant: str | None = None,
        prompt: str | None = None,
        environment: str | None = None,
        active_at: datetime | None = None,
    ) -> list[CurrentPin]:
        where, params = ['"workspace" = ?'], list[Any]([workspace])
        self._match(where, params, tenant=tenant, prompt=prompt, environment=environment)
        if active_at is not None:
            where += ['"pinned_at" <= ?', '"expires_at" > ?']
            params += [active_at, active_at]
        order = ' ORDER BY "tenant", "prompt", "environment"'
        return [CurrentPin(**row) for row in self._query(PINS, where, params, order)]

    # --- intervals -----------------------------------------------------------------------------

    @staticmethod
    def _window(
        where: list[str], params: list[Any], start: datetime | None, end: datetime | None
    ) -> None:
        if end is not None:
            where.append('"valid_from" < ?')
            params.append(end)
        if start is not None:
            where.append('("valid_to" IS NULL OR "valid_to" > ?)')
            params.append(start)

    def deployment_intervals(
        self,
        workspace: str,
        prompt: str,
        environment: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[DeploymentInterval]:
        where = ['"workspace" = ?', '"prompt" = ?', '"environment" = ?']
        params: list[Any] = [workspace, prompt, environment]
        self._window(where, params, start, end)
        rows = self._query(DEPLOYMENT_INTERVALS, where, params, _OLDEST)
        return [_deployment_interval(row) for row in rows]

    def deployment_at(
        self, workspace: str, prompt: str, environment: str, at: datetime
    ) -> DeploymentInterval | None:
        where = ['"workspace" = ?', '"prompt" = ?', '"environment" = ?', '"valid_from" <= ?']
        where.append('("valid_to" IS NULL OR "valid_to" > ?)')
        rows = self._query(
            DEPLOYMENT_INTERVALS, where, [workspace, prompt, environment, at, at], _NEWEST
        )
        return _deployment_interval(rows[0]) if rows else None

    def pin_intervals(
        self,
        workspace: str,
        tenant: str | None,
        prompt: str,
        environment: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[PinInterval]:
        where, params = ['"workspace" = ?'], [workspace]
        self._match(where, params, tenant=tenant, prompt=prompt, environment=environment)
        self._window(where, params, start, end)
        rows = self._query(PIN_INTERVALS, where, params, _OLDEST)
        return [PinInterval(**row) for row in rows]

    def pin_at(
        self, workspace: str, tenant: str, prompt: str, environment: str, at: datetime
    ) -> PinInterval | None:
        where = ['"workspace" = ?', '"tenant" = ?', '"prompt" = ?', '"environment" = ?']
        where += ['"valid_from" <= ?', '"valid_to" > ?']
        params = [workspace, tenant, prompt, environment, at, at]
        rows = self._query(PIN_INTERVALS, where, params, _NEWEST)
        return PinInterval(**rows[0]) if rows else None

    # --- audit log -----------------------------------------------------------------------------

    def audit_log(
        self,
        workspace: str,
        after: int = 0,
        limit: int = 100,
        prompt: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[AuditEntry]:
        where, params = ['"workspace" = ?', '"position" > ?'], [workspace, after]
        self._match(where, params, prompt=prompt)
        if types:
            where.append(f'"type" IN ({", ".join("?" for _ in types)})')
            params += list(types)
        rows = self._query(AUDIT_LOG, where, [*params, limit], ' ORDER BY "position" LIMIT ?')
        return [AuditEntry(**row) for row in rows]

    def audit_event(self, event_id: str) -> AuditEntry | None:
        rows = self._query(AUDIT_LOG, ['"event_id" = ?'], [event_id])
        return AuditEntry(**rows[0]) if rows else None

    # --- the workspace's own reads -------------------------------------------------------------

    def workspace(self, slug: str) -> WorkspaceEntry | None:
        rows = self._query(WORKSPACES, ['"slug" = ?'], [slug])
        return WorkspaceEntry(**rows[0]) if rows else None

    def api_keys(self, workspace: str, limit: int = 100, after: int = 0) -> list[ApiKeyEntry]:
        rows = self._query(
            API_KEYS,
            ['"workspace" = ?', '"number" > ?'],
            [workspace, after, limit],
            ' ORDER BY "number" LIMIT ?',
        )
        return [ApiKeyEntry(**row) for row in rows]

    def promotion_requests(
        self, workspace: str, prompt: str, environment: str, limit: int = 100, after: int = 0
    ) -> list[PromotionRequestEntry]:
        rows = self._query(
            PROMOTION_REQUESTS,
            ['"workspace" = ?', '"prompt" = ?', '"environment" = ?', '"number" > ?'],
            [workspace, prompt, environment, after, limit],
            ' ORDER BY "number" LIMIT ?',
        )
        return [PromotionRequestEntry(**row) for row in rows]

    # --- datasets and eval runs ----------------------------------------------------------------

    def datasets(
        self, workspace: str, limit: int = 100, after: str | None = None
    ) -> list[DatasetEntry]:
        rows = self._query(
            DATASETS,
            ['"workspace" = ?', '"name" > ?'],
            [workspace, after or "", limit],
            ' ORDER BY "name" LIMIT ?',
        )
        return [DatasetEntry(**row) for row in rows]

    def dataset(self, workspace: str, name: str) -> DatasetEntry | None:
        rows = self._query(DATASETS, ['"workspace" = ?', '"name" = ?'], [workspace, name])
        return DatasetEntry(**rows[0]) if rows else None

    def dataset_versions(self, workspace: str, name: str) -> list[DatasetVersionEntry]:
        rows = self._query(
            DATASET_VERSIONS,
            ['"workspace" = ?', '"name" = ?'],
            [workspace, name],
            ' ORDER BY "version"',
        )
        return [DatasetVersionEntry(**row) for row in rows]

    def dataset_examples(
        self, workspace: str, name: str, version: int, after: int = 0, limit: int = 100
    ) -> list[ExampleEntry]:
        # Version N is the first `count` examples: no count (no such version), no rows.
        count = (
            f'(SELECT "count" FROM {self._qualified(DATASET_VERSIONS.full_name)} '
            'WHERE "workspace" = ? AND "name" = ? AND "version" = ?)'
        )
        rows = self._query(
            DATASET_EXAMPLES,
            ['"workspace" = ?', '"name" = ?', '"ordinal" > ?', f'"ordinal" <= {count}'],
            [workspace, name, after, workspace, name, version, limit],
            ' ORDER BY "ordinal" LIMIT ?',
        )
        return [ExampleEntry(**row) for row in rows]

    def eval_runs(
        self,
        workspace: str,
        prompt: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[EvalRunEntry]:
        where, params = ['"workspace" = ?'], list[Any]([workspace])
        self._match(where, params, prompt=prompt, status=status)
        if before is not None:
            where.append('"position" < ?')
            params.append(before)
        rows = self._query(EVAL_RUNS, where, [*params, limit], ' ORDER BY "position" DESC LIMIT ?')
        return [EvalRunEntry(**row) for row in rows]

    def eval_run(self, workspace: str, run_id: str) -> EvalRunEntry | None:
        rows = self._query(EVAL_RUNS, ['"workspace" = ?', '"run_id" = ?'], [workspace, run_id])
        return EvalRunEntry(**rows[0]) if rows else None

    def eval_results(
        self,
        workspace: str,
        run_id: str,
        after: int = 0,
        limit: int = 100,
        only: str | None = None,
    ) -> list[EvalResultEntry]:
        where = ['"workspace" = ?', '"run_id" = ?', '"ordinal" > ?']
        if only is not None:
            if only not in RESULT_FILTERS:
                msg = f"only must be one of {', '.join(RESULT_FILTERS)}, not {only!r}"
                raise ValueError(msg)
            where.append(f'"{only}" = ?')
        flag = [True] if only is not None else []
        rows = self._query(
            EVAL_RESULTS,
            where,
            [workspace, run_id, after, *flag, limit],
            ' ORDER BY "ordinal" LIMIT ?',
        )
        return [EvalResultEntry(**row) for row in rows]

    def unfinished_eval_runs(self, limit: int = 1000) -> list[EvalRunEntry]:
        rows = self._query(
            EVAL_RUNS,
            [f'"status" IN ({", ".join("?" for _ in UNFINISHED)})'],
            [*UNFINISHED, limit],
            ' ORDER BY "position" LIMIT ?',
        )
        return [EvalRunEntry(**row) for row in rows]

    def webhook_endpoints(
        self, workspace: str, limit: int = 100, after: str | None = None
    ) -> list[WebhookEndpointEntry]:
        rows = self._query(
            WEBHOOK_ENDPOINTS,
            ['"workspace" = ?', '"removed" = ?', '"endpoint_id" > ?'],
            [workspace, False, after or "", limit],
            ' ORDER BY "endpoint_id" LIMIT ?',
        )
        return [WebhookEndpointEntry(**row) for row in rows]

    @property
    @abstractmethod
    def _tracking(self) -> str:
        """The quoted name of the tracking table."""

    @abstractmethod
    def _consistent_read(self) -> AbstractContextManager[Sql]:
        """A read-only transaction that sees one snapshot of the database throughout."""

    @contextmanager
    def snapshot(self) -> Iterator[ViewSnapshot]:
        with self._consistent_read() as sql:
            yield _Snapshot(self, sql)


class _Snapshot(ViewSnapshot):
    def __init__(self, store: ViewQueries, sql: Sql) -> None:
        self.store, self.sql = store, sql

    def position(self) -> int:
        rows = self.sql.rows(
            f"SELECT notification_id FROM {self.store._tracking} WHERE application_name = ?",
            [self.store.application_name],
        )
        return int(rows[0]["notification_id"]) if rows else 0

    def rows(self, table: Table) -> list[Row]:
        found = self.sql.rows(self.store._select_sql(table, "1 = 1"))
        return [self.store._decode_row(table, row) for row in found]


def _split(rollout: dict[str, Any] | None) -> RolloutSplit | None:
    return RolloutSplit(**rollout) if rollout else None


def _deployment_interval(row: Row) -> DeploymentInterval:
    split = None
    if row["rollout_id"] is not None:
        split = RolloutSplit(
            row["rollout_id"], row["baseline"], row["candidate"], row["share"], row["key_by"]
        )
    return DeploymentInterval(
        workspace=row["workspace"],
        prompt=row["prompt"],
        environment=row["environment"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        version=row["serving_version"],
        rollout=split,
        cause_event_id=row["cause_event_id"],
        cause_type=row["cause_type"],
        position=row["position"],
    )
