"""What folding events into views rests on: tables, subjects, logged events, the View base."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from hashlib import sha1
from operator import itemgetter
from typing import Any, ClassVar, Protocol

TABLE_PREFIX = "promptrecord_view_"

# Logical column types; each backend maps them onto its own SQL types.
TEXT, INT, REAL, BOOL, JSON, TIME = "text", "int", "real", "bool", "json", "time"

# The aggregates whose events the views understand. Events of others (added later) are
# tracked and otherwise left alone, so a new aggregate never stops the projector.
KNOWN_AGGREGATES = frozenset(
    {
        "Workspace",
        "Prompt",
        "Deployment",
        "TenantPin",
        "Dataset",
        "EvalRun",
        "GateRecord",
        "WebhookEndpoint",
        "Monitor",
    }
)
# The events that create an aggregate under another name than `Created`.
_CREATED_AS = frozenset({"EvalRun.Requested", "WebhookEndpoint.Registered"})

Row = dict[str, Any]
Key = tuple[Any, ...]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True


@dataclass(frozen=True)
class Table:
    """One view table. `latest_by` names the prefix whose newest row (by position) folding reads."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    cached: bool = False  # folding re-reads its rows: keep them in memory for a whole batch
    latest_by: tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        return TABLE_PREFIX + self.name

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def key_of(self, row: Row) -> Key:
        return self.key_getter(row)

    @cached_property
    def key_getter(self) -> Callable[[Row], Key]:
        """`key_of` as one C call: the key tuple of a row (rows are folded by the thousand)."""
        return tuple_getter(self.key)

    @cached_property
    def latest_getter(self) -> Callable[[Row], Key]:
        """A row's `latest_by` prefix."""
        return tuple_getter(self.latest_by)


def tuple_getter(names: tuple[str, ...]) -> Callable[[Row], Key]:
    """A function giving the tuple of a row's values under `names` (a 1-tuple for one)."""
    if len(names) == 1:
        only = names[0]
        return lambda row: (row[only],)
    getter: Callable[[Row], Key] = itemgetter(*names)
    return getter


def cols(spec: str, type_: str, nullable: bool = False) -> tuple[Column, ...]:
    return tuple(Column(name, type_, nullable) for name in spec.split())


@dataclass(frozen=True)
class Subject:
    """What an aggregate is about, from its Created event: the business key of its events."""

    # workspace, prompt, deployment, pin, dataset, eval_run, gate, webhook or monitor
    kind: str
    workspace: str
    prompt: str | None = None
    environment: str | None = None
    tenant: str | None = None
    dataset: str | None = None
    run_id: str | None = None
    version: int | None = None  # the candidate version an eval run or gate record is about


SUBJECTS = Table(
    "subjects",
    (
        Column("aggregate_id", TEXT, False),
        *cols("kind workspace", TEXT),
        *cols("prompt environment tenant dataset run_id", TEXT, True),
        Column("version", INT),
    ),
    key=("aggregate_id",),
)


def creates_subject(type_name: str) -> bool:
    """Whether events of this type (`Aggregate.Event`) create their aggregate."""
    return type_name.endswith(".Created") or type_name in _CREATED_AS


def subject_from_created(type_name: str, event: Any) -> Subject | None:
    """The subject a Created event names; None for every other event."""
    match type_name:
        case "Workspace.Created":
            return Subject("workspace", event.slug)
        case "Prompt.Created":
            return Subject("prompt", event.workspace, prompt=event.name)
        case "Deployment.Created":
            return Subject("deployment", event.workspace, event.prompt, event.environment)
        case "TenantPin.Created":
            return Subject("pin", event.workspace, event.prompt, event.environment, event.tenant)
        case "Dataset.Created":
            return Subject("dataset", event.workspace, dataset=event.name)
        case "EvalRun.Requested":
            spec = event.spec
            return Subject(
                "eval_run",
                event.workspace,
                prompt=spec["prompt"],
                dataset=spec["dataset"],
                run_id=event.run_id,
                version=spec["candidate"],
            )
        case "GateRecord.Created":
            return Subject(
                "gate",
                event.workspace,
                prompt=event.prompt,
                dataset=event.dataset,
                version=event.candidate,
            )
        case "WebhookEndpoint.Registered":
            return Subject("webhook", event.workspace)
        case "Monitor.Created":
            return Subject("monitor", event.workspace, prompt=event.prompt)
    return None


class LoggedEvent:
    """An event with what every view needs beside it: its position, type, id and subject."""

    __slots__ = ("_event_id", "aggregate_id", "event", "position", "subject", "type")

    def __init__(
        self,
        position: int,
        event: Any,
        type: str,  # the event's class, as `Aggregate.Event`
        subject: Subject,
        aggregate_id: str | None = None,
    ) -> None:
        self.position = position
        self.event = event
        self.type = type
        self.subject = subject
        self.aggregate_id: str = str(event.originator_id) if aggregate_id is None else aggregate_id
        self._event_id: str | None = None

    def __repr__(self) -> str:
        return f"LoggedEvent({self.position}, {self.type}, {self.aggregate_id})"

    @property
    def event_id(self) -> str:  # a uuid5: computed once per event, though most views name it
        found = self._event_id
        if found is None:
            found = self._event_id = fast_event_id(self.event)
        return found

    @property
    def timestamp(self) -> datetime:
        value: datetime = self.event.timestamp
        return value


def fast_event_id(event: Any) -> str:
    """`promptrecord.domain.base.event_id` (uuid5 of the aggregate id and version) without
    building UUID objects: the same string, at about a third of the cost."""
    name = str(event.originator_version).encode()
    digest = bytearray(sha1(event.originator_id.bytes + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class FoldContext(Protocol):
    """The rows folding may read and write inside the transaction of a batch."""

    def get(self, table: Table, key: Key) -> Row | None: ...

    def put(self, table: Table, row: Row) -> None: ...

    def delete(self, table: Table, key: Key) -> None: ...

    def latest(self, table: Table, prefix: Key) -> Row | None: ...


class ViewInconsistent(LookupError):
    """A view lacks a row an earlier event should have made: it missed or misapplied one."""


def require(row: Row | None, what: str, *args: object) -> Row:
    """The row, or ViewInconsistent naming it: `what % args` (formatted only then)."""
    if row is None:
        named = what % args if args else what
        raise ViewInconsistent(f"no {named} row: the view missed an earlier event of it")
    return row


class View:
    """A read model: its tables, and how one event changes their rows."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        raise NotImplementedError


def rollout_of(e: Any) -> Row:
    """The split a RolloutStarted event starts, as views store it."""
    return {
        "rollout_id": e.rollout_id,
        "baseline": e.baseline,
        "candidate": e.candidate,
        "share": e.share,
        "key_by": e.key_by,
    }


def without_nul(value: Any) -> Any:
    """`value` with every NUL character in its strings replaced by U+FFFD.

    Examples and model outputs are user data, and PostgreSQL stores no NUL in text or jsonb:
    one there would stop the projector at that event for good.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nul(item) for item in value]
    return value
