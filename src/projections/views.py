"""The views' read and maintenance interface, their row types, and the errors they raise."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import TrackingRecorder

from promptrecord.projections.folding import Table, View
from promptrecord.projections.folding_admin import (
    ApiKeysView,
    PromotionRequestsView,
    WorkspacesView,
)
from promptrecord.projections.folding_evals import DatasetsView, EvalRunsView
from promptrecord.projections.folding_history import (
    AuditLogView,
    DeploymentIntervalsView,
    PinIntervalsView,
)
from promptrecord.projections.folding_state import (
    CatalogView,
    DeploymentsView,
    PinsView,
    VersionsView,
)
from promptrecord.projections.folding_webhooks import WebhookEndpointsView

if TYPE_CHECKING:
    from promptrecord.domain.application import PromptRecord

__all__ = [
    "VIEW_NAMES",
    "ApiKeyEntry",
    "AuditEntry",
    "CatalogEntry",
    "CurrentDeployment",
    "CurrentPin",
    "DatasetEntry",
    "DatasetVersionEntry",
    "DeploymentInterval",
    "EvalResultEntry",
    "EvalRunEntry",
    "ExampleEntry",
    "PinInterval",
    "PositionMoved",
    "PromotionRequestEntry",
    "RebuildReport",
    "RolloutSplit",
    "VersionEntry",
    "ViewError",
    "ViewSnapshot",
    "ViewStore",
    "ViewsOutdated",
    "WebhookEndpointEntry",
    "WorkspaceEntry",
    "default_views",
    "open_view_store",
]


def default_views() -> tuple[View, ...]:
    """Every view, in the order they are folded and listed."""
    return (
        CatalogView(),
        VersionsView(),
        DeploymentsView(),
        PinsView(),
        DeploymentIntervalsView(),
        PinIntervalsView(),
        AuditLogView(),
        WorkspacesView(),
        ApiKeysView(),
        PromotionRequestsView(),
        DatasetsView(),
        EvalRunsView(),
        WebhookEndpointsView(),
    )


VIEW_NAMES: tuple[str, ...] = tuple(view.name for view in default_views())

# (position, domain event) pairs read from the log, oldest first.
LogPage = Sequence[tuple[int, Any]]
ReadEvents = Callable[[int, int], Iterable[tuple[int, Any]]]


@dataclass(frozen=True)
class RolloutSplit:
    rollout_id: str
    baseline: int
    candidate: int
    share: float
    key_by: str  # tenant | user | request


@dataclass(frozen=True)
class CatalogEntry:
    workspace: str
    prompt: str
    title: str
    description: str
    archived: bool
    head_version: int | None
    created_at: datetime
    updated_at: datetime
    revision: int


@dataclass(frozen=True)
class VersionEntry:
    workspace: str
    prompt: str
    number: int
    content: dict[str, Any]
    content_hash: str
    variables: list[str]
    warnings: list[str]
    author: dict[str, Any]
    message: str
    parent: int | None
    restored_from: int | None
    git_sha: str | None
    git_path: str | None
    committed_at: datetime
    event_id: str
    position: int


@dataclass(frozen=True)
class CurrentDeployment:
    workspace: str
    prompt: str
    environment: str
    serving_version: int | None  # None while only promotion requests exist
    rollout: RolloutSplit | None
    cause_event_id: str | None
    updated_at: datetime
    stack: list[int]  # versions served in turn: rollback walks back
    ever_served: list[int]
    rollout_started_at: datetime | None
    serving_event_id: str | None
    revision: int


@dataclass(frozen=True)
class CurrentPin:
    workspace: str
    tenant: str
    prompt: str
    environment: str
    version: int
    expires_at: datetime
    pinned_at: datetime
    event_id: str

    def active_at(self, at: datetime) -> bool:
        return self.pinned_at <= at < self.expires_at


@dataclass(frozen=True)
class DeploymentInterval:
    """[valid_from, valid_to) during which a deployment served `version` (and `rollout`)."""

    workspace: str
    prompt: str
    environment: str
    valid_from: datetime
    valid_to: datetime | None  # None: still serving
    version: int  # the promoted version; the baseline while a rollout runs
    rollout: RolloutSplit | None
    cause_event_id: str
    cause_type: str
    position: int


@dataclass(frozen=True)
class PinInterval:
    """[valid_from, valid_to) during which `tenant` was held on `version`."""

    workspace: str
    tenant: str
    prompt: str
    environment: str
    version: int
    valid_from: datetime
    valid_to: datetime  # the earlier of expiry, unpin and re-pin
    expires_at: datetime
    cause_event_id: str
    end_event_id: str | None  # the unpin or re-pin that cut it short
    position: int


@dataclass(frozen=True)
class AuditEntry:
    position: int
    event_id: str
    workspace: str
    type: str
    prompt: str | None
    environment: str | None
    tenant: str | None
    version: int | None
    actor_key_id: str | None
    actor_key_name: str | None
    on_behalf_of: str | None
    reason: str | None
    timestamp: datetime
    dataset: str | None = None  # of dataset and eval run events
    run_id: str | None = None  # of eval run events


@dataclass(frozen=True)
class WorkspaceEntry:
    slug: str
    name: str
    environments: list[str]
    policies: dict[str, dict[str, Any]]  # only the environments whose policy was set
    revision: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ApiKeyEntry:
    workspace: str
    key_id: str
    number: int
    name: str
    role: str
    secret_hash: str
    environments: list[str] | None
    prompt_patterns: list[str] | None
    revoked: bool
    issued_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class PromotionRequestEntry:
    workspace: str
    prompt: str
    environment: str
    request_id: str
    number: int
    version: int
    mode: str
    rollout: dict[str, Any] | None
    required_approvals: int
    reason: str
    requester: dict[str, Any]
    approvals: list[dict[str, Any]]
    status: str
    requested_at: datetime
    gate: dict[str, Any] | None = None  # the eval verdict a `require_gate` policy found


@dataclass(frozen=True)
class DatasetEntry:
    workspace: str
    name: str
    description: str
    latest_version: int  # 0 until the first examples are appended
    example_count: int
    created_by: dict[str, Any]  # the actor
    created_at: datetime
    updated_at: datetime
    revision: int


@dataclass(frozen=True)
class DatasetVersionEntry:
    workspace: str
    name: str
    version: int
    count: int  # examples in this version: every earlier one too
    added: int
    digest: str
    message: str
    actor: dict[str, Any]
    created_at: datetime
    event_id: str


@dataclass(frozen=True)
class ExampleEntry:
    workspace: str
    name: str
    ordinal: int  # 1.. in order of append
    example_id: str
    inputs: dict[str, Any]
    reference: str | None
    tags: list[str]
    version: int  # the dataset version that added it


@dataclass(frozen=True)
class EvalRunEntry:
    workspace: str
    run_id: str
    prompt: str
    candidate: int
    baseline: int
    against: str | None
    dataset: str
    dataset_version: int
    example_count: int
    recorded: int
    status: str  # requested | running | completed | failed
    attempts: int
    passed: bool | None  # None until completed
    verdict: dict[str, Any] | None  # None until completed
    error: dict[str, Any] | None  # {code, detail} once failed
    spec: dict[str, Any]
    requested_by: dict[str, Any]
    requested_at: datetime
    started_at: datetime | None  # of the latest attempt
    updated_at: datetime
    completed_at: datetime | None  # when it finished: completed or failed
    position: int  # of its Requested event: the cursor of `eval_runs`
    candidate_correct: int  # tallies of the results recorded so far
    baseline_correct: int
    errors: int  # results where either arm has an error
    usage: dict[str, Any]  # {calls, input_tokens, output_tokens, cost_usd} so far


@dataclass(frozen=True)
class EvalResultEntry:
    workspace: str
    run_id: str
    ordinal: int  # 1.. in the order results were recorded
    example_id: str
    candidate: dict[str, Any]  # the arm: output, correct, score, latency_ms, tokens, ...
    baseline: dict[str, Any]
    regressed: bool  # the baseline was correct and the candidate not
    improved: bool  # the candidate was correct and the baseline not
    errored: bool  # either arm has an error


@dataclass(frozen=True)
class WebhookEndpointEntry:
    aggregate_id: str
    workspace: str
    endpoint_id: str
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool
    removed: bool
    disabled_reason: str | None
    created_by: dict[str, Any]  # the actor
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None
    revision: int


@dataclass(frozen=True)
class RebuildReport:
    views: tuple[str, ...]
    events: int
    position: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class ViewError(Exception):
    """A view could not apply an event. The event was not applied, nor any after it."""

    def __init__(
        self, view: str, position: int, type_name: str, aggregate_id: str, cause: BaseException
    ) -> None:
        self.view = view
        self.position = position
        self.type_name = type_name
        self.aggregate_id = aggregate_id
        self.cause = cause
        super().__init__(
            f"view {view!r} failed on event {position} ({type_name}, aggregate {aggregate_id}): "
            f"{type(cause).__name__}: {cause}. Nothing from this event on was applied. "
            f"Fix the cause, then restart the projector (it resumes at event {position}) "
            f"or run `promptrecord rebuild {view}`."
        )


class ViewsOutdated(Exception):
    """Some views' tables are older than this code's, or missing events: rebuild them."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        one = len(self.names) == 1 and self.names[0] in VIEW_NAMES
        command = f"promptrecord rebuild {self.names[0]}" if one else "promptrecord rebuild"
        super().__init__(
            f"the views {', '.join(self.names)} were built by another version of promptrecord "
            f"or never built from the log; run `{command}` before starting the projector"
        )


