"""What every command of the application rests on: loading aggregates, committing them,
revision checks, the clock, and reading the log."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from promptrecord.domain.base import ChainedAggregate
from promptrecord.domain.deployment import Deployment
from promptrecord.domain.errors import Conflict, NotFound
from promptrecord.domain.evals import Dataset, EvalRun, GateRecord
from promptrecord.domain.monitors import Monitor
from promptrecord.domain.pin import TenantPin
from promptrecord.domain.prompt import Prompt
from promptrecord.domain.webhooks import WebhookEndpoint
from promptrecord.domain.workspace import Workspace

A = TypeVar("A", bound=ChainedAggregate)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CommandResult:
    """What a command did: the log position it wrote (None if nothing), the aggregate revision."""

    position: int | None
    revision: int
    value: Any = None


class CommandBase(Application[UUID]):
    """The event store and the plumbing commands share. Reads go through aggregates."""

    name = "PromptRecord"

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        snapshot_interval: int = 50,
    ) -> None:
        # Per instance, so a deployment can tune the interval from its settings.
        self.snapshotting_intervals = {  # type: ignore[misc]
            Workspace: snapshot_interval,
            Prompt: snapshot_interval,
            Deployment: snapshot_interval,
            TenantPin: snapshot_interval,
            Dataset: snapshot_interval,
            EvalRun: snapshot_interval,
            GateRecord: snapshot_interval,
            WebhookEndpoint: snapshot_interval,
            Monitor: snapshot_interval,
        }
        super().__init__(env)
        self.clock = clock
        # The highest log position a command of this instance wrote: what this process's
        # reads must wait for to see its own writes.
        self.written = 0
        self._written_lock = threading.Lock()

    # --- plumbing ----------------------------------------------------------------------------

    def _get(self, cls: type[A], aggregate_id: UUID, missing: NotFound, copy: bool = True) -> A:
        """Load an aggregate. With `copy=False` it is the cache's own object: commands use
        that to read other aggregates cheaply, and must neither change nor keep it."""
        try:
            aggregate: Any = self.repository.get(aggregate_id, deepcopy_from_cache=copy)
        except AggregateNotFoundError:
            raise missing from None
        assert isinstance(aggregate, cls)
        return aggregate

    def _find(self, aggregate_id: UUID) -> Any | None:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _commit(self, *aggregates: ChainedAggregate, value: Any = None) -> CommandResult:
        try:
            recordings = self.save(*aggregates)
        except IntegrityError:
            raise Conflict(
                "someone else changed this at the same moment; reload and retry",
                code="concurrent_change",
            ) from None
        position = recordings[-1].notification.id if recordings else None
        if position is not None:
            with self._written_lock:
                self.written = max(self.written, position)
        return CommandResult(position, aggregates[-1].version if aggregates else 0, value)

    @staticmethod
    def _expect(aggregate: ChainedAggregate, expected_revision: int | None, what: str) -> None:
        if expected_revision is not None and aggregate.version != expected_revision:
            raise Conflict(
                f"{what} is at revision {aggregate.version}, not {expected_revision}: it changed "
                "since you read it; reload and retry",
                code="stale_revision",
                current_revision=aggregate.version,
            )

    def workspace(self, slug: str, copy: bool = True) -> Workspace:
        return self._get(
            Workspace,
            Workspace.create_id(slug),
            NotFound(f"workspace {slug!r} does not exist", code="workspace_not_found"),
            copy,
        )

    def prompt(self, workspace: str, name: str, copy: bool = True) -> Prompt:
        return self._get(
            Prompt,
            Prompt.create_id(workspace, name),
            NotFound(
                f"prompt {name!r} does not exist in this workspace",
                field="name",
                code="prompt_not_found",
            ),
            copy,
        )

    def deployment(self, workspace: str, name: str, environment: str) -> Deployment | None:
        found = self._find(Deployment.create_id(workspace, name, environment))
        assert found is None or isinstance(found, Deployment)
        return found

    # --- the log -----------------------------------------------------------------------------

    def read_events(self, after: int, limit: int = 500) -> Iterator[tuple[int, Any]]:
        """Domain events after log position `after`, with their positions, oldest first."""
        notifications = self.recorder.select_notifications(
            start=after, limit=limit, inclusive_of_start=False
        )
        for notification in notifications:
            yield notification.id, self.mapper.to_domain_event(notification)

    @contextmanager
    def frozen_clock(self, at: datetime) -> Iterator[None]:
        """Run commands as if at `at` (for demos, imports of history and tests)."""
        saved = self.clock
        self.clock = lambda: at
        try:
            yield
        finally:
            self.clock = saved