class PositionMoved(Exception):
    """The tracked position went back (the views were rebuilt under us): re-read from it."""

    def __init__(self, position: int) -> None:
        super().__init__(f"the views' tracked position moved back to {position}")
        self.position = position


class ViewStore(TrackingRecorder, ABC):
    """The views in the events' database, their tracking record, and typed reads of them.

    Every write goes through `apply` (or `rebuild`), which changes the views and records
    the position in one transaction. Time arguments must carry a timezone.
    """

    application_name: str
    views: tuple[View, ...]
    outdated: tuple[str, ...]  # views to rebuild before the projector may run

    # --- maintenance ---------------------------------------------------------------------

    @abstractmethod
    def position(self) -> int:
        """The log position the views have applied (0 before any event)."""

    @abstractmethod
    def apply(self, after: int, events: LogPage) -> int:
        """Apply `events`, every log event after position `after`, exactly once.

        Returns the position now applied. Events at or below the tracked position are
        skipped (someone applied them already). Raises `PositionMoved` when the tracked
        position is below `after`, `ViewError` naming the first event a view fails on
        (the events before it are applied).
        """

    @abstractmethod
    def rebuild(
        self,
        read_events: ReadEvents,
        names: Sequence[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> RebuildReport:
        """Drop, recreate and refold the named views (default all) in one transaction."""

    @abstractmethod
    def analyse(self, names: Sequence[str] | None = None) -> None:
        """Gather the database's planner statistics of the named views (default all)."""

    @abstractmethod
    def dump(self, name: str) -> list[dict[str, Any]]:
        """Every row of one view (or of `subjects`) in key order: for verification and tests."""

    @abstractmethod
    def is_transient(self, error: BaseException) -> bool:
        """Whether retrying later may succeed (connection lost, database busy)."""

    # --- reads ---------------------------------------------------------------------------

    @abstractmethod
    def catalog(
        self, workspace: str, limit: int = 100, after: str | None = None
    ) -> list[CatalogEntry]:
        """Prompts of a workspace by name, after the name `after`."""

    @abstractmethod
    def catalog_entry(self, workspace: str, prompt: str) -> CatalogEntry | None: ...

    @abstractmethod
    def versions(
        self, workspace: str, prompt: str, limit: int = 100, after: int = 0
    ) -> list[VersionEntry]:
        """Versions of a prompt by number, after number `after`."""

    @abstractmethod
    def version(self, workspace: str, prompt: str, number: int) -> VersionEntry | None: ...

    @abstractmethod
    def deployments(
        self, workspace: str, prompt: str | None = None, environment: str | None = None
    ) -> list[CurrentDeployment]: ...

    @abstractmethod
    def pins(
        self,
        workspace: str,
        tenant: str | None = None,
        prompt: str | None = None,
        environment: str | None = None,
        active_at: datetime | None = None,
    ) -> list[CurrentPin]: ...

    @abstractmethod
    def deployment_intervals(
        self,
        workspace: str,
        prompt: str,
        environment: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[DeploymentInterval]:
        """Intervals overlapping [start, end), oldest first."""

    @abstractmethod
    def deployment_at(
        self, workspace: str, prompt: str, environment: str, at: datetime
    ) -> DeploymentInterval | None:
        """The interval in force at `at`, if anything was deployed."""

    @abstractmethod
    def pin_intervals(
        self,
        workspace: str,
        tenant: str | None,
        prompt: str,
        environment: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[PinInterval]:
        """Pin intervals overlapping [start, end) of one tenant (None: every tenant)."""

    @abstractmethod
    def pin_at(
        self, workspace: str, tenant: str, prompt: str, environment: str, at: datetime
    ) -> PinInterval | None: ...

    @abstractmethod
    def audit_log(
        self,
        workspace: str,
        after: int = 0,
        limit: int = 100,
        prompt: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[AuditEntry]:
        """Audit rows of a workspace after log position `after`, oldest first."""

    @abstractmethod
    def audit_event(self, event_id: str) -> AuditEntry | None: ...

    # --- the workspace's own reads -------------------------------------------------------

    @abstractmethod
    def workspace(self, slug: str) -> WorkspaceEntry | None: ...

    @abstractmethod
    def api_keys(self, workspace: str, limit: int = 100, after: int = 0) -> list[ApiKeyEntry]:
        """Keys in order of issue, after issue number `after`."""

    @abstractmethod
    def promotion_requests(
        self, workspace: str, prompt: str, environment: str, limit: int = 100, after: int = 0
    ) -> list[PromotionRequestEntry]:
        """Requests in the order they were made, after request number `after`."""

    # --- datasets and eval runs ----------------------------------------------------------

    @abstractmethod
    def datasets(
        self, workspace: str, limit: int = 100, after: str | None = None
    ) -> list[DatasetEntry]:
        """Datasets of a workspace by name, after the name `after`."""

    @abstractmethod
    def dataset(self, workspace: str, name: str) -> DatasetEntry | None: ...

    @abstractmethod
    def dataset_versions(self, workspace: str, name: str) -> list[DatasetVersionEntry]:
        """Every version of a dataset, oldest first."""

    @abstractmethod
    def dataset_examples(
        self, workspace: str, name: str, version: int, after: int = 0, limit: int = 100
    ) -> list[ExampleEntry]:
        """The examples of one dataset version by ordinal, after ordinal `after` (none
        when the version does not exist)."""

    @abstractmethod
    def eval_runs(
        self,
        workspace: str,
        prompt: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[EvalRunEntry]:
        """Runs newest first, requested before log position `before` (None: from the newest)."""

    @abstractmethod
    def eval_run(self, workspace: str, run_id: str) -> EvalRunEntry | None: ...

    @abstractmethod
    def eval_results(
        self,
        workspace: str,
        run_id: str,
        after: int = 0,
        limit: int = 100,
        only: str | None = None,
    ) -> list[EvalResultEntry]:
        """A run's results in recording order after ordinal `after`; `only` keeps the
        `regressed`, `improved` or `errored` ones (ValueError for anything else)."""

    @abstractmethod
    def unfinished_eval_runs(self, limit: int = 1000) -> list[EvalRunEntry]:
        """Runs of every workspace still requested or running, oldest request first."""

    # --- webhook endpoints ----------------------------------------------------------------

    @abstractmethod
    def webhook_endpoints(
        self, workspace: str, limit: int = 100, after: str | None = None
    ) -> list[WebhookEndpointEntry]:
        """Endpoints of a workspace not removed, by endpoint id, after the id `after`."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[ViewSnapshot]:
        """Every view as of one position, read in one consistent transaction."""


class ViewSnapshot(ABC):
    """Whole tables of the views as one transaction sees them, and the position they hold."""

    @abstractmethod
    def position(self) -> int: ...

    @abstractmethod
    def rows(self, table: Table) -> list[dict[str, Any]]:
        """Every row of `table`, decoded."""


def open_view_store(app: PromptRecord, views: Sequence[View] | None = None) -> ViewStore:
    """The view store in `app`'s database (sharing its connections), tables created."""
    from eventsourcing.postgres import PostgresDatastore
    from eventsourcing.sqlite import SQLiteDatastore

    datastore = getattr(app.recorder, "datastore", None)
    store: ViewStore
    if isinstance(datastore, PostgresDatastore):
        from promptrecord.projections.view_postgres import PostgresViewStore

        store = PostgresViewStore(datastore, views=views, application_name=app.name)
    elif isinstance(datastore, SQLiteDatastore):
        from promptrecord.projections.view_sqlite import SQLiteViewStore

        store = SQLiteViewStore(datastore, views=views, application_name=app.name)
    else:
        msg = f"views need SQLite or PostgreSQL; this application records to {datastore!r}"
        raise ValueError(msg)
    store.create_table()
    return store
